"""The authorization code flow with PKCE and OpenID Connect, through the hosted pages."""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import jwt as pyjwt
import pytest
from sqlalchemy import select
from starlette.testclient import TestClient

from identity.config import Settings
from identity.db import Database
from identity.models import AuditEvent, AuthorizationCode, Consent

from ..conftest import ISSUER, remember_secret
from ..web_helpers import PASSWORD, Browser, csrf_of

CALLBACK = "https://app.example.com/callback"
MakeClient = Callable[..., tuple[str, str | None]]


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


@pytest.fixture
def http(app_for: Callable[[Settings], TestClient], settings: Settings) -> TestClient:
    return app_for(settings)


@pytest.fixture
def app_client(make_client: MakeClient) -> tuple[str, str]:
    client_id, secret = make_client(
        name="Billing Dashboard",
        redirect_uris=[CALLBACK, "http://127.0.0.1/native"],
        grant_types=["authorization_code", "refresh_token"],
        scope="invoices:read",
    )
    assert secret is not None
    return client_id, secret


class Flow:
    """A relying party's side of one authorization request."""

    def __init__(self, http: TestClient, client_id: str, **params: str) -> None:
        self.http, self.client_id = http, client_id
        self.verifier, challenge = pkce()
        self.state, self.nonce = secrets.token_urlsafe(12), secrets.token_urlsafe(12)
        self.params = {
            "response_type": "code",
            "client_id": client_id,
            "redirect_uri": CALLBACK,
            "scope": "openid email profile",
            "state": self.state,
            "nonce": self.nonce,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
            **params,
        }

    def start(self) -> Any:
        query = urlencode({k: v for k, v in self.params.items() if v is not None})
        return self.http.get(f"/oauth2/authorize?{query}", follow_redirects=False)


def _follow(http: TestClient, response: Any) -> Any:
    while response.status_code in (302, 303) and response.headers["location"].startswith("/"):
        response = http.get(response.headers["location"], follow_redirects=False)
    return response


def login_and_consent(http: TestClient, flow: Flow, email: str, allow: bool = True) -> Any:
    """Log in if asked, consent if asked; the response that goes back to the client."""
    response = flow.start()
    location = response.headers.get("location", "")
    if location.startswith("/login?"):
        page = http.get(location)
        next_path = parse_qs(urlsplit(location).query)["next"][0]
        response = http.post(
            "/login",
            data={
                "csrf_token": csrf_of(page.text),
                "email": email,
                "password": PASSWORD,
                "next": next_path,
            },
            follow_redirects=False,
        )
        response = _follow(http, response)
    if response.status_code == 200 and 'name="rid"' in response.text:
        rid = response.text.split('name="rid" value="')[1].split('"')[0]
        response = http.post(
            "/oauth2/authorize/consent",
            data={
                "csrf_token": csrf_of(response.text),
                "rid": rid,
                "decision": "allow" if allow else "deny",
            },
            follow_redirects=False,
        )
    return response


def callback_params(response: Any) -> dict[str, str]:
    location = response.headers["location"]
    assert location.startswith(CALLBACK)
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


def _remember_tokens(response: Any) -> Any:
    if response.status_code == 200:
        for name in ("access_token", "refresh_token", "id_token"):
            remember_secret(response.json().get(name))
    return response


def exchange(
    http: TestClient, flow: Flow, code: str, secret: str, verifier: str | None = None
) -> Any:
    remember_secret(code)
    response = http.post(
        "/oauth2/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": CALLBACK,
            "code_verifier": verifier if verifier is not None else flow.verifier,
        },
        auth=(flow.client_id, secret),
    )
    return _remember_tokens(response)


