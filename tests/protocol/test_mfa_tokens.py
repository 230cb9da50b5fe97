"""Two factors at the token endpoint: ``acr`` in every user token, ``mfa_required`` from the
password grant, and the mfa grant that finishes the sign-in with a code."""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import jwt as pyjwt
import pyotp
import pytest
from sqlalchemy import select, update
from starlette.testclient import TestClient

from identity import repositories
from identity.accounts import factors, operators, profile
from identity.audit import RequestContext
from identity.config import Settings
from identity.db import Database
from identity.models import AuditEvent, Client, OneTimeToken, RecoveryCode, User, utcnow
from identity.protocol.mfa_grant import GRANT_TYPE, INVALID_MFA_TOKEN, WRONG_CODE

from ..conftest import remember_secret
from ..web_helpers import PASSWORD
from .test_authorize import Flow, callback_params, exchange, login_and_consent

MakeClient = Callable[..., tuple[str, str | None]]
App = Callable[[Settings], TestClient]
LOA_1, LOA_2 = "urn:identity:loa:1", "urn:identity:loa:2"
CONTEXT = RequestContext(ip="203.0.113.9", user_agent="pytest")


@pytest.fixture
def http(app_for: App, settings_for: Callable[..., Settings]) -> TestClient:
    """The app with the password grant (and so the mfa grant) switched on."""
    return app_for(settings_for(password_grant=True))


def _email(label: str) -> str:
    return f"{label}-{uuid.uuid4().hex[:8]}@example.com"


def _user(http: TestClient, database: Database, email: str) -> uuid.UUID:
    with database.transaction() as session:
        user = operators.create_user(
            http.app.state.accounts,  # type: ignore[attr-defined]
            session,
            email=email,
            name="Ada",
            password=PASSWORD,
            verified=True,
        )
        return user.id


def _enrol(
    http: TestClient, database: Database, user_id: uuid.UUID
) -> tuple[pyotp.TOTP, list[str]]:
    """Turn on an authenticator app (its current code spent); returns it and the recovery
    codes."""
    accounts = http.app.state.accounts  # type: ignore[attr-defined]
    with database.transaction() as session:
        setup = factors.begin_totp(accounts, session, session.get(User, user_id))
    totp = pyotp.TOTP(setup.secret)
    with database.transaction() as session:
        codes = factors.confirm_totp(
            accounts,
            session,
            session.get(User, user_id),
            totp.at(time.time()),
            CONTEXT,
            authenticated_at=accounts.now(),
        )
    return totp, codes


def _next_code(totp: pyotp.TOTP) -> str:
    """A code the app has not seen yet: the next step's, which ±1 step of drift accepts."""
    return str(totp.at(time.time() + 30))


def _wrong_code(totp: pyotp.TOTP) -> str:
    valid = {totp.at(time.time() + seconds) for seconds in (-60, -30, 0, 30, 60)}
    return next(c for c in (f"{n:06d}" for n in range(1_000_000)) if c not in valid)


def _app(make_client: MakeClient, **options: Any) -> str:
    """A public first-party app with the password grant; returns its client_id."""
    options.setdefault("grant_types", ["password", "refresh_token"])
    options.setdefault("scope", "openid email read offline_access")
    client_id, _ = make_client(public=True, first_party=True, **options)
    return client_id


def _password(http: TestClient, client_id: str, email: str, **form: str) -> Any:
    return http.post(
        "/oauth2/token",
        data={
            "grant_type": "password",
            "client_id": client_id,
            "username": email,
            "password": PASSWORD,
            **form,
        },
    )


def _mfa_token(http: TestClient, client_id: str, email: str, **form: str) -> str:
    response = _password(http, client_id, email, **form)
    assert response.status_code == 400, response.text
    token = str(response.json()["mfa_token"])
    remember_secret(token)
    return token


def _mfa(http: TestClient, client_id: str, mfa_token: str, **form: str) -> Any:
    response = http.post(
        "/oauth2/token",
        data={"grant_type": GRANT_TYPE, "client_id": client_id, "mfa_token": mfa_token, **form},
    )
    if response.status_code == 200:
        for name in ("access_token", "refresh_token", "id_token"):
            remember_secret(response.json().get(name))
    return response


def _claims(token: str) -> dict[str, Any]:
    return dict(pyjwt.decode(token, options={"verify_signature": False}))


