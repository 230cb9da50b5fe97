"""The whole OpenID Connect code flow as a real relying party sees it.

The relying party is Authlib's own HTTP client (``OAuth2Client``): independent client code
does discovery, the authorization URL (PKCE S256, state, nonce), the code exchange, refresh
and userinfo; the ID token is checked with ``joserfc`` against the published JWKS. Chromium
plays the person: login, consent, and RP-initiated logout.

The client's redirect URIs point at a tiny loopback HTTP listener in this process that only
records what arrives and answers a static page. (``page.route`` cannot stand in for it:
Playwright never routes the requests a redirect makes, so the server's redirects to an
address with nothing listening would fail with ERR_CONNECTION_REFUSED.)
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
from authlib.integrations.httpx_client import OAuth2Client
from joserfc import jwt
from joserfc.jwk import KeySet
from playwright.sync_api import Page, expect

from ..conftest import run_cli
from .conftest import LiveServer, Screenshot

PASSWORD = "tidal-orbit-cactus-42"
NAME = "Grace Hopper"
CLIENT_NAME = "Example RP"
SCOPE = "openid email profile offline_access"


class RelyingPartySite:
    """The relying party's web server: answers every GET with a static page and keeps the
    URLs the browser brought (the callback and the post-logout landing)."""

    PAGE = b"<!doctype html><title>Example RP</title><h1>Back at Example RP</h1>"

    def __init__(self) -> None:
        self.arrived: list[str] = []
        site = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                site.arrived.append(site.url + self.path)
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(site.PAGE)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(site.PAGE)

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet."""

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> RelyingPartySite:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def only_arrival(self, path: str) -> str:
        """The one URL that arrived on ``path``."""
        found = [url for url in self.arrived if urlsplit(url).path == path]
        assert len(found) == 1, self.arrived
        return found[0]


@pytest.fixture
def relying_party() -> Iterator[RelyingPartySite]:
    with RelyingPartySite() as site:
        yield site


def _query(url: str) -> dict[str, str]:
    """The query of ``url``, each parameter once (a repeated one fails the test)."""
    parsed = parse_qs(urlsplit(url).query, keep_blank_values=True)
    assert all(len(values) == 1 for values in parsed.values()), url
    return {name: values[0] for name, values in parsed.items()}