def test_code_flow_gives_tokens_an_id_token_and_userinfo(
    http: TestClient, user: str, app_client: tuple[str, str], database: Database
) -> None:
    flow = Flow(http, app_client[0])
    response = login_and_consent(http, flow, user)
    assert response.status_code == 303
    params = callback_params(response)
    assert params["state"] == flow.state and params["iss"] == ISSUER
    tokens = exchange(http, flow, params["code"], app_client[1])
    assert tokens.status_code == 200, tokens.text
    body = tokens.json()
    jwks = pyjwt.PyJWKSet.from_dict(http.get("/.well-known/jwks.json").json())
    header = pyjwt.get_unverified_header(body["id_token"])
    id_token = pyjwt.decode(
        body["id_token"],
        jwks[header["kid"]].key,
        algorithms=["RS256"],
        audience=app_client[0],
        issuer=ISSUER,
    )
    assert id_token["nonce"] == flow.nonce and id_token["email"] == user
    assert id_token["amr"] == ["pwd"] and abs(id_token["auth_time"] - time.time()) < 60
    digest = hashlib.sha256(body["access_token"].encode()).digest()
    assert id_token["at_hash"] == base64.urlsafe_b64encode(digest[:16]).rstrip(b"=").decode()
    info = http.get("/oauth2/userinfo", headers={"authorization": f"Bearer {body['access_token']}"})
    assert info.status_code == 200
    assert info.json() == {
        "sub": id_token["sub"],
        "email": user,
        "email_verified": True,
        "name": "Ada",
    }
    with database.transaction() as session:
        code = session.scalars(select(AuthorizationCode)).one()
        assert code.used_at is not None and params["code"] not in code.digest
        kinds = session.scalars(select(AuditEvent.type)).all()
        assert {"consent.granted", "authorize.succeeded", "token.issued"} <= set(kinds)


def test_userinfo_errors_follow_rfc_6750(http: TestClient) -> None:
    missing = http.get("/oauth2/userinfo")
    assert missing.status_code == 401 and missing.headers["www-authenticate"].startswith("Bearer")
    bad = http.get("/oauth2/userinfo", headers={"authorization": "Bearer nonsense"})
    assert bad.status_code == 401 and 'error="invalid_token"' in bad.headers["www-authenticate"]


def test_userinfo_needs_the_openid_scope(
    http: TestClient, user: str, app_client: tuple[str, str]
) -> None:
    flow = Flow(http, app_client[0], scope="invoices:read")
    params = callback_params(login_and_consent(http, flow, user))
    token = exchange(http, flow, params["code"], app_client[1]).json()["access_token"]
    response = http.get("/oauth2/userinfo", headers={"authorization": f"Bearer {token}"})
    assert (
        response.status_code == 403 and "insufficient_scope" in response.headers["www-authenticate"]
    )


def test_prompt_none_without_a_session_is_login_required(
    http: TestClient, app_client: tuple[str, str]
) -> None:
    flow = Flow(http, app_client[0], prompt="none")
    params = callback_params(flow.start())
    assert params["error"] == "login_required"
    assert params["state"] == flow.state and params["iss"] == ISSUER


def test_prompt_none_with_a_session_but_no_consent_is_consent_required(
    http: TestClient, user: str, app_client: tuple[str, str]
) -> None:
    Browser(http).login(user)
    params = callback_params(Flow(http, app_client[0], prompt="none").start())
    assert params["error"] == "consent_required"


def test_consent_is_remembered_and_asked_again_for_new_scopes(
    http: TestClient, user: str, app_client: tuple[str, str], database: Database
) -> None:
    callback_params(login_and_consent(http, Flow(http, app_client[0], scope="openid email"), user))
    silent = Flow(http, app_client[0], scope="openid email", prompt="none").start()
    assert "code" in callback_params(silent)
    wider = Flow(http, app_client[0], scope="openid email profile", prompt="none").start()
    assert callback_params(wider)["error"] == "consent_required"
    with database.transaction() as session:
        assert session.scalars(select(Consent)).one().scope == "openid email"