def _events(database: Database, kind: str) -> list[AuditEvent]:
    with database.transaction() as session:
        return list(session.scalars(select(AuditEvent).where(AuditEvent.type == kind)))


def _invalid_grant(response: Any, description: str) -> None:
    assert response.status_code == 400, response.text
    assert response.json() == {"error": "invalid_grant", "error_description": description}


# -- acr in every user token -------------------------------------------------------------------


def test_password_only_code_flow_gives_acr_level_1_with_amr_pwd(
    app_for: App, settings: Settings, user: str, make_client: MakeClient
) -> None:
    http = app_for(settings)
    client_id, secret = make_client(
        redirect_uris=["https://app.example.com/callback"],
        grant_types=["authorization_code"],
        scope="read",
    )
    flow = Flow(http, client_id)
    params = callback_params(login_and_consent(http, flow, user))
    body = exchange(http, flow, params["code"], secret or "").json()
    id_token = _claims(body["id_token"])
    assert id_token["amr"] == ["pwd"] and id_token["acr"] == LOA_1
    access = _claims(body["access_token"])
    assert access["acr"] == LOA_1 and access["auth_time"] == id_token["auth_time"]


def test_client_credentials_tokens_carry_no_acr(
    app_for: App, settings: Settings, make_client: MakeClient
) -> None:
    http = app_for(settings)
    client_id, secret = make_client(grant_types=["client_credentials"], scope="read")
    response = http.post(
        "/oauth2/token", data={"grant_type": "client_credentials"}, auth=(client_id, secret or "")
    )
    claims = _claims(response.json()["access_token"])
    assert "acr" not in claims and "auth_time" not in claims


def test_discovery_lists_the_acr_values_and_the_mfa_grant_beside_the_password_grant(
    http: TestClient,
) -> None:
    document = http.get("/.well-known/openid-configuration").json()
    assert document["acr_values_supported"] == [LOA_1, LOA_2]
    assert "acr" in document["claims_supported"]
    assert {"password", GRANT_TYPE} <= set(document["grant_types_supported"])


def test_without_the_password_grant_the_mfa_grant_is_neither_listed_nor_served(
    app_for: App, settings: Settings, make_client: MakeClient
) -> None:
    http = app_for(settings)
    document = http.get("/.well-known/oauth-authorization-server").json()
    assert GRANT_TYPE not in document["grant_types_supported"]
    response = _mfa(http, _app(make_client), "x" * 43, otp="123456")
    assert response.json()["error"] == "unsupported_grant_type"


# -- the password grant's answer ----------------------------------------------------------------


def test_password_alone_for_an_account_with_totp_is_mfa_required_with_an_mfa_token(
    http: TestClient, make_client: MakeClient, database: Database
) -> None:
    email = _email("two")
    user_id = _user(http, database, email)
    _enrol(http, database, user_id)
    client_id = _app(make_client)
    response = _password(http, client_id, email, scope="openid read")
    assert response.status_code == 400
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["error"] == "invalid_grant"
    assert body["error_description"].startswith("mfa_required")
    assert set(body) == {"error", "error_description", "mfa_token"}
    raw = body["mfa_token"]
    remember_secret(raw)
    assert len(raw) >= 43  # 256 bits, base64url
    with database.transaction() as session:
        [row] = session.scalars(select(OneTimeToken).where(OneTimeToken.purpose == "mfa")).all()
        assert row.digest == hashlib.sha256(raw.encode()).hexdigest()
        assert raw not in str(row.data) and row.user_id == user_id
        assert row.data["client_id"] == client_id and row.data["scope"] == "openid read"
        assert row.expires_at - row.created_at == timedelta(minutes=5)
    assert _events(database, "token.issued") == []


def test_require_mfa_client_and_an_account_without_a_factor_is_mfa_required_without_a_token(
    http: TestClient, make_client: MakeClient, database: Database
) -> None:
    email = _email("nofactor")
    user_id = _user(http, database, email)
    client_id = _app(make_client, require_mfa=True)
    response = _password(http, client_id, email)
    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "invalid_grant" and "mfa_token" not in body
    assert body["error_description"].startswith("mfa_required")
    assert "set one up" in body["error_description"]
    assert _events(database, "token.issued") == []
    [refused] = _events(database, "mfa.setup_required")
    assert refused.subject == str(user_id) and refused.client_id == client_id