def _at_hash(access_token: str) -> str:
    """OIDC Core 3.1.3.6: base64url of the left half of SHA-256 (RS256) of the token."""
    digest = hashlib.sha256(access_token.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest[: len(digest) // 2]).rstrip(b"=").decode()


def test_relying_party_runs_the_whole_oidc_flow(
    page: Page,
    live_server: LiveServer,
    screenshot: Screenshot,
    page_problems: list[str],
    relying_party: RelyingPartySite,
) -> None:
    server = live_server.url
    callback = f"{relying_party.url}/callback"
    post_logout = f"{relying_party.url}/signed-out"

    address = f"grace+{secrets.token_hex(4)}@example.com"
    user = run_cli(
        live_server.env,
        "users", "create", "--email", address, "--name", NAME,
        "--password", PASSWORD, "--verified",
    )  # fmt: skip
    registered = run_cli(
        live_server.env,
        "clients", "create", "--name", CLIENT_NAME, "--redirect-uri", callback,
        "--grant-type", "authorization_code", "--grant-type", "refresh_token",
        "--post-logout-redirect-uri", post_logout,
    )  # fmt: skip
    client_id, client_secret = registered["client_id"], registered["client_secret"]
    assert client_secret

    # 1. Discovery.
    discovery = httpx.get(f"{server}/.well-known/openid-configuration", timeout=10)
    assert discovery.status_code == 200
    config: dict[str, Any] = discovery.json()
    assert config["issuer"] == server
    assert config["authorization_endpoint"] == f"{server}/oauth2/authorize"
    assert config["token_endpoint"] == f"{server}/oauth2/token"
    assert config["jwks_uri"] == f"{server}/.well-known/jwks.json"
    assert config["userinfo_endpoint"] == f"{server}/oauth2/userinfo"
    assert config["end_session_endpoint"] == f"{server}/oauth2/logout"
    assert config["code_challenge_methods_supported"] == ["S256"]
    issuer = config["issuer"]

    client = OAuth2Client(
        client_id,
        client_secret,
        scope=SCOPE,
        redirect_uri=callback,
        code_challenge_method="S256",
        timeout=10,
    )
    with client:
        # 2. The authorization URL: PKCE S256, state and nonce.
        verifier = secrets.token_urlsafe(48)
        nonce = secrets.token_urlsafe(16)
        uri, state = client.create_authorization_url(
            config["authorization_endpoint"], code_verifier=verifier, nonce=nonce
        )
        sent = _query(uri)
        assert sent["response_type"] == "code"
        assert sent["client_id"] == client_id
        assert sent["redirect_uri"] == callback
        assert sent["scope"] == SCOPE
        assert sent["state"] == state
        assert sent["nonce"] == nonce
        assert sent["code_challenge_method"] == "S256"
        assert sent["code_challenge"] == (
            base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
            .rstrip(b"=")
            .decode()
        )

        # 3. The server sends the browser to its login page.
        page.goto(uri)
        expect(page).to_have_url(re.compile(r"/login\?next=%2Foauth2%2Fauthorize%2Fresume"))
        expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
        page.locator("[autocomplete=username]").fill(address)
        page.locator("[autocomplete=current-password]").fill(PASSWORD)
        screenshot(page, "login-filled")
        page.get_by_role("button", name="Sign in").click()

        # 4. Consent names the client and what it asks for.
        expect(page).to_have_url(re.compile(r"/oauth2/authorize/resume\?rid="))
        expect(
            page.get_by_role("heading", name=f"{CLIENT_NAME} wants to access your account")
        ).to_be_visible()
        expect(page.get_by_text(f"Signed in as {address}")).to_be_visible()
        expect(page.get_by_text("See your email address")).to_be_visible()
        screenshot(page, "consent")
        page.get_by_role("button", name="Allow").click()

        # 5. Back at the callback with code, state and iss.
        expect(page).to_have_url(re.compile("^" + re.escape(callback + "?")))
        expect(page.get_by_role("heading", name="Back at Example RP")).to_be_visible()
        screenshot(page, "callback")
        callback_url = relying_party.only_arrival("/callback")
        assert callback_url == page.url
        answer = _query(callback_url)
        assert set(answer) == {"code", "state", "iss"}, answer
        assert answer["state"] == state
        assert answer["iss"] == issuer
        assert answer["code"]

        # 6. The code exchange (Authlib checks the state again).
        token = client.fetch_token(
            config["token_endpoint"],
            authorization_response=callback_url,
            state=state,
            code_verifier=verifier,
        )
        assert token["token_type"].lower() == "bearer"
        assert token["access_token"]
        assert token["id_token"]
        assert token["refresh_token"]
        assert int(token["expires_in"]) > 0
        assert set(token["scope"].split()) == set(SCOPE.split())
        access_token, id_token = token["access_token"], token["id_token"]

        # 7. The ID token: signed by a published key, for this client and this login.
        jwks = httpx.get(config["jwks_uri"], timeout=10)
        assert jwks.status_code == 200
        decoded = jwt.decode(id_token, KeySet.import_key_set(jwks.json()), algorithms=["RS256"])
        assert decoded.header["alg"] == "RS256"
        assert decoded.header["kid"] in {key["kid"] for key in jwks.json()["keys"]}
        claims = decoded.claims
        now = time.time()
        assert claims["iss"] == issuer
        assert claims["aud"] in (client_id, [client_id])
        assert claims["sub"] == str(user["id"])
        assert claims["nonce"] == nonce
        assert claims["exp"] > now
        assert claims["iat"] <= now + 5
        assert claims["at_hash"] == _at_hash(access_token)
        assert isinstance(claims["auth_time"], int)
        assert now - 300 <= claims["auth_time"] <= now + 5
        jwt.JWTClaimsRegistry(
            leeway=5,
            iss={"essential": True, "value": issuer},
            sub={"essential": True},
            exp={"essential": True},
            iat={"essential": True},
        ).validate(claims)

        # 8. Userinfo with the access token (Authlib's bearer auth).
        userinfo = client.get(config["userinfo_endpoint"])
        assert userinfo.status_code == 200, userinfo.text
        profile = userinfo.json()
        assert profile["sub"] == claims["sub"]
        assert profile["email"] == address
        assert profile["email_verified"] is True
        assert profile["name"] == NAME

        # 9. Refresh rotates the token; the old one presented again is reuse.
        old_refresh = token["refresh_token"]
        refreshed = client.refresh_token(config["token_endpoint"], refresh_token=old_refresh)
        assert refreshed["access_token"]
        assert refreshed["access_token"] != access_token
        assert refreshed["refresh_token"]
        assert refreshed["refresh_token"] != old_refresh
        assert client.token["access_token"] == refreshed["access_token"]
        after_refresh = client.get(config["userinfo_endpoint"])
        assert after_refresh.status_code == 200, after_refresh.text
        assert after_refresh.json()["sub"] == claims["sub"]

        reuse = httpx.post(
            config["token_endpoint"],
            data={"grant_type": "refresh_token", "refresh_token": old_refresh},
            auth=(client_id, client_secret),
            timeout=10,
        )
        assert reuse.status_code == 400, reuse.text
        assert reuse.json()["error"] == "invalid_grant"
        # Reuse revokes the whole family: the rotated token died with it.
        successor = httpx.post(
            config["token_endpoint"],
            data={"grant_type": "refresh_token", "refresh_token": refreshed["refresh_token"]},
            auth=(client_id, client_secret),
            timeout=10,
        )
        assert successor.status_code == 400, successor.text
        assert successor.json()["error"] == "invalid_grant"

    # 10. RP-initiated logout: a valid hint for this session signs out at once.
    logout_query = urlencode(
        {
            "id_token_hint": id_token,
            "post_logout_redirect_uri": post_logout,
            "state": "xyz",
            "client_id": client_id,
        }
    )
    page.goto(f"{config['end_session_endpoint']}?{logout_query}")
    expect(page).to_have_url(post_logout + "?state=xyz")
    assert relying_party.only_arrival("/signed-out") == post_logout + "?state=xyz"
    expect(page.get_by_role("heading", name="Back at Example RP")).to_be_visible()
    screenshot(page, "signed-out-at-rp")

    # The session is over: the account page asks for a login.
    page.goto(server + "/account")
    expect(page).to_have_url(re.compile(r"/login\?next=/account$"))
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    screenshot(page, "account-needs-login")

    assert page_problems == []