def test_first_party_client_skips_consent(
    http: TestClient, user: str, make_client: MakeClient
) -> None:
    client_id, _ = make_client(redirect_uris=[CALLBACK], first_party=True)
    Browser(http).login(user)
    assert "code" in callback_params(Flow(http, client_id).start())


def test_deny_redirects_access_denied_with_state_and_iss(
    http: TestClient, user: str, app_client: tuple[str, str]
) -> None:
    flow = Flow(http, app_client[0])
    params = callback_params(login_and_consent(http, flow, user, allow=False))
    assert params["error"] == "access_denied" and params["state"] == flow.state
    assert params["iss"] == ISSUER


def test_max_age_forces_a_new_login_and_a_new_auth_time(
    http: TestClient, user: str, make_client: MakeClient
) -> None:
    client_id, secret = make_client(redirect_uris=[CALLBACK], first_party=True)
    Browser(http).login(user)
    time.sleep(1.1)
    flow = Flow(http, client_id, max_age="0")
    response = flow.start()
    assert response.headers["location"].startswith("/login?")
    params = callback_params(login_and_consent(http, flow, user))
    id_token = exchange(http, flow, params["code"], secret or "").json()["id_token"]
    assert (
        abs(pyjwt.decode(id_token, options={"verify_signature": False})["auth_time"] - time.time())
        < 1.5
    )


def test_prompt_login_forces_a_new_login(
    http: TestClient, user: str, make_client: MakeClient
) -> None:
    client_id, _ = make_client(redirect_uris=[CALLBACK], first_party=True)
    Browser(http).login(user)
    assert Flow(http, client_id, prompt="login").start().headers["location"].startswith("/login?")


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"code_challenge": None, "code_challenge_method": None}, "invalid_request"),
        ({"code_challenge_method": "plain"}, "invalid_request"),
        ({"code_challenge_method": None}, "invalid_request"),
        ({"response_type": "token"}, "unsupported_response_type"),
        ({"scope": "openid admin"}, "invalid_scope"),
    ],
)
def test_bad_requests_are_redirected_as_errors(
    http: TestClient, app_client: tuple[str, str], changes: dict[str, str | None], error: str
) -> None:
    flow = Flow(http, app_client[0])
    flow.params.update(changes)  # type: ignore[arg-type]
    params = callback_params(flow.start())
    assert params["error"] == error and params["iss"] == ISSUER


def test_wrong_or_missing_verifier_is_invalid_grant(
    http: TestClient, user: str, app_client: tuple[str, str]
) -> None:
    for verifier in ("x" * 50, ""):
        flow = Flow(http, app_client[0])
        params = callback_params(login_and_consent(http, flow, user))
        response = exchange(http, flow, params["code"], app_client[1], verifier=verifier)
        assert response.status_code == 400 and response.json()["error"] == "invalid_grant"


def test_code_replay_is_refused_and_revokes_the_first_tokens(
    http: TestClient, user: str, app_client: tuple[str, str], database: Database
) -> None:
    flow = Flow(http, app_client[0])
    params = callback_params(login_and_consent(http, flow, user))
    first = exchange(http, flow, params["code"], app_client[1]).json()
    replay = exchange(http, flow, params["code"], app_client[1])
    assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"
    introspected = http.post(
        "/oauth2/introspect", data={"token": first["access_token"]}, auth=app_client
    )
    assert introspected.json() == {"active": False}
    with database.transaction() as session:
        assert "code.replayed" in session.scalars(select(AuditEvent.type)).all()


def test_code_is_bound_to_its_client_and_redirect_uri(
    http: TestClient, user: str, app_client: tuple[str, str], make_client: MakeClient
) -> None:
    flow = Flow(http, app_client[0])
    params = callback_params(login_and_consent(http, flow, user))
    other_id, other_secret = make_client(redirect_uris=[CALLBACK])
    stolen = http.post(
        "/oauth2/token",
        data={
            "grant_type": "authorization_code",
            "code": params["code"],
            "redirect_uri": CALLBACK,
            "code_verifier": flow.verifier,
        },
        auth=(other_id, other_secret or ""),
    )
    assert stolen.json()["error"] == "invalid_grant"


