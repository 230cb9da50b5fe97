"""GET /api/v1/admin/audit: the audit trail for operators, behind a client's own token with
the ``admin`` scope and the API's audience; filters, cursor pages, problem answers."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import hypothesis
import pytest
import schemathesis
from schemathesis.python.asgi import shutdown_lifespans
from sqlalchemy import func, select
from starlette.applications import Starlette
from starlette.testclient import TestClient

from identity import audit, webhooks
from identity.accounts import operators
from identity.api.routes import OPERATIONS
from identity.app import create_app
from identity.audit import RequestContext
from identity.config import Settings
from identity.db import Database
from identity.models import AuditEvent, utcnow
from identity.openapi.document import openapi_document
from identity.protocol import clients
from identity.webhook_delivery import WebhookSender
from tests.conftest import ISSUER
from tests.openapi.test_document import CHECKS, EXAMPLES
from tests.web_helpers import PASSWORD

MakeClient = Callable[..., tuple[str, str | None]]
PROBLEM = "application/problem+json"
API_AUDIENCE = f"{ISSUER}/api/v1"
URL = "/api/v1/admin/audit"
WEBHOOKS = "/api/v1/admin/webhooks"
CLI = RequestContext.command_line()


@pytest.fixture
def http(app_for: Callable[[Settings], TestClient], settings_for: Callable[..., Settings]) -> Any:
    return app_for(settings_for(password_grant=True))


@pytest.fixture
def ops(make_client: MakeClient) -> tuple[str, str]:
    """The operator's client, created as the README says: client_credentials, scope admin,
    the API as its audience."""
    client_id, secret = make_client(
        name="ops", grant_types=["client_credentials"], scope="admin", audience=[API_AUDIENCE]
    )
    assert secret is not None
    return client_id, secret


def _client_token(
    http: TestClient, client_id: str, scope: str = "admin", audience: str = API_AUDIENCE
) -> dict[str, str]:
    """A bearer header with the token the client_credentials grant signs for ``client_id``
    (``sub`` is the client), signed by the server's own issuer."""
    issued = http.app.state.oauth.issuer.issue(  # type: ignore[attr-defined]
        client_id=client_id, subject=client_id, audience=[audience], scope=scope
    )
    return {"Authorization": f"Bearer {issued.value}"}


@pytest.fixture
def bearer(http: TestClient, ops: tuple[str, str]) -> dict[str, str]:
    return _client_token(http, ops[0])


def _problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body = dict(response.json())
    assert body["status"] == status and body["title"] and body["type"]
    return body


def _fields(body: dict[str, Any]) -> set[str]:
    return {error["field"] for error in body.get("errors", [])}


def _record(
    database: Database,
    type: str,
    *,
    subject: str | None = None,
    client_id: str | None = None,
    age: timedelta | None = None,
) -> int:
    with database.transaction() as session:
        event_id = audit.record(
            session, type, subject=subject, client_id=client_id, detail={"n": type}
        )
        if age is not None:
            event = session.get_one(AuditEvent, event_id)
            event.occurred_at = utcnow() - age
        return event_id


def _all_ids(database: Database) -> list[int]:
    with database.transaction() as session:
        return list(session.scalars(select(AuditEvent.id).order_by(AuditEvent.id)))


def _ids(http: TestClient, bearer: dict[str, str], query: str = "") -> list[int]:
    response = http.get(f"{URL}?{query}", headers=bearer)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["next_after"] is None  # the whole answer fits in one page here
    return [event["id"] for event in body["events"]]


@pytest.fixture
def seeded(http: TestClient, database: Database) -> dict[str, Any]:
    """Two users and two clients' events, one of them ten days old."""
    with database.transaction() as session:
        ada = operators.create_user(
            http.app.state.accounts,  # type: ignore[attr-defined]
            session,
            email="ada@example.com",
            name="Ada",
            password=PASSWORD,
            verified=True,
        )
        ada_id = str(ada.id)
    bob = str(uuid.uuid4())
    ids = {
        "ada_login": _record(database, "login.succeeded", subject=ada_id, client_id="app-one"),
        "bob_failed": _record(database, "login.failed", subject=bob, client_id="app-one"),
        "ada_token": _record(database, "token.issued", subject=ada_id, client_id="app-two"),
        "ada_old": _record(
            database, "login.failed", subject=ada_id, client_id="app-two", age=timedelta(days=10)
        ),
    }
    return {"ada": ada_id, "bob": bob, **ids}


# -- what it answers ---------------------------------------------------------------------------


