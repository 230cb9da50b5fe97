"""Logs: one JSON access line per request, request ids, and never a secret in any line."""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from identity import logs
from identity.app import create_app
from identity.config import Settings
from identity.db import Database
from identity.logs import JsonFormatter, TextFormatter, logging_config

from .conftest import ISSUER, MailSink
from .web_helpers import PASSWORD, Browser, code_from, csrf_of, link_from

MakeClient = Callable[..., tuple[str, str | None]]
_JSON = JsonFormatter()
_TEXT = TextFormatter()


def _access_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    records = [r for r in caplog.records if r.name == "identity.access"]
    return [json.loads(_JSON.format(record)) for record in records]


@pytest.fixture
def access(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="identity.access")
    return caplog


def test_a_request_writes_exactly_one_json_access_line(
    http: TestClient, access: pytest.LogCaptureFixture
) -> None:
    access.clear()
    response = http.get("/.well-known/jwks.json", headers={"User-Agent": "probe/1.0"})
    (line,) = _access_lines(access)
    assert line["logger"] == "identity.access" and line["level"] == "INFO"
    assert line["method"] == "GET" and line["route"] == "/.well-known/jwks.json"
    assert line["status"] == 200 and isinstance(line["latency_ms"], float)
    assert line["client_ip"] == "testclient" and line["user_agent"] == "probe/1.0"
    assert re.fullmatch(r"[0-9a-f]{32}", line["request_id"])
    assert response.headers["x-request-id"] == line["request_id"]


def test_the_access_line_has_the_route_template_and_no_query_string(
    http: TestClient, access: pytest.LogCaptureFixture
) -> None:
    access.clear()
    http.get("/reset-password?token=secret-looking-value")
    http.post("/account/sessions/abc123/revoke", follow_redirects=False)
    reset, revoke = _access_lines(access)
    assert reset["path"] == "/reset-password" and "secret-looking-value" not in json.dumps(reset)
    assert revoke["route"] == "/account/sessions/{public_id}/revoke"


def test_an_untrusted_peer_cannot_choose_the_request_id(
    http: TestClient, access: pytest.LogCaptureFixture
) -> None:
    access.clear()
    response = http.get("/healthz", headers={"X-Request-ID": "chosen-by-client"})
    assert response.headers["x-request-id"] != "chosen-by-client"
    assert _access_lines(access)[0]["request_id"] == response.headers["x-request-id"]


@pytest.fixture
def behind_proxy(settings_for: Callable[..., Settings], database: Database) -> Iterator[TestClient]:
    settings = settings_for(trusted_proxies=(ipaddress.ip_network("127.0.0.0/8"),))
    with TestClient(create_app(settings), base_url=ISSUER, client=("127.0.0.1", 50000)) as client:
        yield client


def test_a_trusted_proxy_request_id_is_kept(
    behind_proxy: TestClient, access: pytest.LogCaptureFixture
) -> None:
    access.clear()
    response = behind_proxy.get(
        "/healthz", headers={"X-Request-ID": "edge-4f2a", "X-Forwarded-For": "198.51.100.7"}
    )
    assert response.headers["x-request-id"] == "edge-4f2a"
    (line,) = _access_lines(access)
    assert line["request_id"] == "edge-4f2a" and line["client_ip"] == "198.51.100.7"


def test_a_malformed_request_id_from_a_trusted_proxy_is_replaced(
    behind_proxy: TestClient,
) -> None:
    response = behind_proxy.get("/healthz", headers={"X-Request-ID": "bad id\twith spaces"})
    assert re.fullmatch(r"[0-9a-f]{32}", response.headers["x-request-id"])


def test_event_lines_inside_a_request_carry_its_request_id(
    http: TestClient, caplog: pytest.LogCaptureFixture, make_client: MakeClient
) -> None:
    caplog.set_level(logging.DEBUG)
    response = http.post("/oauth2/token", data={"grant_type": "client_credentials"})
    request_id = response.headers["x-request-id"]
    lines = [json.loads(_JSON.format(r)) for r in caplog.records if r.name.startswith("identity")]
    assert lines and all(line.get("request_id") == request_id for line in lines)


def test_client_id_and_user_id_reach_the_access_line(
    http: TestClient, access: pytest.LogCaptureFixture, make_client: MakeClient
) -> None:
    client_id, secret = make_client()
    access.clear()
    http.post(
        "/oauth2/token", data={"grant_type": "client_credentials"}, auth=(client_id, secret or "")
    )
    (line,) = _access_lines(access)
    assert line["client_id"] == client_id and line["route"] == "/oauth2/token"


def test_text_format_is_one_plain_line_with_the_request_id(
    http: TestClient, access: pytest.LogCaptureFixture
) -> None:
    access.clear()
    response = http.get("/healthz")
    (record,) = [r for r in access.records if r.name == "identity.access"]
    line = _TEXT.format(record)
    assert "\n" not in line and "GET /healthz 200" in line
    assert f"request_id={response.headers['x-request-id']}" in line


def test_serve_logging_config_turns_off_uvicorn_access_log() -> None:
    config = logging_config("json", "info")
    assert config["formatters"]["default"]["()"] == "identity.logs.JsonFormatter"
    assert config["loggers"]["uvicorn.access"]["propagate"] is False
    assert logging_config("text", "debug")["root"]["level"] == "DEBUG"


def test_log_format_setting_accepts_auto_json_or_text_only() -> None:
    assert Settings.from_env({}).log_format == "auto"
    assert Settings.from_env({"IDENTITY_LOG_FORMAT": "TEXT"}).log_format == "text"
    with pytest.raises(ValueError, match="IDENTITY_LOG_FORMAT"):
        Settings.from_env({"IDENTITY_LOG_FORMAT": "xml"})