def test_account_without_a_factor_on_an_ordinary_client_still_signs_in_at_level_1(
    http: TestClient, make_client: MakeClient, database: Database
) -> None:
    email = _email("plain")
    _user(http, database, email)
    response = _password(http, _app(make_client), email, scope="openid read")
    assert response.status_code == 200, response.text
    id_token = _claims(response.json()["id_token"])
    assert id_token["amr"] == ["pwd"] and id_token["acr"] == LOA_1


# -- the mfa grant -----------------------------------------------------------------------------


def test_right_code_gives_the_password_grants_tokens_at_level_2(
    http: TestClient, make_client: MakeClient, database: Database
) -> None:
    email = _email("right")
    user_id = _user(http, database, email)
    totp, _ = _enrol(http, database, user_id)
    client_id = _app(make_client)
    mfa_token = _mfa_token(http, client_id, email, scope="openid email read offline_access")
    response = _mfa(http, client_id, mfa_token, otp=_next_code(totp))
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["scope"] == "openid email read offline_access" and body["refresh_token"]
    id_token = _claims(body["id_token"])
    assert id_token["amr"] == ["pwd", "otp", "mfa"] and id_token["acr"] == LOA_2
    assert id_token["sub"] == str(user_id) and id_token["email"] == email
    access = _claims(body["access_token"])
    assert access["acr"] == LOA_2 and access["sub"] == str(user_id)
    assert abs(access["auth_time"] - time.time()) < 60
    [issued] = _events(database, "token.issued")
    assert issued.detail["grant_type"] == GRANT_TYPE and issued.subject == str(user_id)
    assert [e.detail for e in _events(database, "mfa.used")] == [{"factor": "totp"}]
    # The refresh token carries the sign-in on: its access tokens say level 2 too.
    refreshed = http.post(
        "/oauth2/token",
        data={
            "grant_type": "refresh_token",
            "client_id": client_id,
            "refresh_token": body["refresh_token"],
        },
    )
    assert refreshed.status_code == 200, refreshed.text
    remember_secret(refreshed.json()["refresh_token"])
    assert _claims(refreshed.json()["access_token"])["acr"] == LOA_2


def _confidential_mfa_tokens(
    http: TestClient, make_client: MakeClient, database: Database, label: str
) -> tuple[str, str, dict[str, Any]]:
    """A confidential first-party app signs a two-factor user in: (client_id, secret, body)."""
    email = _email(label)
    totp, _ = _enrol(http, database, _user(http, database, email))
    client_id, secret = make_client(grant_types=["password"], scope="read", first_party=True)
    auth = (client_id, secret or "")
    form = {"grant_type": "password", "username": email, "password": PASSWORD}
    mfa_token = http.post("/oauth2/token", data=form, auth=auth).json()["mfa_token"]
    remember_secret(mfa_token)
    form = {"grant_type": GRANT_TYPE, "mfa_token": mfa_token, "otp": _next_code(totp)}
    response = http.post("/oauth2/token", data=form, auth=auth)
    assert response.status_code == 200, response.text
    remember_secret(response.json()["access_token"])
    return client_id, secret or "", response.json()


def test_introspection_tells_a_user_tokens_acr_and_auth_time(
    http: TestClient, make_client: MakeClient, database: Database
) -> None:
    client_id, secret, body = _confidential_mfa_tokens(http, make_client, database, "intro")
    answer = http.post(
        "/oauth2/introspect", data={"token": body["access_token"]}, auth=(client_id, secret)
    ).json()
    assert answer["active"] is True and answer["acr"] == LOA_2
    assert answer["auth_time"] == _claims(body["access_token"])["auth_time"]


def test_wrong_code_is_invalid_grant_and_the_mfa_token_stays_usable(
    http: TestClient, make_client: MakeClient, database: Database
) -> None:
    email = _email("wrongcode")
    user_id = _user(http, database, email)
    totp, _ = _enrol(http, database, user_id)
    client_id = _app(make_client)
    mfa_token = _mfa_token(http, client_id, email)
    _invalid_grant(_mfa(http, client_id, mfa_token, otp=_wrong_code(totp)), WRONG_CODE)
    [failed] = _events(database, "mfa.failed")
    assert failed.subject == str(user_id) and failed.detail == {"reason": "wrong_code"}
    assert _mfa(http, client_id, mfa_token, otp=_next_code(totp)).status_code == 200


