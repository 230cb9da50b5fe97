"""The admin API's webhooks (``/api/v1/admin/webhooks...``): list, register (the secret shown
once), read with the newest deliveries, enable, disable, rotate the secret with an overlap,
remove, the delivery log and redelivery of a real delivery to a local receiver; refusals as
problems naming the field, and every call audited with its operator."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from starlette.testclient import TestClient

from identity.config import Settings
from identity.db import Database
from identity.webhook_delivery import WebhookSender
from tests.api.conftest import (
    ADMIN,
    MakeClient,
    audit_rows,
    client_token,
    console_session,
    fields,
    make_user,
    password_token,
    problem,
)
from tests.conftest import remember_secret
from tests.test_webhook_delivery import Receiver, run_round

WEBHOOKS = f"{ADMIN}/webhooks"
HOOK = "https://hooks.example.com/identity"
SHAPE = {
    "id",
    "url",
    "events",
    "enabled",
    "disabled_reason",
    "created_at",
    "failing_since",
    "previous_secret_until",
}
DELIVERY_SHAPE = {
    "id",
    "event_type",
    "message_id",
    "status",
    "attempts",
    "last_status_code",
    "last_response_ms",
    "last_error",
    "created_at",
    "next_attempt_at",
    "delivered_at",
}


@pytest.fixture
def admin_app(
    app_for: Callable[[Settings], TestClient], settings_for: Callable[..., Settings]
) -> TestClient:
    """The app as development and the tests run it: http and loopback endpoints allowed
    (the local receiver), and no name looked up in DNS (https hosts are not checked)."""
    return app_for(settings_for(webhooks_allow_private=True, password_grant=True))


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as running:
        yield running


@pytest.fixture
def sender(admin_app: TestClient, database: Database) -> WebhookSender:
    """A deliverer on the app's settings and secret box (the app's own runs in its lifespan
    too: they share the deliveries by claims, so each is sent once)."""
    accounts = admin_app.app.state.accounts  # type: ignore[attr-defined]
    return WebhookSender(database, accounts.settings, accounts.secret_box, jitter=lambda: 1.0)


def _create(
    http: TestClient, auth: dict[str, str], url: str = HOOK, events: list[str] | None = None
) -> dict[str, Any]:
    body = {"url": url, "events": events or ["user.*"]}
    response = http.post(WEBHOOKS, json=body, headers=auth)
    assert response.status_code == 201, response.text
    created = dict(response.json())
    remember_secret(created["secret"])
    return created


def _deliveries(http: TestClient, auth: dict[str, str], endpoint_id: str) -> list[dict[str, Any]]:
    response = http.get(f"{WEBHOOKS}/{endpoint_id}/deliveries", headers=auth)
    assert response.status_code == 200, response.text
    return list(response.json()["deliveries"])


def _deliver(
    sender: WebhookSender,
    receiver: Receiver,
    http: TestClient,
    auth: dict[str, str],
    endpoint_id: str,
    count: int,
) -> list[dict[str, Any]]:
    """Drive ``sender`` until the receiver has ``count`` requests and every delivery of the
    endpoint is settled; its deliveries then, newest first."""
    deadline = time.monotonic() + 15
    while True:
        if len(receiver.requests) < count:
            run_round(sender)
        deliveries = _deliveries(http, auth, endpoint_id)
        settled = all(d["status"] == "delivered" for d in deliveries)
        if len(receiver.requests) >= count and settled:
            return deliveries
        assert time.monotonic() < deadline, (len(receiver.requests), deliveries)
        time.sleep(0.05)


def _near(moment: str | None, expected: datetime) -> bool:
    assert moment is not None
    return abs(datetime.fromisoformat(moment).astimezone(UTC) - expected) < timedelta(minutes=1)


# -- register, read, and the secret shown once ---------------------------------------------------


def test_create_shows_the_secret_once_and_no_read_shows_it(
    admin_app: TestClient, database: Database, admin_auth: dict[str, str], operator: Any
) -> None:
    created = _create(admin_app, admin_auth, events=["user.created", "login.*"])
    assert set(created) == SHAPE | {"secret"}
    assert created["id"].startswith("wh_") and created["secret"].startswith("whsec_")
    assert (created["url"], created["events"]) == (HOOK, ["user.created", "login.*"])
    assert created["enabled"] is True and created["previous_secret_until"] is None
    listed = admin_app.get(WEBHOOKS, headers=admin_auth)
    assert listed.status_code == 200, listed.text
    assert [w["id"] for w in listed.json()["webhooks"]] == [created["id"]]
    assert set(listed.json()["webhooks"][0]) == SHAPE
    shown = admin_app.get(f"{WEBHOOKS}/{created['id']}", headers=admin_auth)
    assert shown.status_code == 200, shown.text
    assert set(shown.json()) == SHAPE | {"deliveries"} and shown.json()["deliveries"] == []
    for read in (listed, shown):
        assert created["secret"] not in read.text and "secret" not in read.json()
    [added] = audit_rows(database, "webhook.added")
    assert (added.actor, added.subject) == (operator[0], created["id"])
    assert added.detail == {"host": "hooks.example.com", "events": ["user.created", "login.*"]}
    [listed_row] = audit_rows(database, "admin.webhooks_listed")
    assert listed_row.actor == operator[0] and listed_row.detail == {"count": 1}
    [viewed] = audit_rows(database, "admin.webhook_viewed")
    assert (viewed.actor, viewed.subject) == (operator[0], created["id"])


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"url": HOOK, "events": ["user.nope"]}, "events"),
        ({"url": HOOK, "events": ["*", "no such"]}, "events"),
        ({"url": HOOK, "events": []}, "events"),
        ({"url": HOOK, "events": "user.*"}, "events"),
        ({"url": HOOK, "events": [""]}, "events.0"),
        ({"url": HOOK, "events": ["user.*"] * 51}, "events"),
        ({"url": "ftp://hooks.example.com/", "events": ["*"]}, "url"),
        ({"url": "https://hooks.example.com/a b", "events": ["*"]}, "url"),
        ({"url": "https://user:pw@hooks.example.com/", "events": ["*"]}, "url"),
        ({"url": "https://hooks.example.com/#x", "events": ["*"]}, "url"),
        ({"url": "https://hooks.example.com:99999/", "events": ["*"]}, "url"),
        ({"url": "https://hooks.example.com/\x00", "events": ["*"]}, "url"),
        ({"url": "https://" + "a" * 2000, "events": ["*"]}, "url"),
        ({"events": ["*"]}, "url"),
        ({"url": HOOK, "events": ["*"], "secret": "whsec_mine"}, "secret"),
    ],
)
def test_create_refuses_a_bad_url_or_events_naming_the_field(
    admin_app: TestClient,
    database: Database,
    admin_auth: dict[str, str],
    body: dict[str, Any],
    field: str,
) -> None:
    response = admin_app.post(WEBHOOKS, json=body, headers=admin_auth)
    assert fields(problem(response, 400)) == {field}
    assert audit_rows(database, "webhook.added") == []


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:9/hook", "http://hooks.example.com/", "https://127.0.0.1/hook"]
)
def test_http_and_private_addresses_are_refused_while_allow_private_is_off(
    app_for: Callable[[Settings], TestClient],
    settings_for: Callable[..., Settings],
    database: Database,
    operator: tuple[str, str],
    url: str,
) -> None:
    # A literal address or an http URL: refused before any name is looked up.
    strict = app_for(settings_for(webhooks_allow_private=False))
    auth = client_token(strict, operator[0])
    response = strict.post(WEBHOOKS, json={"url": url, "events": ["*"]}, headers=auth)
    body = problem(response, 400)
    assert fields(body) == {"url"}
    assert "IDENTITY_WEBHOOKS_ALLOW_PRIVATE=1" in body["errors"][0]["message"]
    assert audit_rows(database, "webhook.added") == []


# -- changes -------------------------------------------------------------------------------------


def test_disable_and_enable_say_so_and_are_audited(
    admin_app: TestClient, database: Database, admin_auth: dict[str, str], operator: Any
) -> None:
    created = _create(admin_app, admin_auth)
    url = f"{WEBHOOKS}/{created['id']}"
    disabled = admin_app.post(f"{url}/disable", headers=admin_auth)
    assert disabled.status_code == 200, disabled.text
    assert set(disabled.json()) == SHAPE
    assert disabled.json()["enabled"] is False and disabled.json()["disabled_reason"]
    assert admin_app.get(url, headers=admin_auth).json()["enabled"] is False
    enabled = admin_app.post(f"{url}/enable", headers=admin_auth).json()
    assert enabled["enabled"] is True and enabled["disabled_reason"] is None
    for kind in ("webhook.disabled", "webhook.enabled"):
        [row] = audit_rows(database, kind)
        assert (row.actor, row.subject) == (operator[0], created["id"])


def test_rotation_shows_the_new_secret_once_with_the_overlap(
    admin_app: TestClient, database: Database, admin_auth: dict[str, str], operator: Any
) -> None:
    created = _create(admin_app, admin_auth)
    url = f"{WEBHOOKS}/{created['id']}"
    rotated = admin_app.post(f"{url}/rotate-secret", headers=admin_auth)  # the default: a day
    assert rotated.status_code == 200, rotated.text
    body = rotated.json()
    remember_secret(body["secret"])
    assert set(body) == {"id", "secret", "previous_secret_until"}
    assert body["id"] == created["id"] and body["secret"].startswith("whsec_")
    assert body["secret"] != created["secret"]
    assert _near(body["previous_secret_until"], datetime.now(UTC) + timedelta(days=1))
    shown = admin_app.get(url, headers=admin_auth)
    assert body["secret"] not in shown.text and created["secret"] not in shown.text
    assert shown.json()["previous_secret_until"] == body["previous_secret_until"]
    rotate = f"{url}/rotate-secret"
    hour = admin_app.post(rotate, json={"overlap_seconds": 3600}, headers=admin_auth)
    remember_secret(hour.json()["secret"])
    assert _near(hour.json()["previous_secret_until"], datetime.now(UTC) + timedelta(hours=1))
    none = admin_app.post(rotate, json={"overlap_seconds": 0}, headers=admin_auth)
    remember_secret(none.json()["secret"])
    assert none.json()["previous_secret_until"] is None
    assert admin_app.get(url, headers=admin_auth).json()["previous_secret_until"] is None
    rows = audit_rows(database, "webhook.secret_rotated")
    assert [(r.actor, r.subject) for r in rows] == [(operator[0], created["id"])] * 3
    assert [r.detail["overlap_seconds"] for r in rows] == [86400, 3600, 0]


@pytest.mark.parametrize("overlap", [-1, 2592001, "60", 1.5, True, None])
def test_an_overlap_out_of_bounds_is_a_400(
    admin_app: TestClient, database: Database, admin_auth: dict[str, str], overlap: Any
) -> None:
    created = _create(admin_app, admin_auth)
    url = f"{WEBHOOKS}/{created['id']}/rotate-secret"
    response = admin_app.post(url, json={"overlap_seconds": overlap}, headers=admin_auth)
    assert fields(problem(response, 400)) == {"overlap_seconds"}
    assert audit_rows(database, "webhook.secret_rotated") == []


def test_thirty_days_is_the_longest_overlap(
    admin_app: TestClient, admin_auth: dict[str, str]
) -> None:
    created = _create(admin_app, admin_auth)
    url = f"{WEBHOOKS}/{created['id']}/rotate-secret"
    response = admin_app.post(url, json={"overlap_seconds": 2592000}, headers=admin_auth)
    assert response.status_code == 200, response.text
    remember_secret(response.json()["secret"])
    assert _near(response.json()["previous_secret_until"], datetime.now(UTC) + timedelta(days=30))


def test_delete_removes_the_endpoint(
    admin_app: TestClient, database: Database, admin_auth: dict[str, str], operator: Any
) -> None:
    created = _create(admin_app, admin_auth)
    url = f"{WEBHOOKS}/{created['id']}"
    deleted = admin_app.delete(url, headers=admin_auth)
    assert deleted.status_code == 204 and deleted.content == b""
    assert admin_app.get(WEBHOOKS, headers=admin_auth).json() == {"webhooks": []}
    for method, tail in (
        ("GET", ""),
        ("DELETE", ""),
        ("POST", "/enable"),
        ("POST", "/disable"),
        ("POST", "/rotate-secret"),
        ("GET", "/deliveries"),
    ):
        problem(admin_app.request(method, f"{url}{tail}", headers=admin_auth), 404)
    [row] = audit_rows(database, "webhook.removed")
    assert (row.actor, row.subject) == (operator[0], created["id"])
    assert audit_rows(database, "webhook.secret_rotated") == []


@pytest.mark.parametrize(
    "endpoint_id", ["wh_000000000000000000000000", "x" * 41, "a%00b", "%C3%A9"]
)
def test_an_unknown_or_malformed_endpoint_id_is_404(
    admin_app: TestClient, admin_auth: dict[str, str], endpoint_id: str
) -> None:
    for method, tail in (("GET", ""), ("DELETE", ""), ("POST", "/enable"), ("GET", "/deliveries")):
        url = f"{WEBHOOKS}/{endpoint_id}{tail}"
        problem(admin_app.request(method, url, headers=admin_auth), 404)


@pytest.mark.parametrize("delivery_id", ["1", "0", "abc", "-1", "9" * 19, "1.5", "%00"])
def test_redelivering_an_unknown_or_malformed_delivery_is_404(
    admin_app: TestClient, admin_auth: dict[str, str], delivery_id: str
) -> None:
    url = f"{WEBHOOKS}/deliveries/{delivery_id}/redeliver"
    problem(admin_app.post(url, headers=admin_auth), 404)


@pytest.mark.parametrize("query", ["limit=0", "limit=201", "limit=abc", "other=1"])
def test_a_bad_deliveries_query_is_a_400(
    admin_app: TestClient, admin_auth: dict[str, str], query: str
) -> None:
    created = _create(admin_app, admin_auth)
    url = f"{WEBHOOKS}/{created['id']}/deliveries?{query}"
    assert fields(problem(admin_app.get(url, headers=admin_auth), 400)) == {query.split("=")[0]}


# -- a real delivery, its log and its redelivery -----------------------------------------------


def test_a_delivery_is_logged_and_redelivered_with_both_secrets_while_they_overlap(
    admin_app: TestClient,
    database: Database,
    admin_auth: dict[str, str],
    operator: Any,
    receiver: Receiver,
    sender: WebhookSender,
) -> None:
    created = _create(admin_app, admin_auth, url=receiver.url)
    hook = created["id"]
    made = admin_app.post(
        f"{ADMIN}/users",
        json={"email": "ada@example.com", "name": "Ada", "password": "a fine long password 7"},
        headers=admin_auth,
    )
    assert made.status_code == 201, made.text
    [first] = _deliver(sender, receiver, admin_app, admin_auth, hook, 1)
    assert set(first) == DELIVERY_SHAPE
    assert (first["event_type"], first["status"], first["last_status_code"]) == (
        "user.created",
        "delivered",
        204,
    )
    assert first["attempts"] == 1 and first["delivered_at"] is not None
    message = receiver.verified(created["secret"])
    assert message["data"] == {"id": made.json()["id"], "email": "ada@example.com"}
    shown = admin_app.get(f"{WEBHOOKS}/{hook}", headers=admin_auth).json()
    assert shown["deliveries"] == [first]
    [listed] = audit_rows(database, "admin.webhook_deliveries_listed")
    assert (listed.actor, listed.subject) == (operator[0], hook)

    rotated = admin_app.post(f"{WEBHOOKS}/{hook}/rotate-secret", headers=admin_auth).json()
    remember_secret(rotated["secret"])
    again = admin_app.post(f"{WEBHOOKS}/deliveries/{first['id']}/redeliver", headers=admin_auth)
    assert again.status_code == 202 and again.content == b""
    newest, oldest = _deliver(sender, receiver, admin_app, admin_auth, hook, 2)
    assert oldest == first and newest["id"] > first["id"]
    assert newest["message_id"] == first["message_id"]  # the same webhook-id: a receiver can tell
    assert len(receiver.requests) == 2
    assert receiver.requests[1][1]["webhook-id"] == receiver.requests[0][1]["webhook-id"]
    # Signed with the new secret and, during the overlap, the old one too.
    assert receiver.verified(rotated["secret"], 1) == message
    assert receiver.verified(created["secret"], 1) == message
    one = admin_app.get(f"{WEBHOOKS}/{hook}/deliveries?limit=1", headers=admin_auth).json()
    assert one["deliveries"] == [newest]
    [row] = audit_rows(database, "webhook.redelivered")
    assert (row.actor, row.subject) == (operator[0], hook)
    assert row.detail["delivery"] == first["id"]


def test_redelivery_to_a_disabled_endpoint_is_a_409(
    admin_app: TestClient,
    database: Database,
    admin_auth: dict[str, str],
    receiver: Receiver,
    sender: WebhookSender,
) -> None:
    created = _create(admin_app, admin_auth, url=receiver.url, events=["*"])
    make_user(admin_app, database, "bob@example.com")  # user.created, from the command line
    [delivered] = _deliver(sender, receiver, admin_app, admin_auth, created["id"], 1)
    admin_app.post(f"{WEBHOOKS}/{created['id']}/disable", headers=admin_auth)
    url = f"{WEBHOOKS}/deliveries/{delivered['id']}/redeliver"
    body = problem(admin_app.post(url, headers=admin_auth), 409)
    assert "enable" in body["detail"]
    assert audit_rows(database, "webhook.redelivered") == []
    assert len(_deliveries(admin_app, admin_auth, created["id"])) == 1
    admin_app.post(f"{WEBHOOKS}/{created['id']}/enable", headers=admin_auth)
    assert admin_app.post(url, headers=admin_auth).status_code == 202


# -- who may call them ---------------------------------------------------------------------------


def test_tokens_without_admin_are_refused_and_change_nothing(
    admin_app: TestClient, database: Database, make_client: MakeClient
) -> None:
    reporter, _ = make_client(name="reports", grant_types=["client_credentials"], scope="reports")
    make_user(admin_app, database, "eve@example.com")
    app_id, _ = make_client(
        public=True, first_party=True, grant_types=["password"], scope="openid account admin"
    )
    users = password_token(admin_app, app_id, "eve@example.com", "openid account admin")
    body = {"url": HOOK, "events": ["*"]}
    for headers in (
        client_token(admin_app, reporter, scope="reports"),
        {"Authorization": f"Bearer {users['access_token']}"},
    ):
        for method, url in (
            ("GET", WEBHOOKS),
            ("POST", WEBHOOKS),
            ("POST", f"{WEBHOOKS}/deliveries/1/redeliver"),
        ):
            response = admin_app.request(method, url, json=body, headers=headers)
            problem(response, 403)
            assert 'error="insufficient_scope"' in response.headers["www-authenticate"]
    problem(admin_app.post(WEBHOOKS, json=body), 401)
    assert audit_rows(database, "webhook.added") == []


def test_an_administrators_console_session_manages_webhooks_with_the_csrf_header(
    admin_app: TestClient, database: Database
) -> None:
    root = make_user(admin_app, database, "root@example.com", role="admin")
    csrf = console_session(admin_app, database, root, ["pwd", "otp", "mfa"])
    body = {"url": HOOK, "events": ["client.*"]}
    problem(admin_app.post(WEBHOOKS, json=body), 403)  # no CSRF token
    created = _create(admin_app, {"X-CSRF-Token": csrf})
    assert admin_app.get(WEBHOOKS).json()["webhooks"][0]["id"] == created["id"]
    [added] = audit_rows(database, "webhook.added")
    assert (added.actor, added.subject) == (str(root), created["id"])
    assert audit_rows(database, "admin.webhooks_listed")[0].actor == str(root)
