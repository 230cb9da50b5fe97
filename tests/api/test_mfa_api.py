"""The second-factor API (/api/v1/me/mfa): an authenticator app's whole life through JSON,
a recent sign-in (or the password) for the changes that weaken an account, problem details
on every refusal, and every answer as the OpenAPI document describes it."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import jsonschema_rs
import jwt
import pyotp
import pytest
from sqlalchemy import select, update
from starlette.testclient import TestClient

from identity.accounts import operators
from identity.api.routes import OPERATIONS
from identity.config import Settings
from identity.db import Database
from identity.models import (
    AuditEvent,
    OutboxMessage,
    Passkey,
    RecoveryCode,
    RefreshToken,
    TotpFactor,
    utcnow,
)
from identity.openapi.document import openapi_document
from tests.conftest import remember_secret
from tests.web_helpers import PASSWORD

PROBLEM = "application/problem+json"
MFA = "/api/v1/me/mfa"
SCOPE = "openid account offline_access"
REAUTHENTICATION = "urn:identity:problem:reauthentication-required"
CODE_SHAPE = re.compile(r"[a-z0-9]{5}-[a-z0-9]{5}")
WRONG_PASSWORD = "not-the-password-at-all"


@pytest.fixture
def http(app_for: Callable[[Settings], TestClient], settings_for: Callable[..., Settings]) -> Any:
    return app_for(settings_for(password_grant=True))


@pytest.fixture
def app_client(make_client: Callable[..., tuple[str, str | None]]) -> str:
    """A first-party public app with the password and refresh grants."""
    client_id, _ = make_client(
        public=True,
        first_party=True,
        grant_types=["password", "refresh_token"],
        scope=SCOPE,
    )
    return client_id


@pytest.fixture
def document(http: TestClient) -> dict[str, Any]:
    return openapi_document(http.app.state.settings, OPERATIONS)  # type: ignore[attr-defined]


class Account:
    """A verified user of the app, with a token from a sign-in just now."""

    def __init__(self, http: TestClient, database: Database, client_id: str) -> None:
        self.http, self.database, self.client_id = http, database, client_id
        self.email = f"mfa-{uuid.uuid4().hex[:8]}@example.com"
        with database.transaction() as session:
            user = operators.create_user(
                http.app.state.accounts,  # type: ignore[attr-defined]
                session,
                email=self.email,
                name="Ada",
                password=PASSWORD,
                verified=True,
            )
            self.id = user.id
        self.tokens = self._token({"username": self.email, "password": PASSWORD})

    def _token(self, grant: dict[str, str]) -> dict[str, Any]:
        grant_type = "refresh_token" if "refresh_token" in grant else "password"
        response = self.http.post(
            "/oauth2/token",
            data={"grant_type": grant_type, "client_id": self.client_id, "scope": SCOPE, **grant},
        )
        assert response.status_code == 200, response.text
        return dict(response.json())

    def aged_token(self) -> dict[str, Any]:
        """A token of the same sign-in, refreshed after that sign-in is 10 minutes old: the
        refresh token carries its ``auth_time`` into every access token it gives."""
        with self.database.transaction() as session:
            session.execute(
                update(RefreshToken)
                .where(RefreshToken.user_id == self.id)
                .values(auth_time=utcnow() - timedelta(minutes=10))
            )
        self.tokens = self._token({"refresh_token": self.tokens["refresh_token"]})
        claims = jwt.decode(self.tokens["access_token"], options={"verify_signature": False})
        assert utcnow().timestamp() - claims["auth_time"] > 9 * 60
        return self.tokens

    def call(self, method: str, path: str = "", **kwargs: Any) -> Any:
        headers = {"Authorization": f"Bearer {self.tokens['access_token']}"}
        return self.http.request(method, MFA + path, headers=headers, **kwargs)

    def enrol(self) -> tuple[pyotp.TOTP, list[str]]:
        """Set up an authenticator app through the API; its TOTP and the recovery codes."""
        started = self.call("POST", "/totp")
        assert started.status_code == 201, started.text
        totp = pyotp.TOTP(started.json()["secret"])
        remember_secret(totp.secret)
        confirmed = self.call("POST", "/totp/confirm", json={"code": totp.now()})
        assert confirmed.status_code == 200, confirmed.text
        codes = list(confirmed.json()["recovery_codes"])
        for code in codes:
            remember_secret(code)
        return totp, codes

    def audit_types(self) -> list[str]:
        with self.database.transaction() as session:
            query = select(AuditEvent.type).where(AuditEvent.subject == str(self.id))
            return list(session.scalars(query.order_by(AuditEvent.id)))

    def mails(self) -> list[str]:
        with self.database.transaction() as session:
            query = select(OutboxMessage.template).where(OutboxMessage.to_address == self.email)
            return list(session.scalars(query.order_by(OutboxMessage.id)))


@pytest.fixture
def account(http: TestClient, database: Database, app_client: str) -> Account:
    return Account(http, database, app_client)


def _conforms(document: dict[str, Any], method: str, path: str, response: Any) -> Any:
    """Assert the answer is one the document lists for the operation, its body valid
    against the schema given there; return the body."""
    spec = document["paths"][MFA + path][method.lower()]["responses"].get(str(response.status_code))
    assert spec is not None, f"{method} {path}: undocumented {response.status_code}"
    if "content" not in spec:
        assert response.content == b""
        return None
    media = response.headers["content-type"].split(";")[0]
    assert media in spec["content"], f"{method} {path}: {media}"
    root = {"components": document["components"], **spec["content"][media]["schema"]}
    body = response.json()
    errors = [str(e) for e in jsonschema_rs.Draft202012Validator(root).iter_errors(body)]
    assert errors == [], errors
    return body


def _problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    assert response.headers["cache-control"].startswith("no-store")
    body = dict(response.json())
    assert body["status"] == status and body["title"] and body["type"] and body["detail"]
    return body


def _fields(problem: dict[str, Any]) -> set[str]:
    return {error["field"] for error in problem.get("errors", [])}


# -- setting up an authenticator app ----------------------------------------------------------


def test_an_account_without_factors_shows_none(account: Account, document: dict[str, Any]) -> None:
    response = account.call("GET")
    assert response.status_code == 200
    assert _conforms(document, "GET", "", response) == {
        "totp": {"enabled": False, "added_at": None, "last_used_at": None},
        "recovery_codes": {"remaining": 0},
        "passkeys": [],
    }


def test_totp_setup_confirm_and_status_through_the_api(
    account: Account, document: dict[str, Any]
) -> None:
    started = account.call("POST", "/totp")
    assert started.status_code == 201 and started.headers["cache-control"].startswith("no-store")
    setup = _conforms(document, "POST", "/totp", started)
    remember_secret(setup["secret"])
    assert setup["otpauth_uri"].startswith("otpauth://totp/")
    assert f"secret={setup['secret']}" in setup["otpauth_uri"]
    # Asked again before confirming: the same app is still waiting, not a second seed.
    assert account.call("POST", "/totp").json()["secret"] == setup["secret"]
    assert account.call("GET").json()["totp"]["enabled"] is False

    totp = pyotp.TOTP(setup["secret"])
    confirmed = account.call("POST", "/totp/confirm", json={"code": totp.now()})
    assert confirmed.status_code == 200, confirmed.text
    codes = _conforms(document, "POST", "/totp/confirm", confirmed)["recovery_codes"]
    assert len(codes) == 10 and len(set(codes)) == 10
    assert all(CODE_SHAPE.fullmatch(code) for code in codes)

    status = _conforms(document, "GET", "", account.call("GET"))
    assert status["totp"]["enabled"] is True and status["totp"]["added_at"] is not None
    assert status["recovery_codes"] == {"remaining": 10} and status["passkeys"] == []
    assert setup["secret"] not in account.call("GET").text
    assert "mfa.added" in account.audit_types()
    assert "second_factor_added" in account.mails()


def test_a_second_setup_is_409_while_an_app_is_on(
    account: Account, document: dict[str, Any]
) -> None:
    account.enrol()
    again = account.call("POST", "/totp")
    problem = _problem(again, 409)
    assert problem["type"].endswith("totp-already-enabled")
    _conforms(document, "POST", "/totp", again)
    confirm_again = account.call("POST", "/totp/confirm", json={"code": "123456"})
    assert _problem(confirm_again, 409)["type"].endswith("totp-already-enabled")


def test_confirming_with_no_setup_waiting_is_409(
    account: Account, document: dict[str, Any]
) -> None:
    response = account.call("POST", "/totp/confirm", json={"code": "123456"})
    assert _problem(response, 409)["type"].endswith("totp-setup-not-started")
    _conforms(document, "POST", "/totp/confirm", response)


def test_a_wrong_code_is_a_field_error_on_code_and_leaves_the_app_off(
    account: Account, document: dict[str, Any]
) -> None:
    started = account.call("POST", "/totp").json()
    remember_secret(started["secret"])
    right = pyotp.TOTP(started["secret"]).now()
    wrong = f"{(int(right) + 1) % 1_000_000:06d}"
    response = account.call("POST", "/totp/confirm", json={"code": wrong})
    problem = _problem(response, 400)
    assert problem["type"].endswith("invalid-code") and _fields(problem) == {"code"}
    _conforms(document, "POST", "/totp/confirm", response)
    assert account.call("GET").json()["totp"]["enabled"] is False
    assert "mfa.failed" in account.audit_types()


@pytest.mark.parametrize(
    "body", [{}, {"code": 123456}, {"code": None}, {"code": "123456", "extra": "x"}]
)
def test_a_malformed_confirm_body_is_invalid_input(account: Account, body: dict[str, Any]) -> None:
    account.call("POST", "/totp")
    problem = _problem(account.call("POST", "/totp/confirm", json=body), 400)
    assert problem["type"].endswith("invalid-input") and problem["errors"]


def test_wrong_codes_are_throttled_with_retry_after(
    account: Account, document: dict[str, Any]
) -> None:
    started = account.call("POST", "/totp").json()
    remember_secret(started["secret"])
    totp = pyotp.TOTP(started["secret"])
    for _ in range(5):
        _problem(account.call("POST", "/totp/confirm", json={"code": "abcdef"}), 400)
    throttled = account.call("POST", "/totp/confirm", json={"code": totp.now()})
    _problem(throttled, 429)
    assert int(throttled.headers["retry-after"]) >= 1
    _conforms(document, "POST", "/totp/confirm", throttled)
    assert account.call("GET").json()["totp"]["enabled"] is False  # even the right code waits


# -- the changes that need a recent sign-in ---------------------------------------------------


def test_a_fresh_sign_in_regenerates_codes_without_the_password(
    account: Account, database: Database, document: dict[str, Any]
) -> None:
    _, old_codes = account.enrol()
    response = account.call("POST", "/recovery-codes")
    codes = _conforms(document, "POST", "/recovery-codes", response)["recovery_codes"]
    assert response.status_code == 200 and len(codes) == 10
    assert not set(codes) & set(old_codes)
    assert "mfa.recovery_codes_regenerated" in account.audit_types()
    with database.transaction() as session:
        rows = session.scalars(select(RecoveryCode).where(RecoveryCode.user_id == account.id))
        assert len(list(rows)) == 10  # the old set is gone, not kept beside the new one


def test_an_old_sign_in_needs_the_password_to_regenerate_codes(
    account: Account, document: dict[str, Any]
) -> None:
    account.enrol()
    account.aged_token()

    refused = account.call("POST", "/recovery-codes")
    problem = _problem(refused, 403)
    assert problem["type"] == REAUTHENTICATION and problem["title"] == "Reauthentication required"
    assert _fields(problem) == {"password"}
    _conforms(document, "POST", "/recovery-codes", refused)

    wrong = account.call("POST", "/recovery-codes", json={"password": WRONG_PASSWORD})
    assert _fields(_problem(wrong, 400)) == {"password"}
    _conforms(document, "POST", "/recovery-codes", wrong)
    assert "reauthentication.failed" in account.audit_types()
    assert "mfa.recovery_codes_regenerated" not in account.audit_types()

    right = account.call("POST", "/recovery-codes", json={"password": PASSWORD})
    assert right.status_code == 200, right.text
    assert len(right.json()["recovery_codes"]) == 10
    assert "mfa.recovery_codes_regenerated" in account.audit_types()


def test_regenerating_codes_without_a_factor_is_409(account: Account) -> None:
    problem = _problem(account.call("POST", "/recovery-codes"), 409)
    assert problem["type"].endswith("no-second-factor")


def test_an_old_sign_in_needs_the_password_to_remove_the_app(
    account: Account, document: dict[str, Any]
) -> None:
    account.enrol()
    account.aged_token()

    refused = account.call("DELETE", "/totp")
    assert _problem(refused, 403)["type"] == REAUTHENTICATION
    _conforms(document, "DELETE", "/totp", refused)
    wrong = account.call("DELETE", "/totp", json={"password": WRONG_PASSWORD})
    assert _fields(_problem(wrong, 400)) == {"password"}
    assert account.call("GET").json()["totp"]["enabled"] is True

    removed = account.call("DELETE", "/totp", json={"password": PASSWORD})
    assert removed.status_code == 204 and removed.content == b""
    _conforms(document, "DELETE", "/totp", removed)
    status = account.call("GET").json()
    assert status["totp"]["enabled"] is False and status["recovery_codes"]["remaining"] == 0
    assert "mfa.removed" in account.audit_types()
    assert "second_factor_removed" in account.mails()


def test_a_fresh_sign_in_removes_the_app_without_the_password(
    account: Account, database: Database
) -> None:
    account.enrol()
    assert account.call("DELETE", "/totp").status_code == 204
    with database.transaction() as session:
        assert session.get(TotpFactor, account.id) is None
    # Nothing left to remove: the app can be set up anew, with a new seed.
    assert _problem(account.call("DELETE", "/totp"), 404)
    assert account.call("POST", "/totp").status_code == 201


def test_a_setup_never_confirmed_is_dropped_without_the_password(
    account: Account, database: Database
) -> None:
    first = account.call("POST", "/totp").json()["secret"]
    remember_secret(first)
    account.aged_token()
    assert account.call("DELETE", "/totp").status_code == 204
    with database.transaction() as session:
        assert session.get(TotpFactor, account.id) is None
    second = account.call("POST", "/totp").json()["secret"]
    remember_secret(second)
    assert second != first


def test_wrong_passwords_are_throttled_with_retry_after(
    account: Account, document: dict[str, Any]
) -> None:
    account.enrol()
    account.aged_token()
    for _ in range(10):
        _problem(account.call("DELETE", "/totp", json={"password": WRONG_PASSWORD}), 400)
    throttled = account.call("DELETE", "/totp", json={"password": PASSWORD})
    _problem(throttled, 429)
    assert int(throttled.headers["retry-after"]) >= 1
    _conforms(document, "DELETE", "/totp", throttled)
    assert account.call("GET").json()["totp"]["enabled"] is True


# -- authentication and the document ----------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", ""),
        ("POST", "/totp"),
        ("POST", "/totp/confirm"),
        ("DELETE", "/totp"),
        ("POST", "/recovery-codes"),
    ],
)
def test_every_mfa_operation_needs_a_bearer_token(
    http: TestClient, document: dict[str, Any], method: str, path: str
) -> None:
    response = http.request(method, MFA + path)
    _problem(response, 401)
    assert "www-authenticate" in response.headers
    _conforms(document, method, path, response)


def test_the_document_lists_the_mfa_operations(document: dict[str, Any]) -> None:
    paths = document["paths"]
    assert set(paths[MFA]) == {"get"}
    assert set(paths[MFA + "/totp"]) == {"post", "delete"}
    assert set(paths[MFA + "/totp/confirm"]) == {"post"}
    assert set(paths[MFA + "/recovery-codes"]) == {"post"}
    assert "201" in paths[MFA + "/totp"]["post"]["responses"]
    assert {"403", "429"} <= set(paths[MFA + "/recovery-codes"]["post"]["responses"])
    passkeys = document["components"]["schemas"]["SecondFactors"]["properties"]["passkeys"]
    assert passkeys["type"] == "array"


def test_an_old_sign_in_needs_the_password_to_add_an_app(
    account: Account, document: dict[str, Any]
) -> None:
    account.aged_token()
    started = account.call("POST", "/totp")
    assert started.status_code == 201, started.text
    totp = pyotp.TOTP(started.json()["secret"])
    remember_secret(totp.secret)
    refused = account.call("POST", "/totp/confirm", json={"code": totp.now()})
    problem = _problem(refused, 403)
    assert problem["type"] == REAUTHENTICATION
    _conforms(document, "POST", "/totp/confirm", refused)
    assert not account.call("GET").json()["totp"]["enabled"]
    right = account.call("POST", "/totp/confirm", json={"code": totp.now(), "password": PASSWORD})
    assert right.status_code == 200, right.text
    assert account.call("GET").json()["totp"]["enabled"]


# -- passkeys (registered in the browser; listed, renamed and removed here) -------------------


def _stored_passkey(account: Account, name: str = "Laptop") -> int:
    """A passkey row as a browser's registration leaves it (the ceremony is
    tests/web/test_passkey_endpoints.py's business)."""
    with account.database.transaction() as session:
        row = Passkey(
            user_id=account.id,
            credential_id=f"cred-{uuid.uuid4().hex}",
            public_key=b"\x01",
            sign_count=0,
            aaguid="00000000-0000-0000-0000-000000000000",
            name=name,
        )
        session.add(row)
        session.flush()
        return row.id


