"""GET /metrics: Prometheus counters that follow real requests, guarded, right across workers."""

from __future__ import annotations

import ipaddress
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from identity.app import create_app
from identity.config import Settings
from identity.db import Database
from identity.metrics import MULTIPROCESS_DIR_VARIABLE, route_template

from .conftest import ISSUER, _wait_until_up, free_port, served_environment, stop_process
from .web_helpers import Browser

MakeClient = Callable[..., tuple[str, str | None]]
TOKEN = "scrape-" + "x" * 24


def _scrape(http: TestClient) -> str:
    response = http.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return response.text


def _value(text: str, name: str, **labels: str) -> float:
    """The sample ``name`` with exactly ``labels`` in an exposition; 0 when absent."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return 0.0


@pytest.fixture
def metrics_settings(settings_for: Callable[..., Settings]) -> Settings:
    return settings_for(metrics_token=TOKEN)


@pytest.fixture
def http(app_for: Callable[[Settings], TestClient], metrics_settings: Settings) -> TestClient:
    return app_for(metrics_settings)


# -- counters follow events ---------------------------------------------------------------------


def test_client_credentials_token_counts_one_token_issued(
    http: TestClient, make_client: MakeClient
) -> None:
    client_id, secret = make_client()
    before = _value(_scrape(http), "identity_tokens_issued_total", grant_type="client_credentials")
    response = http.post(
        "/oauth2/token", data={"grant_type": "client_credentials"}, auth=(client_id, secret or "")
    )
    assert response.status_code == 200
    after = _value(_scrape(http), "identity_tokens_issued_total", grant_type="client_credentials")
    assert after == before + 1


def test_failed_login_through_the_page_counts_as_failed(http: TestClient) -> None:
    before = _value(_scrape(http), "identity_logins_total", outcome="failed")
    assert Browser(http).login("nobody@example.com", "wrong-password-123").status_code == 400
    assert _value(_scrape(http), "identity_logins_total", outcome="failed") == before + 1


def test_refused_hit_counts_for_its_limiter(
    app_for: Callable[[Settings], TestClient], settings_for: Callable[..., Settings]
) -> None:
    http = app_for(settings_for(metrics_token=TOKEN, rate_limits=("login.ip=1/300",)))
    before = _value(_scrape(http), "identity_rate_limited_total", limiter="login.ip")
    browser = Browser(http)
    browser.login("first@example.com", "wrong-password-123")
    assert browser.login("second@example.com", "wrong-password-123").status_code == 429
    assert _value(_scrape(http), "identity_rate_limited_total", limiter="login.ip") == before + 1


def test_requests_are_labelled_by_route_template_not_raw_path(http: TestClient) -> None:
    public_id = secrets.token_hex(8)
    template = "/account/sessions/{public_id}/revoke"
    labels = {"method": "POST", "route": template}
    before = _scrape(http)
    http.post(f"/account/sessions/{public_id}/revoke", follow_redirects=False)
    status = str(http.post(f"/account/sessions/{public_id}x/revoke").status_code)
    http.get(f"/no-such-page-{public_id}")
    assert http.get("/static/identity.css").status_code == 200
    text = _scrape(http)
    assert public_id not in text
    counted = _value(text, "identity_http_requests_total", status=status, **labels)
    assert counted - _value(before, "identity_http_requests_total", status=status, **labels) >= 1
    assert _value(text, "identity_http_request_duration_seconds_count", **labels) >= 2
    unmatched = {"route": "unmatched", "method": "GET", "status": "404"}
    assert _value(text, "identity_http_requests_total", **unmatched) > _value(
        before, "identity_http_requests_total", **unmatched
    )
    static = {"route": "/static/{path}", "method": "GET", "status": "200"}
    assert _value(text, "identity_http_requests_total", **static) >= 1


def test_a_made_up_method_is_counted_as_other(http: TestClient) -> None:
    http.request("BREW", "/healthz")
    text = _scrape(http)
    assert 'method="BREW"' not in text
    labels = {"route": "/healthz", "method": "other", "status": "405"}
    assert _value(text, "identity_http_requests_total", **labels) >= 1


def test_route_template_of_a_route_inside_a_mount() -> None:
    from starlette.routing import Mount, Route, Router

    inner = Route("/users/{user_id}", lambda request: None)
    scope = {"route": inner, "root_path": "/api/v1"}
    assert route_template(scope) == "/api/v1/users/{user_id}"
    mount = Mount("/static", app=Router([]))
    assert route_template({"route": mount, "root_path": "/static"}) == "/static/{path}"
    assert route_template({"root_path": ""}) == "unmatched"


def test_outbox_backlog_and_pool_are_read_at_scrape_time(http: TestClient) -> None:
    text = _scrape(http)
    assert _value(text, "identity_outbox_backlog") == 0
    Browser(http).signup(f"backlog-{secrets.token_hex(4)}@example.com")
    # The sender may already have taken the mail; it was counted or it was sent.
    text = _scrape(http)
    assert "identity_outbox_backlog " in text
    assert _value(text, "identity_db_pool_connections", state="checked_out") >= 0
    assert "identity_mail_delivery_failures_total" in text


# -- who may scrape ---------------------------------------------------------------------------


def test_token_is_required_when_set(http: TestClient) -> None:
    assert http.get("/metrics").status_code == 403
    assert http.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 403
    assert http.get("/metrics", headers={"Authorization": TOKEN}).status_code == 403
    assert http.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200


def test_without_a_token_a_remote_client_is_refused(
    app_for: Callable[[Settings], TestClient], settings: Settings
) -> None:
    http = app_for(settings)  # TestClient's peer is "testclient": not loopback
    assert http.get("/metrics").status_code == 403


def _loopback_client(settings: Settings, database: Database) -> Iterator[TestClient]:
    with TestClient(create_app(settings), base_url=ISSUER, client=("127.0.0.1", 50000)) as client:
        yield client


@pytest.fixture
def loopback(settings_for: Callable[..., Settings], database: Database) -> Iterator[TestClient]:
    yield from _loopback_client(settings_for(), database)


def test_without_a_token_a_loopback_client_may_scrape(loopback: TestClient) -> None:
    response = loopback.get("/metrics")
    assert response.status_code == 200 and "identity_http_requests_total" in response.text


def test_without_a_token_a_loopback_peer_forwarding_for_someone_is_refused(
    loopback: TestClient,
) -> None:
    # An unlisted proxy on the same host would otherwise expose /metrics to everyone.
    response = loopback.get("/metrics", headers={"X-Forwarded-For": "203.0.113.9"})
    assert response.status_code == 403


def test_a_trusted_proxy_forwarding_a_remote_client_is_refused(
    settings_for: Callable[..., Settings], database: Database
) -> None:
    settings = settings_for(trusted_proxies=(ipaddress.ip_network("127.0.0.0/8"),))
    for client in _loopback_client(settings, database):
        assert client.get("/metrics", headers={"X-Forwarded-For": "203.0.113.9"}).status_code == 403
        assert client.get("/metrics", headers={"X-Forwarded-For": "127.0.0.1"}).status_code == 200


# -- identity serve --workers 2 -------------------------------------------------------------


@pytest.mark.parametrize("workers", [2, 1])
@pytest.mark.system
def test_served_workers_add_up_to_every_request(
    workers: int,
    database: Database,
    database_url: str,
    redis_url: str | None,
    redis_prefix: str,
    tmp_path: Path,
) -> None:
    port = free_port()
    prefix = f"{redis_prefix}{secrets.token_hex(4)}:"
    env = served_environment(database_url, redis_url, prefix, tmp_path / "keys", port)
    env.pop(MULTIPROCESS_DIR_VARIABLE, None)  # identity serve makes its own folder
    env["IDENTITY_METRICS_TOKEN"] = TOKEN
    env["TMPDIR"] = str(tmp_path)  # where the folder of the workers' counts goes
    process = subprocess.Popen(
        [sys.executable, "-m", "identity", "serve", "--port", str(port), "--workers", str(workers)],
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_up(url, process)
        requests = 24
        for _ in range(requests):  # a new connection each: the kernel spreads them over workers
            with urllib.request.urlopen(url + "/.well-known/jwks.json", timeout=5) as response:
                assert response.status == 200
        scrape = urllib.request.Request(
            url + "/metrics", headers={"Authorization": f"Bearer {TOKEN}"}
        )
        labels = {"route": "/.well-known/jwks.json", "method": "GET", "status": "200"}
        # Each worker writes its own file; on a loaded machine the last write can trail
        # the response by a moment, so the sum is read until it settles (3 s at most).
        deadline = time.monotonic() + 3
        while True:
            with urllib.request.urlopen(scrape, timeout=5) as response:
                text = response.read().decode()
            counted = _value(text, "identity_http_requests_total", **labels)
            if counted == requests or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert counted == requests
        timed = {"route": "/.well-known/jwks.json", "method": "GET"}
        assert _value(text, "identity_http_request_duration_seconds_count", **timed) == requests
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(url + "/metrics", timeout=5)
        assert refused.value.code == 403
    finally:
        stop_process(process)
    assert not list(tmp_path.glob("identity-metrics-*")), "the counts folder outlived the server"