def test_the_mfa_token_works_once(
    http: TestClient, make_client: MakeClient, database: Database
) -> None:
    email = _email("once")
    user_id = _user(http, database, email)
    totp, recovery_codes = _enrol(http, database, user_id)
    client_id = _app(make_client)
    mfa_token = _mfa_token(http, client_id, email)
    assert _mfa(http, client_id, mfa_token, otp=_next_code(totp)).status_code == 200
    again = _mfa(http, client_id, mfa_token, recovery_code=recovery_codes[0])
    _invalid_grant(again, INVALID_MFA_TOKEN)
    with database.transaction() as session:  # refused before the recovery code was looked at
        spent = session.scalars(select(RecoveryCode).where(RecoveryCode.used_at.is_not(None)))
        assert spent.all() == []
    assert len(_events(database, "token.issued")) == 1


def test_an_expired_mfa_token_is_refused(
    http: TestClient, make_client: MakeClient, database: Database
) -> None:
    email = _email("expired")
    user_id = _user(http, database, email)
    totp, _ = _enrol(http, database, user_id)
    client_id = _app(make_client)
    mfa_token = _mfa_token(http, client_id, email)
    with database.transaction() as session:
        session.execute(update(OneTimeToken).values(expires_at=utcnow() - timedelta(seconds=1)))
    _invalid_grant(_mfa(http, client_id, mfa_token, otp=_next_code(totp)), INVALID_MFA_TOKEN)
    assert _events(database, "mfa.used") == []  # the code was not spent on it


def test_another_client_cannot_use_the_mfa_token(
    http: TestClient, make_client: MakeClient, database: Database
) -> None:
    email = _email("other")
    user_id = _user(http, database, email)
    totp, _ = _enrol(http, database, user_id)
    client_id, other = _app(make_client), _app(make_client)
    mfa_token = _mfa_token(http, client_id, email)
    _invalid_grant(_mfa(http, other, mfa_token, otp=_next_code(totp)), INVALID_MFA_TOKEN)
    assert _mfa(http, client_id, mfa_token, otp=_next_code(totp)).status_code == 200


def test_a_confidential_client_must_authenticate_to_use_its_mfa_token(
    http: TestClient, make_client: MakeClient, database: Database
) -> None:
    email = _email("confidential")
    user_id = _user(http, database, email)
    totp, _ = _enrol(http, database, user_id)
    client_id, secret = make_client(grant_types=["password"], scope="read", first_party=True)
    response = http.post(
        "/oauth2/token",
        data={"grant_type": "password", "username": email, "password": PASSWORD},
        auth=(client_id, secret or ""),
    )
    mfa_token = response.json()["mfa_token"]
    remember_secret(mfa_token)
    form = {"grant_type": GRANT_TYPE, "mfa_token": mfa_token, "otp": _next_code(totp)}
    unauthenticated = http.post("/oauth2/token", data={**form, "client_id": client_id})
    assert unauthenticated.json()["error"] == "invalid_client"
    wrong = http.post("/oauth2/token", data=form, auth=(client_id, "not-the-secret"))
    assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_client"
    assert _events(database, "mfa.used") == []  # refused before the code was looked at
    right = http.post("/oauth2/token", data=form, auth=(client_id, secret or ""))
    assert right.status_code == 200, right.text
    remember_secret(right.json()["access_token"])
    assert "id_token" not in right.json()  # no openid granted


def test_a_recovery_code_works_once(
    http: TestClient, make_client: MakeClient, database: Database
) -> None:
    email = _email("recovery")
    user_id = _user(http, database, email)
    _, recovery_codes = _enrol(http, database, user_id)
    client_id = _app(make_client)
    first = _mfa(
        http,
        client_id,
        _mfa_token(http, client_id, email, scope="openid"),
        recovery_code=recovery_codes[3],
    )
    assert first.status_code == 200, first.text
    id_token = _claims(first.json()["id_token"])
    assert id_token["amr"] == ["pwd", "otp", "mfa"] and id_token["acr"] == LOA_2
    again = _mfa(
        http, client_id, _mfa_token(http, client_id, email), recovery_code=recovery_codes[3]
    )
    _invalid_grant(again, WRONG_CODE)
    assert len(_events(database, "mfa.recovery_code_used")) == 1