@pytest.mark.parametrize(
    "redirect_uri",
    [
        "https://app.example.com/callback/",
        "https://app.example.com/Callback",
        "https://app.example.com/callback?x=1",
        "https://app.example.com:8443/callback",
        "https://evil.example.com/callback",
        "http://app.example.com/callback",
        "http://127.0.0.1/other",
    ],
)
def test_redirect_uri_variants_get_an_error_page_and_no_redirect(
    http: TestClient, app_client: tuple[str, str], redirect_uri: str
) -> None:
    response = Flow(http, app_client[0], redirect_uri=redirect_uri).start()
    assert response.status_code == 400 and "location" not in response.headers
    assert response.headers["content-type"].startswith("text/html")


def test_unknown_client_gets_an_error_page(http: TestClient) -> None:
    response = Flow(http, "no-such-client").start()
    assert response.status_code == 400 and "location" not in response.headers


def test_loopback_redirect_may_use_any_port(
    http: TestClient, user: str, app_client: tuple[str, str]
) -> None:
    Browser(http).login(user)
    flow = Flow(http, app_client[0], redirect_uri="http://127.0.0.1:53127/native", prompt="none")
    response = flow.start()
    assert response.headers["location"].startswith("http://127.0.0.1:53127/native?")


def test_discovery_lists_the_code_flow_with_s256_only(http: TestClient) -> None:
    document = http.get("/.well-known/openid-configuration").json()
    assert document["code_challenge_methods_supported"] == ["S256"]
    assert document["response_types_supported"] == ["code"]
    assert document["authorization_response_iss_parameter_supported"] is True
    assert "password" not in document["grant_types_supported"]


def test_consent_is_listed_and_revocable_on_the_account_page(
    http: TestClient, user: str, app_client: tuple[str, str], database: Database
) -> None:
    callback_params(login_and_consent(http, Flow(http, app_client[0]), user))
    page = http.get("/account")
    assert "Billing Dashboard" in page.text
    response = http.post(
        f"/account/consents/{app_client[0]}/revoke",
        data={"csrf_token": csrf_of(page.text)},
        follow_redirects=False,
    )
    assert response.status_code == 303
    with database.transaction() as session:
        assert session.scalars(select(Consent)).all() == []
        assert "consent.revoked" in session.scalars(select(AuditEvent.type)).all()
    again = Flow(http, app_client[0], prompt="none").start()
    assert callback_params(again)["error"] == "consent_required"


def _offline_tokens(http: TestClient, user: str, app_client: tuple[str, str]) -> dict[str, Any]:
    flow = Flow(http, app_client[0], scope="openid offline_access")
    params = callback_params(login_and_consent(http, flow, user))
    body = exchange(http, flow, params["code"], app_client[1]).json()
    assert "refresh_token" in body
    return dict(body)


def _refresh(http: TestClient, app_client: tuple[str, str], token: str) -> Any:
    return http.post(
        "/oauth2/token",
        data={"grant_type": "refresh_token", "refresh_token": token},
        auth=app_client,
    )


def test_refresh_token_only_with_offline_access(
    http: TestClient, user: str, app_client: tuple[str, str]
) -> None:
    flow = Flow(http, app_client[0], scope="openid")
    params = callback_params(login_and_consent(http, flow, user))
    assert "refresh_token" not in exchange(http, flow, params["code"], app_client[1]).json()
    body = _offline_tokens(http, user, app_client)
    rotated = _refresh(http, app_client, body["refresh_token"])
    assert rotated.status_code == 200 and rotated.json()["refresh_token"] != body["refresh_token"]


