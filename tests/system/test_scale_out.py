"""Scale-out: three ``identity serve`` instances behind deploy/nginx.conf are one issuer.

The instances (tests/system/scale_out_cluster.py) share the test database, Redis and its prefix
(when IDENTITY_TEST_REDIS_URL is set) and one keys folder. On the SQLite run they share one
SQLite file, which several processes on one host may (WAL), and each counts its rate limits
alone: the one test that needs Redis skips there. Each instance is also reached directly on
its own port, so a test can say which instance issues and which one validates.
"""

from __future__ import annotations

import os
import random
import secrets
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import jwt as pyjwt
import pytest
from sqlalchemy import select

from identity.config import Settings
from identity.db import Database
from identity.keys import KeyStore
from identity.models import AuditEvent
from tests.conftest import remember_secret, run_cli
from tests.system.scale_out_cluster import (
    NGINX,
    RELOAD_SECONDS,
    Auth,
    Cluster,
    eventually,
    json_lines,
    start_cluster,
)
from tests.web_helpers import PASSWORD

# The test talks to nginx from this loopback address, so "the client's IP" differs from
# nginx's own (127.0.0.1, the only trusted proxy).
CLIENT_IP = "127.0.0.5"
FORGED_IP = "203.0.113.7"
TIMEOUT = 30.0  # per request: the machine may be busy; nothing here waits that long when well

if not NGINX.exists():  # pragma: no cover - depends on the machine
    if os.environ.get("CI"):  # in CI a missing nginx is a failure, never a skip
        raise RuntimeError(f"scale-out tests need {NGINX}: apt-get install nginx")
    pytest.skip(f"scale-out tests need {NGINX}", allow_module_level=True)