def test_events_are_the_audit_rows_oldest_first(
    http: TestClient, database: Database, bearer: dict[str, str], seeded: dict[str, Any]
) -> None:
    response = http.get(URL, headers=bearer)
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"].startswith("no-store")
    body = response.json()
    assert body["next_after"] is None
    assert [event["id"] for event in body["events"]] == _all_ids(database)
    [login] = [event for event in body["events"] if event["id"] == seeded["ada_login"]]
    assert login["type"] == "login.succeeded" and login["outcome"] == "success"
    assert login["subject"] == seeded["ada"] and login["client_id"] == "app-one"
    assert login["detail"] == {"n": "login.succeeded"}
    assert set(login) == {
        "id",
        "occurred_at",
        "type",
        "outcome",
        "actor",
        "subject",
        "client_id",
        "ip",
        "user_agent",
        "detail",
    }


def test_each_filter_narrows_the_result(
    http: TestClient, bearer: dict[str, str], seeded: dict[str, Any]
) -> None:
    ada, s = seeded["ada"], seeded
    ada_all = [
        id for id in _ids(http, bearer) if id in {s["ada_login"], s["ada_token"], s["ada_old"]}
    ]
    created = _ids(http, bearer, "type=user.created")
    assert len(created) == 1  # admin.create_user's own event, subject ada
    assert _ids(http, bearer, f"user={ada}") == sorted([*created, *ada_all])
    assert _ids(http, bearer, "user=ADA@Example.com") == sorted([*created, *ada_all])
    assert _ids(http, bearer, f"user={s['bob']}") == [s["bob_failed"]]  # no account: by id
    assert _ids(http, bearer, "user=nobody@example.com") == []
    assert _ids(http, bearer, "client_id=app-one") == [s["ada_login"], s["bob_failed"]]
    assert _ids(http, bearer, "type=login.") == [
        s["ada_login"],
        s["bob_failed"],
        s["ada_old"],
    ]
    assert _ids(http, bearer, "type=login.failed") == [s["bob_failed"], s["ada_old"]]
    assert _ids(http, bearer, "type=login%25") == []  # LIKE wildcards are literal
    recent = _ids(http, bearer, "since=7d")
    assert s["ada_old"] not in recent and s["ada_login"] in recent
    assert len(recent) == len(_ids(http, bearer)) - 1
    stamp = (utcnow() - timedelta(days=11)).strftime("%Y-%m-%dT%H:%M:%S")
    assert s["ada_old"] in _ids(http, bearer, f"since={stamp}")
    assert _ids(http, bearer, f"user={ada}&type=login.&since=7d") == [s["ada_login"]]
    assert _ids(http, bearer, f"user={ada}&client_id=app-two") == [s["ada_token"], s["ada_old"]]


def test_the_cursor_walks_every_event_exactly_once(
    http: TestClient, database: Database, bearer: dict[str, str]
) -> None:
    for n in range(7):
        _record(database, f"probe.{n}", client_id="walker" if n % 2 else None)

    def walk(query: str) -> list[int]:
        seen: list[int] = []
        after: int | None = None
        while True:
            cursor = "" if after is None else f"&after={after}"
            body = http.get(f"{URL}?limit=2&{query}{cursor}", headers=bearer).json()
            assert len(body["events"]) <= 2
            seen += [event["id"] for event in body["events"]]
            after = body["next_after"]
            if after is None:
                return seen
            assert after == body["events"][-1]["id"]

    everything = walk("")
    assert everything == _all_ids(database) and len(everything) == len(set(everything)) >= 7
    walker = walk("client_id=walker")
    assert len(walker) == 3 and walker == sorted(walker)
    probes = walk("type=probe.")
    assert len(probes) == 7 and set(walker) < set(probes) < set(everything)
    last = everything[-1]
    assert http.get(f"{URL}?after={last}", headers=bearer).json() == {
        "events": [],
        "next_after": None,
    }


def test_reading_the_trail_is_not_itself_recorded(
    http: TestClient, database: Database, bearer: dict[str, str]
) -> None:
    before = _all_ids(database)
    for _ in range(3):
        assert http.get(URL, headers=bearer).status_code == 200
    assert _all_ids(database) == before


