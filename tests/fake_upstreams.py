"""Fake upstream identity providers for federation tests: an OpenID Connect provider and a
GitHub (Enterprise layout: ``/login/oauth/*`` and ``/api/v3/*``), each a small Starlette app
served by uvicorn in a background thread, listening on 127.0.0.1.

Use the fixtures from any test module with::

    from tests.fake_upstreams import fake_github, fake_oidc  # noqa: F401

and ``# noqa: F811`` on each test parameter of that name; or, free of both, bind them under
another name, since the fixtures are named in their decorators::

    from tests.fake_upstreams import fake_oidc as fake_oidc_fixture  # noqa: F401

Each fixture yields a running fake with ``.issuer`` (its base URL, plain http: identity must
run with IDENTITY_INSECURE_HTTP=1), ``.client_id`` and ``.client_secret`` (the only ones it
accepts) and ``.next_login(...)``, which queues the next person to sign in (an empty queue
signs in a default person). Its authorization endpoint never shows a page: it answers a 302
to ``redirect_uri`` at once with ``code`` and ``state`` (and ``iss``), so a browser passes
through it as an httpx client does: configure a provider with the fake's issuer and client,
send Chromium to identity's sign-in-with page, and it lands on identity's callback. The fake
accepts any redirect_uri. The attributes under "misbehaviour" make it break one rule each;
``authorize_requests`` and ``token_requests`` record what it was sent. A test that needs
another host name in the URL builds ``FakeOidcProvider(public_host="localhost")`` and calls
``start()``/``stop()`` itself.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import socket
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlencode

import pytest
import uvicorn
from joserfc import jwt
from joserfc.jwk import OctKey, RSAKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from tests.conftest import remember_secret

# What a denying fake says: a test can check that none of it reaches the person.
DENIAL_TEXT = "Upstream says: <b>go away</b>"


class BackgroundServer:
    """An ASGI app served by uvicorn in a daemon thread, on a socket bound before it starts
    (so the URL is known up front and no other process can take the port in between)."""

    def __init__(self, app: Starlette, public_host: str = "127.0.0.1") -> None:
        self._socket = socket.socket()
        self._socket.bind(("127.0.0.1", 0))
        self.url = f"http://{public_host}:{self._socket.getsockname()[1]}"
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, daemon=True
        )

    def start(self) -> None:
        """Serve, and return once the server accepts connections."""
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the fake upstream did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        """Stop serving and wait for the thread."""
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._socket.close()


def _base64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _pkce_matches(verifier: str, challenge: str) -> bool:
    return _base64url(hashlib.sha256(verifier.encode()).digest()) == challenge


def _basic_credentials(request: Request) -> tuple[str, str] | None:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        client_id, _, secret = base64.b64decode(value).decode().partition(":")
    except ValueError:
        return None
    return unquote(client_id), unquote(secret)


@dataclass
class _Grant:
    """What an authorization request issued a code for."""

    redirect_uri: str
    challenge: str
    nonce: str | None
    person: dict[str, Any]
    used: bool = False


@dataclass
class _FakeUpstream:
    """What both fakes share: the server, the queue of people, codes with PKCE, tokens."""

    public_host: str = "127.0.0.1"
    client_id: str = "fake-client"
    client_secret: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    deny: bool = False  # misbehaviour: answer authorization with error=access_denied
    # -- what it saw -----------------------------------------------------------------------
    authorize_requests: list[dict[str, str]] = field(default_factory=list)
    token_requests: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        remember_secret(self.client_secret)
        self._logins: deque[dict[str, Any]] = deque()
        self._grants: dict[str, _Grant] = {}
        self._access_tokens: dict[str, dict[str, Any]] = {}
        self._server = BackgroundServer(Starlette(routes=self._routes()), self.public_host)
        self.issuer = self._server.url

    def _routes(self) -> list[Route]:
        raise NotImplementedError

    def _queue_default_login(self) -> None:
        raise NotImplementedError

    def start(self) -> None:
        """Serve until ``stop``."""
        self._server.start()

    def stop(self) -> None:
        """Stop serving: the provider is unreachable from then on."""
        self._server.stop()

    def _authorization_answer(self, params: dict[str, str]) -> dict[str, str] | None:
        """The callback's parameters (a code, or an error), or None for a bad request."""
        self.authorize_requests.append(params)
        if (
            params.get("client_id") != self.client_id
            or params.get("code_challenge_method") != "S256"
            or not params.get("code_challenge")
            or not params.get("redirect_uri")
        ):
            return None
        answer = {"state": params.get("state", "")}
        if self.deny:
            return answer | {"error": "access_denied", "error_description": DENIAL_TEXT}
        if not self._logins:
            self._queue_default_login()
        code = secrets.token_urlsafe(24)
        self._grants[code] = _Grant(
            params["redirect_uri"],
            params["code_challenge"],
            params.get("nonce"),
            self._logins.popleft(),
        )
        return answer | {"code": code}

    def _redeem(self, form: dict[str, Any]) -> _Grant | None:
        """The grant a code stands for, spent now; None when it is unknown, spent, or the
        redirect_uri or PKCE verifier does not match (which spends it too)."""
        grant = self._grants.get(str(form.get("code", "")))
        if grant is None or grant.used:
            return None
        grant.used = True
        if form.get("redirect_uri") != grant.redirect_uri or not _pkce_matches(
            str(form.get("code_verifier", "")), grant.challenge
        ):
            return None
        return grant

    def _issue_access_token(self, person: dict[str, Any]) -> str:
        access_token = secrets.token_urlsafe(24)
        self._access_tokens[access_token] = person
        return access_token

    def _bearer_person(self, request: Request) -> dict[str, Any] | None:
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        return self._access_tokens.get(value) if scheme.lower() in ("bearer", "token") else None