@pytest.fixture(scope="module")
def cluster(
    database_url: str,
    redis_url: str | None,
    redis_prefix: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("scale-out")
    with start_cluster(database_url, redis_url, redis_prefix, root) as started:
        yield started


# -- small helpers ------------------------------------------------------------------------


def _direct() -> httpx.Client:
    return httpx.Client(timeout=TIMEOUT)


def _through_nginx(cluster: Cluster) -> httpx.Client:
    """A client of the public URL, connecting from CLIENT_IP."""
    transport = httpx.HTTPTransport(verify=cluster.tls, local_address=CLIENT_IP)
    return httpx.Client(base_url=cluster.public, transport=transport, timeout=TIMEOUT)


def _token(http: httpx.Client, url: str, auth: Auth, **form: str) -> dict[str, Any]:
    response = http.post(f"{url}/oauth2/token", data=form, auth=auth)
    assert response.status_code == 200, f"{url}: {response.status_code} {response.text}"
    body: dict[str, Any] = response.json()
    for name in ("access_token", "refresh_token"):
        remember_secret(body.get(name))
    return body


def _login(
    http: httpx.Client, url: str, cluster: Cluster, email: str, scope: str
) -> dict[str, Any]:
    form = {"grant_type": "password", "username": email, "password": PASSWORD, "scope": scope}
    return _token(http, url, cluster.app, **form)


def _service_token(http: httpx.Client, url: str, cluster: Cluster) -> str:
    return str(_token(http, url, cluster.service, grant_type="client_credentials")["access_token"])


def _active(http: httpx.Client, url: str, auth: Auth, token: str) -> bool:
    response = http.post(f"{url}/oauth2/introspect", data={"token": token}, auth=auth)
    assert response.status_code == 200, f"{url}: {response.status_code} {response.text}"
    return bool(response.json()["active"])


def _bearer(http: httpx.Client, url: str, path: str, token: str) -> int:
    return http.get(f"{url}{path}", headers={"Authorization": f"Bearer {token}"}).status_code


def _kid(token: str) -> str:
    return str(pyjwt.get_unverified_header(token)["kid"])


def _jti(token: str) -> str:
    return str(pyjwt.decode(token, options={"verify_signature": False})["jti"])


def _access_lines(cluster: Cluster) -> list[list[dict[str, Any]]]:
    """Each instance's identity.access lines."""
    return [
        [e for e in json_lines(path) if e.get("logger") == "identity.access"]
        for path in cluster.instance_logs
    ]


# -- one issuer, whichever instance answers ------------------------------------------------


def test_an_access_token_from_one_instance_works_and_is_revoked_on_the_others(
    cluster: Cluster,
) -> None:
    a, b, c = cluster.instances
    with _direct() as http:
        token = _login(http, a, cluster, "ada@example.com", "openid account")["access_token"]
        assert _bearer(http, b, "/oauth2/userinfo", token) == 200
        assert _bearer(http, c, "/api/v1/me", token) == 200
        assert _active(http, b, cluster.app, token) and _active(http, c, cluster.app, token)

        revoked = http.post(f"{b}/oauth2/revoke", data={"token": token}, auth=cluster.app)
        assert revoked.status_code == 200
        assert not _active(http, c, cluster.app, token)
        assert _bearer(http, a, "/oauth2/userinfo", token) == 401
        assert _bearer(http, a, "/api/v1/me", token) == 401


def test_a_refresh_token_rotated_on_one_instance_is_reuse_detected_on_another(
    cluster: Cluster,
) -> None:
    a, b, c = cluster.instances
    with _direct() as http:
        first = _login(http, a, cluster, "ada@example.com", "openid offline_access")
        second = _token(
            http, b, cluster.app, grant_type="refresh_token", refresh_token=first["refresh_token"]
        )
        assert _bearer(http, c, "/oauth2/userinfo", second["access_token"]) == 200

        reused = http.post(
            f"{c}/oauth2/token",
            data={"grant_type": "refresh_token", "refresh_token": first["refresh_token"]},
            auth=cluster.app,
        )
        assert reused.status_code == 400 and reused.json()["error"] == "invalid_grant"
        # The reuse ended the whole family, on every instance.
        successor = http.post(
            f"{a}/oauth2/token",
            data={"grant_type": "refresh_token", "refresh_token": second["refresh_token"]},
            auth=cluster.app,
        )
        assert successor.status_code == 400 and successor.json()["error"] == "invalid_grant"
        assert _bearer(http, b, "/oauth2/userinfo", second["access_token"]) == 401


def test_failed_logins_spread_over_the_instances_add_up_to_one_limit_with_redis(
    cluster: Cluster,
) -> None:
    # IDENTITY_RATE_LIMITS=login.account=6/300: two failures on each instance are six.
    shared = bool(os.environ.get("IDENTITY_TEST_REDIS_URL"))
    form = {"grant_type": "password", "username": "cy@example.com", "password": "wrong-guess-1"}
    with _direct() as http:
        for url in cluster.instances * 2:
            failed = http.post(f"{url}/oauth2/token", data=form, auth=cluster.app)
            assert failed.status_code == 400, failed.text
        # Each instance saw two. With Redis the count is shared: even the right password is
        # refused now. Without it each instance counts its own, as the README says.
        right = {**form, "password": PASSWORD}
        for url in cluster.instances:
            answer = http.post(f"{url}/oauth2/token", data=right, auth=cluster.app)
            if shared:
                assert answer.status_code == 429, f"{url}: {answer.status_code} {answer.text}"
                assert int(answer.headers["retry-after"]) > 0
            else:
                assert answer.status_code == 200, f"{url}: {answer.status_code} {answer.text}"


# -- through nginx -------------------------------------------------------------------------


def test_nginx_spreads_requests_over_every_instance_under_one_request_id(
    cluster: Cluster,
) -> None:
    chosen = [f"scale-out-{secrets.token_hex(4)}-{n}" for n in range(9)]
    with _through_nginx(cluster) as http:
        for request_id in chosen:
            response = http.get(
                "/.well-known/openid-configuration", headers={"X-Request-ID": request_id}
            )
            assert response.status_code == 200
            assert response.json()["issuer"] == cluster.public
            assert response.headers["x-request-id"] == request_id
        # No id, or one identity would refuse: nginx's own, the same in both logs.
        generated = [
            http.get("/healthz", headers=headers).headers["x-request-id"]
            for headers in ({}, {"X-Request-ID": "not an id!"})
        ]
    assert all(len(g) == 32 and g != "not an id!" for g in generated)
    wanted = set(chosen + generated)

    def served_by() -> dict[str, int] | None:
        seen = {
            line["request_id"]: n
            for n, lines in enumerate(_access_lines(cluster))
            for line in lines
            if line["request_id"] in wanted
        }
        return seen if set(seen) == wanted else None

    instance_of = eventually(served_by, "identity's access lines")
    assert set(instance_of.values()) == {0, 1, 2}

    def nginx_lines() -> list[dict[str, Any]] | None:
        lines = [e for e in json_lines(cluster.nginx_log) if e["request_id"] in wanted]
        return lines if len(lines) == len(wanted) else None

    upstreams = {line["upstream"] for line in eventually(nginx_lines, "nginx's access lines")}
    assert upstreams == {url.removeprefix("http://") for url in cluster.instances}


def test_identity_takes_the_client_ip_from_nginx_and_from_no_one_else(cluster: Cluster) -> None:
    forged = {"X-Forwarded-For": FORGED_IP, "X-Request-ID": "chosen-by-the-client"}
    form = {"grant_type": "client_credentials"}
    with _through_nginx(cluster) as http:
        proxied = http.post("/oauth2/token", data=form, auth=cluster.service, headers=forged)
    transport = httpx.HTTPTransport(local_address=CLIENT_IP)
    with httpx.Client(transport=transport, timeout=TIMEOUT) as http:
        direct = http.post(
            f"{cluster.instances[0]}/oauth2/token", data=form, auth=cluster.service, headers=forged
        )
    assert proxied.status_code == 200 and direct.status_code == 200
    # nginx passes a well-formed id on (one id in both logs); straight from an untrusted
    # peer, identity believes neither header.
    assert proxied.headers["x-request-id"] == "chosen-by-the-client"
    assert direct.headers["x-request-id"] != "chosen-by-the-client"

    database = Database(cluster.env["IDENTITY_DATABASE_URL"])
    try:
        with database.transaction() as session:
            events = session.scalars(
                select(AuditEvent).where(
                    AuditEvent.type == "token.issued",
                    AuditEvent.client_id == cluster.service[0],
                )
            ).all()
            ip_of = {event.detail["jti"]: event.ip for event in events}
    finally:
        database.dispose()
    # nginx (trusted) appended the real peer to the forged header; identity took that hop.
    assert ip_of[_jti(proxied.json()["access_token"])] == CLIENT_IP
    assert ip_of[_jti(direct.json()["access_token"])] == CLIENT_IP


def _nginx_line(cluster: Cluster, request_id: str) -> dict[str, Any]:
    """nginx's access line of the request with ``request_id``, once it is written."""

    def find() -> dict[str, Any] | None:
        lines = [e for e in json_lines(cluster.nginx_log) if e["request_id"] == request_id]
        return lines[0] if lines else None

    return eventually(find, f"nginx's access line of {request_id}")


def test_token_answers_pass_nginx_uncached_and_its_log_holds_no_secret(cluster: Cluster) -> None:
    reset_token = secrets.token_urlsafe(24)
    with _through_nginx(cluster) as http:
        issued = http.post(
            "/oauth2/token", data={"grant_type": "client_credentials"}, auth=cluster.service
        )
        assert issued.status_code == 200 and issued.headers["cache-control"] == "no-store"
        access_token = issued.json()["access_token"]
        remember_secret(access_token)
        # A reset link's token travels in the query string; nginx must log the path only.
        http.get(f"/reset-password?token={reset_token}", headers={"X-Request-ID": "reset-link"})
    assert _nginx_line(cluster, "reset-link")["path"] == "/reset-password"
    log = cluster.nginx_log.read_text()
    assert reset_token not in log and access_token not in log


def test_a_body_over_identitys_cap_is_refused_in_oauths_format_and_a_huge_one_by_nginx(
    cluster: Cluster,
) -> None:
    cap = Settings.from_env({}).max_body_bytes  # IDENTITY_MAX_BODY_BYTES, unset here
    form = {"content-type": "application/x-www-form-urlencoded"}
    with _through_nginx(cluster) as http:
        over = http.post(
            "/oauth2/token", content=b"x" * (cap + 1), headers={**form, "X-Request-ID": "over-cap"}
        )
        huge = http.post(
            "/oauth2/token", content=b"x" * (2 << 20), headers={**form, "X-Request-ID": "huge"}
        )
    # Over identity's cap: identity itself answers, as the token endpoint's clients expect.
    assert over.status_code == 413 and over.json()["error"] == "invalid_request"
    assert _nginx_line(cluster, "over-cap")["upstream"] != ""
    # Past nginx's own cap the body never leaves nginx.
    assert huge.status_code == 413 and _nginx_line(cluster, "huge")["upstream"] == ""


def test_nginx_hides_metrics_and_sends_plain_http_to_https(cluster: Cluster) -> None:
    with _through_nginx(cluster) as http:
        assert http.get("/metrics").status_code == 404
    with _direct() as http:
        # Each instance is scraped on its own port instead (loopback, not forwarded).
        assert http.get(f"{cluster.instances[0]}/metrics").status_code == 200
        redirect = http.get(f"{cluster.plain}/.well-known/jwks.json")
    assert redirect.status_code == 301
    location = redirect.headers["location"]
    assert location.startswith("https://") and location.endswith("/.well-known/jwks.json")


# -- key rotation --------------------------------------------------------------------------


class _Churn(threading.Thread):
    """Issue a token on a random instance and validate it on another, over and over: by
    introspection there, and offline against a JWKS fetched before the rotation."""

    def __init__(self, cluster: Cluster, old_tokens: list[str], jwks: pyjwt.PyJWKSet) -> None:
        super().__init__(daemon=True)
        self.cluster, self.old_tokens, self.jwks = cluster, old_tokens, jwks
        self.stop = threading.Event()
        self.validated: Counter[str] = Counter()  # kid -> tokens validated
        self.failures: list[str] = []

    def run(self) -> None:
        rng = random.Random()
        cluster, auth = self.cluster, self.cluster.service
        with _direct() as http:
            while not self.stop.is_set():
                issuer, validator, elsewhere = rng.sample(cluster.instances, 3)
                try:
                    token = _service_token(http, issuer, cluster)
                    assert _active(http, validator, auth, token), "introspected inactive"
                    key = self.jwks[_kid(token)].key
                    pyjwt.decode(
                        token, key, algorithms=["RS256"], audience=auth[0], issuer=cluster.public
                    )
                    old = rng.choice(self.old_tokens)
                    assert _active(http, elsewhere, auth, old), "an old token went inactive"
                    self.validated[_kid(token)] += 1
                except Exception as error:  # every kind of failure is the finding
                    self.failures.append(f"issued on {issuer}, checked on {validator}: {error!r}")
                # A pace, not a wait: the loop stays far below token.client's 1200/60.
                self.stop.wait(0.01)

    def wait_for(self, kid: str, count: int) -> None:
        def enough() -> bool:
            return self.validated[kid] >= count or bool(self.failures) or not self.is_alive()

        eventually(enough, f"{count} validated tokens signed by {kid}")


def test_keys_rotated_through_the_cli_reach_every_instance_within_the_reload_interval(
    cluster: Cluster,
) -> None:
    with _direct() as http:
        old_tokens = [_service_token(http, url, cluster) for url in cluster.instances]
        old_kid = _kid(old_tokens[0])
        assert {_kid(token) for token in old_tokens} == {old_kid}
    with _through_nginx(cluster) as http:
        # A resource server's cache: fetched once, before the rotation.
        jwks = pyjwt.PyJWKSet.from_dict(http.get("/.well-known/jwks.json").json())

    churn = _Churn(cluster, old_tokens, jwks)
    churn.start()
    try:
        churn.wait_for(old_kid, 5)
        promoted = str(run_cli(cluster.env, "keys", "rotate")["kid"])
        # The manifest was replaced before the command returned: from here on, every
        # instance's next look at it (at most RELOAD_SECONDS away) sees the new keys.
        deadline = time.monotonic() + RELOAD_SECONDS
        records = KeyStore(cluster.keys_dir, max_token_ttl=600).records()
        (new_next,) = [r.kid for r in records if r.state == "next"]
        with _direct() as http:
            for url in cluster.instances:
                while True:
                    asked = time.monotonic()
                    kid = _kid(_service_token(http, url, cluster))
                    if kid == promoted:
                        break
                    assert kid == old_kid
                    assert asked < deadline, f"{url} signs with {old_kid} after the interval"
                    time.sleep(0.05)
                while True:
                    asked = time.monotonic()
                    published = {
                        k["kid"] for k in http.get(f"{url}/.well-known/jwks.json").json()["keys"]
                    }
                    if new_next in published:
                        break
                    assert asked < deadline, f"{url} publishes the old key set after the interval"
                    time.sleep(0.05)
                # The retired key stays published until its tokens have expired.
                assert {old_kid, promoted} <= published
        churn.wait_for(promoted, 5)
    finally:
        churn.stop.set()
        churn.join(timeout=TIMEOUT)
    assert churn.failures == []
    assert churn.validated[old_kid] >= 5 and churn.validated[promoted] >= 5
    with _direct() as http:
        for url in cluster.instances:
            assert all(_active(http, url, cluster.service, token) for token in old_tokens)