def test_repeated_wrong_codes_answer_429_with_retry_after(
    http: TestClient, make_client: MakeClient, database: Database
) -> None:
    email = _email("throttled")
    user_id = _user(http, database, email)
    totp, _ = _enrol(http, database, user_id)
    client_id = _app(make_client)
    mfa_token = _mfa_token(http, client_id, email)
    wrong = _wrong_code(totp)
    statuses = [_mfa(http, client_id, mfa_token, otp=wrong).status_code for _ in range(7)]
    assert statuses[0] == 400 and statuses[-1] == 429
    throttled = _mfa(http, client_id, mfa_token, otp=_next_code(totp))  # the right one waits
    assert throttled.status_code == 429
    assert throttled.json()["error"] == "slow_down"
    assert int(throttled.headers["retry-after"]) > 0
    assert _events(database, "token.issued") == []


def test_a_password_changed_since_voids_the_mfa_token(
    http: TestClient, make_client: MakeClient, database: Database
) -> None:
    email = _email("reset")
    user_id = _user(http, database, email)
    totp, _ = _enrol(http, database, user_id)
    client_id = _app(make_client)
    mfa_token = _mfa_token(http, client_id, email)
    hasher = http.app.state.accounts.hasher  # type: ignore[attr-defined]
    with database.transaction() as session:
        session.execute(
            update(User)
            .where(User.id == user_id)
            .values(password_hash=hasher.hash("a-new-password-after-reset"))
        )
    _invalid_grant(_mfa(http, client_id, mfa_token, otp=_next_code(totp)), INVALID_MFA_TOKEN)


@pytest.mark.parametrize(
    "form",
    [{}, {"otp": "123456", "recovery_code": "abcde-fghij"}, {"otp": ""}],
    ids=["neither", "both", "empty-otp"],
)
def test_the_mfa_grant_needs_exactly_one_code(
    http: TestClient, make_client: MakeClient, form: dict[str, str]
) -> None:
    response = _mfa(http, _app(make_client), "x" * 43, **form)
    assert response.status_code == 400 and response.json()["error"] == "invalid_request"


def test_the_mfa_grant_needs_an_mfa_token(http: TestClient, make_client: MakeClient) -> None:
    response = http.post(
        "/oauth2/token",
        data={"grant_type": GRANT_TYPE, "client_id": _app(make_client), "otp": "123456"},
    )
    assert response.status_code == 400 and response.json()["error"] == "invalid_request"


def test_a_client_without_the_password_grant_may_not_use_the_mfa_grant(
    http: TestClient, make_client: MakeClient
) -> None:
    client_id, secret = make_client(grant_types=["client_credentials"], first_party=True)
    response = http.post(
        "/oauth2/token",
        data={"grant_type": GRANT_TYPE, "mfa_token": "x" * 43, "otp": "123456"},
        auth=(client_id, secret or ""),
    )
    assert response.status_code == 400 and response.json()["error"] == "unauthorized_client"


def test_a_refresh_family_begun_with_one_factor_stops_once_its_client_requires_mfa(
    app_for: App,
    settings_for: Callable[..., Settings],
    make_client: MakeClient,
    database: Database,
) -> None:
    # Every request asks whether cached clients changed: the flag is seen at once.
    http = app_for(settings_for(password_grant=True, cache_check_seconds=0))
    email = _email("late-flag")
    _user(http, database, email)
    client_id = _app(make_client)
    response = _password(http, client_id, email, scope="openid read offline_access")
    assert response.status_code == 200, response.text
    refresh_token = response.json()["refresh_token"]
    remember_secret(refresh_token)
    with database.transaction() as session:
        client = session.get(Client, client_id)
        assert client is not None
        client.require_mfa = True
        repositories.bump_cache_generation(session, "clients")  # as `clients update` does
    refused = http.post(
        "/oauth2/token",
        data={
            "grant_type": "refresh_token",
            "client_id": client_id,
            "refresh_token": refresh_token,
        },
    )
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"] == "invalid_grant"
    assert refused.json()["error_description"].startswith("mfa_required")


def test_signing_out_everywhere_voids_a_waiting_mfa_token(
    http: TestClient, make_client: MakeClient, database: Database
) -> None:
    email = _email("sign-out")
    user_id = _user(http, database, email)
    totp, _ = _enrol(http, database, user_id)
    client_id = _app(make_client)
    mfa_token = _mfa_token(http, client_id, email, scope="openid read")
    accounts = http.app.state.accounts  # type: ignore[attr-defined]
    with database.transaction() as session:
        profile.revoke_everything(accounts, session, session.get(User, user_id), CONTEXT)
    response = _mfa(http, client_id, mfa_token, otp=_next_code(totp))
    assert response.status_code == 400, response.text
    assert response.json()["error_description"] == INVALID_MFA_TOKEN