def test_revoking_a_refresh_token_kills_its_family(
    http: TestClient, user: str, app_client: tuple[str, str]
) -> None:
    body = _offline_tokens(http, user, app_client)
    successor = _refresh(http, app_client, body["refresh_token"]).json()["refresh_token"]
    revoked = http.post(
        "/oauth2/revoke",
        data={"token": successor, "token_type_hint": "refresh_token"},
        auth=app_client,
    )
    assert revoked.status_code == 200
    assert _refresh(http, app_client, successor).json()["error"] == "invalid_grant"
    introspected = http.post(
        "/oauth2/introspect",
        data={"token": successor, "token_type_hint": "refresh_token"},
        auth=app_client,
    )
    assert introspected.json() == {"active": False}


def test_refresh_token_introspects_for_its_own_client_only(
    http: TestClient, user: str, app_client: tuple[str, str], make_client: MakeClient
) -> None:
    body = _offline_tokens(http, user, app_client)
    own = http.post("/oauth2/introspect", data={"token": body["refresh_token"]}, auth=app_client)
    assert own.json()["active"] is True and own.json()["token_type"] == "refresh_token"
    other = make_client(name="resource server")
    foreign = http.post("/oauth2/introspect", data={"token": body["refresh_token"]}, auth=other)  # type: ignore[arg-type]
    assert foreign.json() == {"active": False}


def test_revoking_consent_kills_the_clients_refresh_tokens(
    http: TestClient, user: str, app_client: tuple[str, str]
) -> None:
    body = _offline_tokens(http, user, app_client)
    page = http.get("/account")
    http.post(f"/account/consents/{app_client[0]}/revoke", data={"csrf_token": csrf_of(page.text)})
    assert _refresh(http, app_client, body["refresh_token"]).json()["error"] == "invalid_grant"


def test_sign_out_everywhere_kills_refresh_tokens(
    http: TestClient, user: str, app_client: tuple[str, str]
) -> None:
    body = _offline_tokens(http, user, app_client)
    page = http.get("/account")
    http.post("/account/sessions/revoke-all", data={"csrf_token": csrf_of(page.text)})
    assert _refresh(http, app_client, body["refresh_token"]).json()["error"] == "invalid_grant"
    introspected = http.post(
        "/oauth2/introspect", data={"token": body["access_token"]}, auth=app_client
    )
    assert introspected.json() == {"active": False}


def test_code_replay_also_kills_the_refresh_family(
    http: TestClient, user: str, app_client: tuple[str, str]
) -> None:
    flow = Flow(http, app_client[0], scope="openid offline_access")
    params = callback_params(login_and_consent(http, flow, user))
    first = exchange(http, flow, params["code"], app_client[1]).json()
    assert exchange(http, flow, params["code"], app_client[1]).json()["error"] == "invalid_grant"
    assert _refresh(http, app_client, first["refresh_token"]).json()["error"] == "invalid_grant"


def test_expired_code_is_invalid_grant(
    http: TestClient, user: str, app_client: tuple[str, str], database: Database
) -> None:
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import update

    flow = Flow(http, app_client[0])
    params = callback_params(login_and_consent(http, flow, user))
    with database.transaction() as session:
        code = session.scalars(select(AuthorizationCode)).one()
        assert (code.expires_at - code.created_at).total_seconds() <= 60
        session.execute(
            update(AuthorizationCode).values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
    assert exchange(http, flow, params["code"], app_client[1]).json()["error"] == "invalid_grant"


def test_discovery_lists_every_grant_and_endpoint(http: TestClient) -> None:
    document = http.get("/.well-known/openid-configuration").json()
    assert set(document["grant_types_supported"]) == {
        "authorization_code",
        "client_credentials",
        "refresh_token",
        "urn:ietf:params:oauth:grant-type:device_code",
    }
    for key in ("userinfo_endpoint", "end_session_endpoint", "device_authorization_endpoint"):
        assert document[key].startswith(ISSUER)