def test_passkeys_are_listed_renamed_and_removed(
    account: Account, document: dict[str, Any]
) -> None:
    passkey_id = _stored_passkey(account)
    listed = _conforms(document, "GET", "", account.call("GET"))
    assert [p["name"] for p in listed["passkeys"]] == ["Laptop"]
    assert listed["passkeys"][0]["id"] == str(passkey_id)
    renamed = account.call("PATCH", f"/passkeys/{passkey_id}", json={"name": " Phone "})
    assert renamed.status_code == 200, renamed.text
    assert _conforms(document, "PATCH", "/passkeys/{passkey_id}", renamed)["name"] == "Phone"
    bad = account.call("PATCH", f"/passkeys/{passkey_id}", json={"name": "a\nb"})
    assert _fields(_problem(bad, 400)) == {"name"}
    removed = account.call("DELETE", f"/passkeys/{passkey_id}")
    assert removed.status_code == 204, removed.text
    assert account.call("GET").json()["passkeys"] == []
    assert "mfa.removed" in account.audit_types()


def test_removing_a_passkey_needs_a_recent_sign_in(
    account: Account, document: dict[str, Any]
) -> None:
    passkey_id = _stored_passkey(account)
    account.aged_token()
    refused = account.call("DELETE", f"/passkeys/{passkey_id}")
    assert _problem(refused, 403)["type"] == REAUTHENTICATION
    _conforms(document, "DELETE", "/passkeys/{passkey_id}", refused)
    right = account.call("DELETE", f"/passkeys/{passkey_id}", json={"password": PASSWORD})
    assert right.status_code == 204, right.text


@pytest.mark.parametrize("passkey_id", ["999999", "abc", "1" * 40])
def test_a_passkey_that_is_not_the_accounts_is_404(account: Account, passkey_id: str) -> None:
    _problem(account.call("PATCH", f"/passkeys/{passkey_id}", json={"name": "Mine"}), 404)
    _problem(account.call("DELETE", f"/passkeys/{passkey_id}"), 404)