def test_auto_log_format_is_text_on_a_terminal_and_json_otherwise() -> None:
    leader, follower = os.openpty()
    reader, writer = os.pipe()
    with open(follower, "w") as terminal, open(writer, "w") as pipe:
        assert logging_config("auto", "info", terminal)["formatters"]["default"]["()"] == (
            "identity.logs.TextFormatter"
        )
        assert logging_config("auto", "info", pipe)["formatters"]["default"]["()"] == (
            "identity.logs.JsonFormatter"
        )
        # Set explicitly, the format is the same wherever stderr goes.
        assert logging_config("json", "info", terminal)["formatters"]["default"]["()"] == (
            "identity.logs.JsonFormatter"
        )
        assert logging_config("text", "info", pipe)["formatters"]["default"]["()"] == (
            "identity.logs.TextFormatter"
        )
    os.close(leader)
    os.close(reader)


# -- no secret in any line ---------------------------------------------------------------------

# The test's own HTTP client and SMTP sink log full URLs and mail bodies: they are not the server.
_CALLER_SIDE = ("httpx", "httpcore", "mail.log", "hpack", "asyncio")


def test_no_secret_of_a_whole_flow_reaches_any_log_line(
    app_for: Callable[[Settings], TestClient],
    settings_for: Callable[..., Settings],
    mail_sink: MailSink,
    make_client: MakeClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="identity")
    http = app_for(settings_for(smtp_url=mail_sink.url, password_grant=True))
    browser = Browser(http)
    email, wrong_password, new_password = (
        "grep@example.com",
        "not-my-Password-991",
        "fresh-Orbit-77",
    )
    secrets: dict[str, str] = {"password": PASSWORD, "wrong password": wrong_password}

    # Sign up, verify with the mailed code, fail a login, log in.
    assert browser.signup(email).status_code == 303
    secrets["verification code"] = code_from(mail_sink, email)
    assert browser.verify(email, secrets["verification code"]).status_code == 303
    assert browser.login(email, wrong_password).status_code == 400
    assert browser.login(email).status_code == 303

    # client_credentials, introspection, revocation.
    client_id, client_secret = make_client(scope="read")
    assert client_secret is not None
    secrets["client secret"] = client_secret
    token = http.post(
        "/oauth2/token", data={"grant_type": "client_credentials"}, auth=(client_id, client_secret)
    ).json()
    secrets["access token"] = token["access_token"]
    introspected = http.post(
        "/oauth2/introspect", data={"token": token["access_token"]}, auth=(client_id, client_secret)
    )
    assert introspected.json()["active"] is True
    # A secret in a query string of /oauth2/* must not reach a line either.
    http.post(f"/oauth2/token?client_secret={client_secret}", data={"grant_type": "password"})

    # The password grant, with a refresh token, then a refresh.
    app_id, app_secret = make_client(
        grant_types=["password", "refresh_token"], scope="openid offline_access", first_party=True
    )
    assert app_secret is not None
    secrets["first-party client secret"] = app_secret
    granted = http.post(
        "/oauth2/token",
        data={
            "grant_type": "password",
            "username": email,
            "password": PASSWORD,
            "scope": "openid offline_access",
        },
        auth=(app_id, app_secret),
    ).json()
    secrets["password-grant access token"] = granted["access_token"]
    secrets["refresh token"] = granted["refresh_token"]
    refreshed = http.post(
        "/oauth2/token",
        data={"grant_type": "refresh_token", "refresh_token": granted["refresh_token"]},
        auth=(app_id, app_secret),
    ).json()
    secrets["rotated refresh token"] = refreshed["refresh_token"]

    # A password reset through the mailed link.
    browser.submit("/forgot-password", email=email)
    secrets["reset token"] = link_from(mail_sink, email, "/reset-password").split("token=")[1]
    assert http.get(f"/reset-password?token={secrets['reset token']}").status_code == 200
    page = http.get("/forgot-password")
    reset = http.post(
        "/reset-password",
        data={
            "csrf_token": csrf_of(page.text),
            "token": secrets["reset token"],
            "password": new_password,
        },
    )
    assert reset.status_code == 200
    secrets["new password"] = new_password

    records = [r for r in caplog.records if not r.name.startswith(_CALLER_SIDE)]
    assert any(r.name == "identity.access" for r in records)
    for record in records:
        rendered = [_JSON.format(record), _TEXT.format(record), repr(record.args)]
        for what, secret in secrets.items():
            for line in rendered:
                assert secret not in line, f"the {what} is in a log line of {record.name}"


def test_request_ids_are_unique_and_a_forked_process_draws_its_own(http: TestClient) -> None:
    ids = {http.get("/healthz").headers["x-request-id"] for _ in range(200)}
    assert len(ids) == 200
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child reports through the pipe
        os.write(write, logs.new_request_id().encode())
        os._exit(0)
    os.close(write)
    os.waitpid(child, 0)
    forked = os.read(read, 64).decode()
    os.close(read)
    assert re.fullmatch(r"[0-9a-f]{32}", forked)
    assert forked[:16] not in {request_id[:16] for request_id in ids}


def test_a_digits_only_secret_inside_a_random_id_is_not_a_leak() -> None:
    # The line that failed a whole CI run: its ids hold runs of digits a random code can equal.
    from tests.conftest import _holds

    line = "webhook msg_c755726d710b40958fbdc7c8702484a3 to wh_ea0e7e9341664efb53bfecaa failed"
    assert not _holds(line, "755726") and not _holds(line, "341664")
    assert _holds("your code is 755726.", "755726") and _holds("code=755726", "755726")
    assert _holds("id abcs3cr3t-valuexyz", "s3cr3t-value")  # other secrets: anywhere