# -- bad queries -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "since",
    ["yesterday", "7x", "0d", "3mo", "99999999999999d", "2025-13-01", "0001-01-01T00:00+01:00"],
)
def test_a_bad_since_is_a_400_problem_naming_the_field(
    http: TestClient, bearer: dict[str, str], since: str
) -> None:
    body = _problem(http.get(URL, params={"since": since}, headers=bearer), 400)
    assert _fields(body) == {"since"}
    assert since not in str(body)  # the answer never echoes the input


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("limit=abc", "limit"),
        ("after=-1", "after"),
        ("after=" + "9" * 30, "after"),
        ("user=ada", "user"),
        ("user=not%20an%20email@", "user"),
        ("user=", "user"),
        ("client_id=a%00b", "client_id"),
        ("client_id=" + "c" * 65, "client_id"),
        ("type=login%00", "type"),
        ("since=", "since"),
        ("other=1", "other"),
    ],
)
def test_out_of_bounds_queries_are_400_problems(
    http: TestClient, bearer: dict[str, str], query: str, field: str
) -> None:
    body = _problem(http.get(f"{URL}?{query}", headers=bearer), 400)
    assert _fields(body) == {field}


def test_limit_takes_1_to_500(http: TestClient, database: Database, bearer: dict[str, str]) -> None:
    for n in range(3):
        _record(database, f"probe.{n}")
    total = len(_all_ids(database))
    one = http.get(f"{URL}?limit=1", headers=bearer).json()
    assert len(one["events"]) == 1 and one["next_after"] == one["events"][0]["id"]
    most = http.get(f"{URL}?limit=500", headers=bearer).json()
    assert len(most["events"]) == total and most["next_after"] is None


# -- who may read it ---------------------------------------------------------------------------


def test_no_token_is_401_with_a_bare_challenge(http: TestClient) -> None:
    response = http.get(URL)
    _problem(response, 401)
    assert response.headers["www-authenticate"] == 'Bearer realm="identity"'


def test_a_users_token_is_403_even_with_the_admin_scope(
    http: TestClient, make_client: MakeClient, database: Database
) -> None:
    with database.transaction() as session:
        eve = operators.create_user(
            http.app.state.accounts,  # type: ignore[attr-defined]
            session,
            email="eve@example.com",
            name="Eve",
            password=PASSWORD,
            verified=True,
        ).id
    app_id, _ = make_client(
        public=True, first_party=True, grant_types=["password"], scope="openid account admin"
    )
    for scope in ("openid account", "openid account admin"):
        issued = http.post(
            "/oauth2/token",
            data={
                "grant_type": "password",
                "client_id": app_id,
                "username": "eve@example.com",
                "password": PASSWORD,
                "scope": scope,
            },
        )
        assert issued.status_code == 200, issued.text
        assert issued.json()["scope"] == "openid account"  # a user's token never has admin
        headers = {"Authorization": f"Bearer {issued.json()['access_token']}"}
        assert http.get("/api/v1/me", headers=headers).status_code == 200  # a good user token
        response = http.get(URL, headers=headers)
        _problem(response, 403)
        assert 'error="insufficient_scope"' in response.headers["www-authenticate"]
        assert 'scope="admin"' in response.headers["www-authenticate"]
    # Even a token signed for the user with the admin scope: the subject is not the client.
    forged = http.app.state.oauth.issuer.issue(  # type: ignore[attr-defined]
        client_id=app_id,
        subject=str(eve),
        audience=[API_AUDIENCE],
        scope="openid account admin",
    )
    response = http.get(URL, headers={"Authorization": f"Bearer {forged.value}"})
    _problem(response, 403)


def test_a_client_token_without_the_admin_scope_is_403(
    http: TestClient, make_client: MakeClient, ops: tuple[str, str]
) -> None:
    reporter, _ = make_client(
        name="reports", grant_types=["client_credentials"], scope="reports admin-ish"
    )
    for headers in (
        _client_token(http, reporter, scope="reports"),
        _client_token(http, reporter, scope="admin-ish"),
        _client_token(http, ops[0], scope=""),
        # The token says admin, but the client is not (or no longer) registered for it.
        _client_token(http, reporter, scope="admin"),
    ):
        response = http.get(URL, headers=headers)
        _problem(response, 403)
        assert 'error="insufficient_scope"' in response.headers["www-authenticate"]


def test_a_token_for_another_audience_is_401(http: TestClient, ops: tuple[str, str]) -> None:
    for audience in ("https://reports.example.com", ops[0], ISSUER):
        response = http.get(URL, headers=_client_token(http, ops[0], audience=audience))
        _problem(response, 401)
        assert 'error="invalid_token"' in response.headers["www-authenticate"]