@dataclass
class FakeOidcProvider(_FakeUpstream):
    """An OpenID Connect provider that signs in whoever ``next_login`` queued."""

    client_id: str = "fake-oidc-client"
    # -- misbehaviour ----------------------------------------------------------------------
    id_token_issuer: str | None = None  # sign ID tokens with this iss instead of ours
    id_token_nonce: str | None = None  # put this nonce in ID tokens instead of the request's
    id_token_audience: str | list[str] | None = None  # this aud instead of client_id
    id_token_expired: bool = False  # ID tokens that expired a minute before they are issued
    id_token_algorithm: str = "RS256"  # "HS256" (keyed with the client secret) or "none"
    response_issuer: str | None = None  # the callback's iss parameter instead of ours
    omit_response_issuer: bool = False  # no iss parameter on the callback (though advertised)
    email_in_userinfo_only: bool = False  # leave email out of the ID token
    malformed_token_response: bool = False  # a 200 from /token that is not JSON
    discovery_changes: dict[str, Any] = field(default_factory=dict)  # merged into discovery

    def __post_init__(self) -> None:
        self._keys: list[RSAKey] = []
        self.rotate_key()
        super().__post_init__()

    def _routes(self) -> list[Route]:
        return [
            Route("/.well-known/openid-configuration", self._discovery),
            Route("/jwks", self._jwks),
            Route("/authorize", self._authorize),
            Route("/token", self._token, methods=["POST"]),
            Route("/userinfo", self._userinfo),
        ]

    def next_login(
        self,
        sub: str = "fake-oidc-person",
        email: str | None = "ada@example.com",
        email_verified: Any = True,
        name: str = "Ada Lovelace",
        amr: list[str] | None = None,
        **claims: Any,
    ) -> None:
        """Queue the claims of the next person who signs in (``email=None`` leaves it out;
        extra keyword arguments are extra ID token claims)."""
        person = {"sub": sub, "name": name, "amr": amr if amr is not None else ["pwd"]}
        if email is not None:
            person |= {"email": email, "email_verified": email_verified}
        self._logins.append(person | claims)

    def _queue_default_login(self) -> None:
        self.next_login()

    def rotate_key(self) -> None:
        """Publish a new signing key and sign with it from now on (the old one stays listed)."""
        self._keys.append(RSAKey.generate_key(2048, {"kid": secrets.token_hex(4), "use": "sig"}))

    async def _discovery(self, request: Request) -> Response:
        return JSONResponse(
            {
                "issuer": self.issuer,
                "authorization_endpoint": f"{self.issuer}/authorize",
                "token_endpoint": f"{self.issuer}/token",
                "userinfo_endpoint": f"{self.issuer}/userinfo",
                "jwks_uri": f"{self.issuer}/jwks",
                "response_types_supported": ["code"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "code_challenge_methods_supported": ["S256"],
                "token_endpoint_auth_methods_supported": [
                    "client_secret_basic",
                    "client_secret_post",
                ],
                "authorization_response_iss_parameter_supported": True,
            }
            | self.discovery_changes
        )

    async def _jwks(self, request: Request) -> Response:
        return JSONResponse({"keys": [key.as_dict(private=False) for key in self._keys]})

    async def _authorize(self, request: Request) -> Response:
        params = dict(request.query_params)
        answer = self._authorization_answer(params)
        if answer is None or params.get("response_type") != "code":
            # Like a real provider: a bad request gets a page, never a redirect.
            return PlainTextResponse("bad authorization request", status_code=400)
        if not self.omit_response_issuer:
            answer["iss"] = self.response_issuer or self.issuer
        return _redirect(params["redirect_uri"], answer)

    async def _token(self, request: Request) -> Response:
        form = dict(await request.form())
        basic = _basic_credentials(request)
        method = "client_secret_basic" if basic else "client_secret_post"
        self.token_requests.append({"auth_method": method, "fields": sorted(form)})
        client_id, secret = basic or (form.get("client_id"), form.get("client_secret"))
        if client_id != self.client_id or secret != self.client_secret:
            return JSONResponse({"error": "invalid_client"}, status_code=401)
        grant = self._redeem(form)
        if grant is None or form.get("grant_type") != "authorization_code":
            return JSONResponse({"error": "invalid_grant"}, status_code=400)
        if self.malformed_token_response:
            return Response(b"{not json", media_type="application/json")
        return JSONResponse(
            {
                "access_token": self._issue_access_token(grant.person),
                "token_type": "Bearer",
                "expires_in": 600,
                "id_token": self._id_token(grant),
            },
            headers={"Cache-Control": "no-store"},
        )

    def _id_token(self, grant: _Grant) -> str:
        now = int(time.time())
        claims = dict(grant.person)
        if self.email_in_userinfo_only:
            claims.pop("email", None)
            claims.pop("email_verified", None)
        claims |= {
            "iss": self.id_token_issuer or self.issuer,
            "aud": self.id_token_audience or self.client_id,
            "iat": now - 120 if self.id_token_expired else now,
            "exp": now - 60 if self.id_token_expired else now + 600,
            "auth_time": now,
        }
        nonce = self.id_token_nonce or grant.nonce
        if nonce is not None:
            claims["nonce"] = nonce
        if self.id_token_algorithm == "none":
            parts = ({"alg": "none"}, claims)
            return ".".join(_base64url(json.dumps(part).encode()) for part in parts) + "."
        if self.id_token_algorithm == "HS256":
            secret = OctKey.import_key(self.client_secret)
            return jwt.encode({"alg": "HS256"}, claims, secret, algorithms=["HS256"])
        key = self._keys[-1]
        return jwt.encode({"alg": "RS256", "kid": key.kid}, claims, key)

    async def _userinfo(self, request: Request) -> Response:
        person = self._bearer_person(request)
        if person is None:
            return JSONResponse({"error": "invalid_token"}, status_code=401)
        return JSONResponse({k: v for k, v in person.items() if k != "amr"})


@dataclass
class FakeGitHub(_FakeUpstream):
    """GitHub's OAuth web flow and the two API calls a sign-in needs, Enterprise layout."""

    client_id: str = "fake-github-client"
    refuse_emails: bool = False  # misbehaviour: /user/emails answers 404 (no user:email scope)

    def _routes(self) -> list[Route]:
        return [
            Route("/login/oauth/authorize", self._authorize),
            Route("/login/oauth/access_token", self._access_token, methods=["POST"]),
            Route("/api/v3/user", self._user),
            Route("/api/v3/user/emails", self._emails),
        ]

    def next_login(
        self,
        id: int = 1001,  # GitHub's own name for it
        login: str = "octocat",
        name: str | None = "Mona Lisa Octocat",
        email: str | None = "octocat@example.com",
        verified: bool = True,
    ) -> None:
        """Queue the next person who signs in (``email=None``: no email on the account)."""
        self._logins.append(
            {"id": id, "login": login, "name": name, "email": email, "verified": verified}
        )

    def _queue_default_login(self) -> None:
        self.next_login()

    async def _authorize(self, request: Request) -> Response:
        params = dict(request.query_params)
        answer = self._authorization_answer(params)
        if answer is None:
            return PlainTextResponse("bad authorization request", status_code=400)
        return _redirect(params["redirect_uri"], answer)

    async def _access_token(self, request: Request) -> Response:
        form = dict(await request.form())
        self.token_requests.append({"fields": sorted(form), "accept": request.headers["accept"]})
        # GitHub answers every refusal with 200 and an "error" member.
        if (form.get("client_id"), form.get("client_secret")) != (
            self.client_id,
            self.client_secret,
        ):
            return JSONResponse({"error": "incorrect_client_credentials"})
        grant = self._redeem(form)
        if grant is None:
            return JSONResponse({"error": "bad_verification_code"})
        return JSONResponse(
            {
                "access_token": self._issue_access_token(grant.person),
                "token_type": "bearer",
                "scope": "read:user,user:email",
            }
        )

    async def _user(self, request: Request) -> Response:
        person = self._bearer_person(request)
        if person is None:
            return JSONResponse({"message": "Bad credentials"}, status_code=401)
        return JSONResponse({"id": person["id"], "login": person["login"], "name": person["name"]})

    async def _emails(self, request: Request) -> Response:
        person = self._bearer_person(request)
        if person is None:
            return JSONResponse({"message": "Bad credentials"}, status_code=401)
        if self.refuse_emails:
            return JSONResponse({"message": "Not Found"}, status_code=404)
        # A verified address that is not the primary one: only the primary one may count.
        emails: list[dict[str, Any]] = [
            {
                "email": f"{person['login']}@users.noreply.example.com",
                "primary": False,
                "verified": True,
                "visibility": None,
            }
        ]
        if person["email"] is not None:
            emails.append(
                {
                    "email": person["email"],
                    "primary": True,
                    "verified": person["verified"],
                    "visibility": "public",
                }
            )
        return JSONResponse(emails)


def _redirect(redirect_uri: str, params: dict[str, str]) -> Response:
    separator = "&" if "?" in redirect_uri else "?"
    return RedirectResponse(f"{redirect_uri}{separator}{urlencode(params)}", status_code=302)


# Named in the decorator, so a module may bind the fixture under another name.
@pytest.fixture(name="fake_oidc")
def fake_oidc() -> Iterator[FakeOidcProvider]:
    """A running fake OpenID Connect provider at ``http://127.0.0.1:PORT``."""
    fake = FakeOidcProvider()
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture(name="fake_github")
def fake_github() -> Iterator[FakeGitHub]:
    """A running fake GitHub (Enterprise layout) at ``http://127.0.0.1:PORT``."""
    fake = FakeGitHub()
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()