def test_a_revoked_admin_token_is_401_at_once(
    http: TestClient, ops: tuple[str, str], database: Database
) -> None:
    headers = _client_token(http, ops[0])
    assert http.get(URL, headers=headers).status_code == 200
    token = headers["Authorization"].removeprefix("Bearer ")
    revoked = http.post("/oauth2/revoke", data={"token": token}, auth=ops)
    assert revoked.status_code == 200, revoked.text
    response = http.get(URL, headers=headers)
    _problem(response, 401)
    assert "revoked" in response.json()["detail"]
    with database.transaction() as session:
        count = session.scalar(
            select(func.count()).select_from(AuditEvent).where(AuditEvent.type == "token.revoked")
        )
    assert count == 1


def test_a_deleted_clients_token_is_401(
    http: TestClient, ops: tuple[str, str], database: Database
) -> None:
    headers = _client_token(http, ops[0])
    with database.transaction() as session:
        clients.delete_client(session, ops[0])
    _problem(http.get(URL, headers=headers), 401)


def test_an_expired_or_forged_token_is_401(http: TestClient, ops: tuple[str, str]) -> None:
    issuer = http.app.state.oauth.issuer  # type: ignore[attr-defined]
    token = _client_token(http, ops[0])["Authorization"]
    header, payload, signature = token.removeprefix("Bearer ").split(".")
    tampered = f"Bearer {header}.{payload}.{signature[:-4]}AAAA"
    _problem(http.get(URL, headers={"Authorization": tampered}), 401)
    original = issuer.ttl
    issuer.ttl = -3600
    try:
        expired = _client_token(http, ops[0])
    finally:
        issuer.ttl = original
    _problem(http.get(URL, headers=expired), 401)


def test_the_client_credentials_grant_issues_a_working_admin_token(
    http: TestClient, ops: tuple[str, str]
) -> None:
    issued = http.post("/oauth2/token", data={"grant_type": "client_credentials"}, auth=ops)
    assert issued.status_code == 200, issued.text
    assert issued.json()["scope"] == "admin"
    headers = {"Authorization": f"Bearer {issued.json()['access_token']}"}
    assert http.get(URL, headers=headers).status_code == 200


# -- the OpenAPI document and fuzzing with an admin token -----------------------------------------


def test_the_document_describes_the_admin_operation(settings_for: Callable[..., Settings]) -> None:
    [operation] = [o for o in OPERATIONS if o.path == URL]
    assert operation.admin and operation.auth and operation.method == "GET"
    spec = openapi_document(settings_for(), OPERATIONS)["paths"][URL]["get"]
    assert spec["security"] == [{"bearerAuth": []}]
    assert "admin" in spec["summary"]
    assert {p["name"] for p in spec["parameters"]} == {
        "user",
        "client_id",
        "type",
        "since",
        "after",
        "limit",
    }
    assert all(p["in"] == "query" and not p["required"] for p in spec["parameters"])
    limit = next(p for p in spec["parameters"] if p["name"] == "limit")["schema"]
    assert (limit["minimum"], limit["maximum"], limit["default"]) == (1, 500, 100)
    assert set(spec["responses"]) == {"200", "400", "401", "403", "503"}
    for status in ("401", "403"):
        assert "WWW-Authenticate" in spec["responses"][status]["headers"]
    assert spec["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/AdminAuditEvents"
    }


@pytest.fixture
def fuzzed_app(
    database: Database, settings_for: Callable[..., Settings], tmp_path: Path
) -> Iterator[Starlette]:
    """An app for schemathesis, which runs its lifespan itself (stopped before ``database``
    empties the tables), on a key folder of its own (the fuzzing rotates keys)."""
    try:
        settings = settings_for(
            password_grant=True,
            keys_dir=tmp_path / "keys",
            # Webhook URLs are then checked without looking their hosts up in DNS: no
            # fuzzed name leaves the machine.
            webhooks_allow_private=True,
        )
        yield create_app(settings)
    finally:
        shutdown_lifespans()


def test_admin_operation_conforms_to_its_document_with_an_admin_token(
    fuzzed_app: Starlette, make_client: MakeClient, database: Database
) -> None:
    """test_openapi fuzzes every operation with a user's token (403 here); this gets past
    authentication, so every query reaches the handler."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", fuzzed_app)
    client_id, _ = make_client(
        name="ops", grant_types=["client_credentials"], scope="admin", audience=[API_AUDIENCE]
    )
    for n in range(3):
        _record(database, f"probe.{n}", client_id=client_id)
    issued = fuzzed_app.state.oauth.issuer.issue(
        client_id=client_id, subject=client_id, audience=[API_AUDIENCE], scope="admin"
    )
    headers = {"Authorization": f"Bearer {issued.value}"}
    operation = schema[URL]["GET"]
    cases = hypothesis.strategies.one_of(
        operation.as_strategy(schemathesis.GenerationMode.POSITIVE),
        operation.as_strategy(schemathesis.GenerationMode.NEGATIVE),
    )
    statuses: list[int] = []

    @hypothesis.given(case=cases)
    @hypothesis.settings(
        max_examples=EXAMPLES * 4,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(hypothesis.HealthCheck),
    )
    def conforms(case: Any) -> None:
        response = case.call_and_validate(base_url=ISSUER, headers=headers, checks=CHECKS)
        statuses.append(response.status_code)

    conforms()
    assert 200 in statuses and 400 in statuses and 403 not in statuses


def _admin_operations() -> list[tuple[str, str]]:
    return sorted(
        {
            (op.method.upper(), re.sub(r"{([^}:]+)(:[^}]+)?}", r"{\1}", op.path))
            for op in OPERATIONS
            if op.admin and op.path != URL
        }
    )


@pytest.mark.parametrize(("method", "path"), _admin_operations())
def test_every_admin_operation_conforms_to_its_document_with_an_admin_token(
    fuzzed_app: Starlette, make_client: MakeClient, database: Database, method: str, path: str
) -> None:
    """Valid and invalid requests of each admin operation, past authentication: every
    answer is one the document lists, in its shape, and none is a 5xx."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", fuzzed_app)
    client_id, _ = make_client(
        name="ops", grant_types=["client_credentials"], scope="admin", audience=[API_AUDIENCE]
    )
    with database.transaction() as session:
        for email in ("fuzz-a@example.com", "fuzz-b@example.com"):
            operators.create_user(
                fuzzed_app.state.accounts, session, email=email, name="F", password=PASSWORD
            )
    issued = fuzzed_app.state.oauth.issuer.issue(
        client_id=client_id, subject=client_id, audience=[API_AUDIENCE], scope="admin"
    )
    headers = {"Authorization": f"Bearer {issued.value}"}
    operation = schema[path][method]
    strategies = [
        operation.as_strategy(schemathesis.GenerationMode.POSITIVE),
        operation.as_strategy(schemathesis.GenerationMode.NEGATIVE),
    ]
    webhook = path.startswith(WEBHOOKS)
    if webhook:
        # Generated ids and URLs never name a real endpoint: some cases name a seeded one.
        strategies += [
            operation.as_strategy(schemathesis.GenerationMode.POSITIVE, **known)
            for known in _known_webhook(fuzzed_app, database, method, path)
        ]
    cases = hypothesis.strategies.one_of(*strategies)
    statuses: list[int] = []

    @hypothesis.given(case=cases)
    @hypothesis.settings(
        # Each rotation makes an RSA key: fewer of those.
        max_examples=5 if path.endswith("/keys/rotate") else EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(hypothesis.HealthCheck),
    )
    def conforms(case: Any) -> None:
        response = case.call_and_validate(base_url=ISSUER, headers=headers, checks=CHECKS)
        statuses.append(response.status_code)

    conforms()
    # 401s are the negative cases without a valid token; a 403 would refuse a good one.
    assert statuses and 403 not in statuses
    if webhook:
        assert any(200 <= status < 300 for status in statuses), sorted(set(statuses))


def _known_webhook(
    app: Starlette, database: Database, method: str, path: str
) -> list[dict[str, Any]]:
    """Arguments of ``as_strategy`` that name a registered endpoint, a delivery of it, or a
    valid new one. The endpoint is a closed local port (no request leaves the machine)."""
    url = "http://127.0.0.1:9/hook"
    if (method, path) == ("POST", WEBHOOKS):
        return [{"body": {"url": url, "events": ["user.*", "client.created"]}}]
    box = app.state.accounts.secret_box
    with database.transaction() as session:
        added = webhooks.add_endpoint(
            session,
            box,
            url=url,
            events=["client.*"],
            allow_private=True,
            actor="admin",
            context=CLI,
        )
        hook = added.endpoint.id
        audit.record(session, "client.created", context=CLI, client_id="fuzzed")
    WebhookSender(database, app.state.settings, box).dispatch()
    with database.transaction() as session:
        delivery = webhooks.recent_deliveries(session, hook, limit=1)[0]["id"]
    return [{"path_parameters": {"webhook_id": hook, "delivery_id": str(delivery)}}]
