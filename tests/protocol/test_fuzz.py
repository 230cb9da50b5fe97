"""Random query strings, form bodies and headers at the protocol endpoints and the hosted
pages that act on ids: whatever arrives, the answer is never a 5xx.

Each example mixes valid values (a registered client, its redirect URI, a CSRF token) with
hostile ones (quotes, backslashes, NUL and other control characters, non-ASCII text, percent
escapes that are not UTF-8, random bytes), so requests get past the first checks and into
Authlib's grants and the database. Headers are limited to what HTTP/1.1 can carry (no
control characters), as a real server would refuse the rest before the app sees it."""

from __future__ import annotations

import base64
import string
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from identity.app import create_app
from identity.config import Settings

from ..conftest import ISSUER
from ..web_helpers import Browser, csrf_of

MakeClient = Callable[..., tuple[str, str | None]]
CALLBACK = "https://app.example.com/callback"
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
FORM = "application/x-www-form-urlencoded"
TYPES = [f"{FORM}; charset=utf-8", "application/json", "text/plain", "multipart/form-data"]

FUZZ = settings(
    max_examples=50,
    deadline=None,
    database=None,  # nothing written into the checkout
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,  # one app per endpoint, shared by its examples
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)

NAMES = [
    "response_type",
    "client_id",
    "client_secret",
    "redirect_uri",
    "scope",
    "state",
    "nonce",
    "code_challenge",
    "code_challenge_method",
    "prompt",
    "max_age",
    "login_hint",
    "grant_type",
    "code",
    "code_verifier",
    "refresh_token",
    "device_code",
    "resource",
    "token",
    "token_type_hint",
    "username",
    "password",
    "access_token",
    "id_token_hint",
    "post_logout_redirect_uri",
    "confirm",
    "decision",
    "rid",
]
NASTY = [
    "",
    '"',
    "\\",
    "'",
    "\x00",
    "a\x00b",
    "\t",
    "\r\n",
    "\x7f",
    "é",
    "\ufffd",
    "😀",
    "%",
    "%00",
    'openid x"y',
    'https://x/"',
    "https://é.example",
    "javascript:alert(1)",
    " ",
    "x" * 9000,
]
# Pieces appended to a query string or body as they are: escapes that are not UTF-8 or not
# escapes at all, empty and repeated separators.
RAW = ["%ff%fe", "%00", "%", "%zz", "%C3", "&&", "=", "==", "+", ";", "a=%ff", "state=%80"]

text = st.text(st.characters(exclude_categories=["Cs"]), max_size=40)
nasty = st.one_of(st.sampled_from(NASTY), text)
plain = st.text(string.ascii_letters + string.digits + "-._~", min_size=1, max_size=24)
# What HTTP/1.1 can carry in a header value: visible ASCII, obs-text, inner spaces.
header_text = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"),
    max_size=60,
).map(str.strip)


class Target:
    """What the examples may borrow to look valid: clients, a redirect URI, a CSRF token."""

    def __init__(self, http: TestClient, valid: dict[str, list[str]], basic: list[str]) -> None:
        self.http, self.valid, self.basic = http, valid, basic
        self.csrf_token = ""

    def valid_for(self, name: str) -> st.SearchStrategy[str]:
        choices = self.valid.get(name)
        return st.sampled_from(choices) if choices else plain


def _parameters(data: st.DataObject, target: Target, names: list[str]) -> list[tuple[str, str]]:
    """The endpoint's parameters: a few left out, a few hostile, the rest valid (so that
    some examples get deep), then now and then a few unrelated ones."""
    some = st.sets(st.sampled_from(names), max_size=3) if names else st.just(set())
    left_out, hostile = data.draw(some, label="left out"), data.draw(some, label="hostile")
    pairs = [
        (name, data.draw(nasty if name in hostile else target.valid_for(name), label=name))
        for name in names
        if name not in left_out
    ]
    if data.draw(st.integers(0, 3), label="extra?") == 0:
        extra = st.tuples(st.one_of(st.sampled_from(NAMES), text), nasty)
        pairs += data.draw(st.lists(extra, max_size=3), label="extra")
    return pairs


def _encoded(data: st.DataObject, pairs: list[tuple[str, str]]) -> str:
    """``pairs`` form-encoded; now and then with raw pieces that are not valid escapes."""
    parts = [f"{quote(name, safe='')}={quote(value, safe='')}" for name, value in pairs]
    if data.draw(st.integers(0, 4), label="raw?") == 0:
        parts += data.draw(st.lists(st.sampled_from(RAW), min_size=1, max_size=3), label="raw")
    return "&".join(parts)


def _headers(data: st.DataObject, target: Target, cookie: bool) -> dict[str, bytes]:
    headers: dict[str, bytes] = {}
    authorization = data.draw(
        st.one_of(
            st.none(),
            st.sampled_from(target.basic),
            st.one_of(
                st.binary(max_size=40).map(lambda b: "Basic " + base64.b64encode(b).decode()),
                header_text.map(lambda t: "Basic " + t),
                header_text.map(lambda t: "Bearer " + t),
                header_text,
            ),
        ),
        label="authorization",
    )
    if authorization:
        headers["authorization"] = authorization.encode("latin-1")
    for name, strategy in (
        ("user-agent", header_text),
        ("x-forwarded-for", header_text),
        ("cookie", header_text if cookie else st.nothing()),
    ):
        value = data.draw(st.one_of(st.none(), strategy), label=name)
        if value:
            headers[name] = value.encode("latin-1")
    return headers


def _send(
    data: st.DataObject, target: Target, methods: list[str], path: str, names: list[str]
) -> Any:
    """One request: on GET the parameters in the query, on POST in the body (sometimes
    random bytes, sometimes under another Content-Type)."""
    method = data.draw(st.sampled_from(methods), label="method")
    account = path.startswith("/account/")
    headers = _headers(data, target, cookie=not account)
    parameters = _parameters(data, target, names)
    if method == "GET":
        query = _encoded(data, parameters)
        return target.http.get(f"{path}?{query}", headers=headers, follow_redirects=False)
    # The account forms carry the session's CSRF token most of the time, to reach the rows.
    if account and data.draw(st.integers(0, 4), label="csrf?") > 0:
        parameters.append(("csrf_token", target.csrf_token))
    body = _encoded(data, parameters).encode()
    if data.draw(st.integers(0, 9), label="random bytes?") == 0:
        body = data.draw(st.binary(max_size=4096), label="body")
    content_type = FORM
    if data.draw(st.integers(0, 5), label="other type?") == 0:
        content_type = data.draw(st.one_of(st.sampled_from(TYPES), header_text), label="type")
    headers["content-type"] = content_type.encode("latin-1")
    query = _encoded(data, _parameters(data, target, [])) if data.draw(st.booleans()) else ""
    url = f"{path}?{query}" if query else path
    return target.http.post(url, content=body, headers=headers, follow_redirects=False)


@pytest.fixture
def target(settings: Settings, make_client: MakeClient) -> Iterator[Target]:
    web, web_secret = make_client(
        redirect_uris=[CALLBACK],
        grant_types=["authorization_code", "refresh_token"],
        scope="openid email",
        post_logout_redirect_uris=["https://app.example.com/bye"],
    )
    service, service_secret = make_client(
        grant_types=["client_credentials", DEVICE_GRANT],
        scope="read",
        audience=["https://api.example.com"],
    )
    device, _ = make_client(public=True, grant_types=[DEVICE_GRANT], scope="openid")
    # First party: a signed-in authorization request gets its code without a consent page.
    own, _ = make_client(
        redirect_uris=[CALLBACK], grant_types=["authorization_code"], first_party=True
    )
    valid = {
        "client_id": [web, service, device, own],
        "client_secret": [str(web_secret), str(service_secret)],
        "redirect_uri": [CALLBACK],
        "response_type": ["code"],
        "scope": ["openid", "read", "openid email"],
        "code_challenge": ["E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"],
        "code_challenge_method": ["S256"],
        "grant_type": [
            "client_credentials",
            "authorization_code",
            "refresh_token",
            "password",
            DEVICE_GRANT,
        ],
        "resource": ["https://api.example.com"],
        "token_type_hint": ["access_token", "refresh_token"],
        "prompt": ["none", "login", "consent"],
        "max_age": ["0", "3600"],
        "post_logout_redirect_uri": ["https://app.example.com/bye"],
        "confirm": ["1"],
    }
    basic = [
        "Basic " + base64.b64encode(f"{cid}:{secret}".encode()).decode()
        for cid, secret in ((web, web_secret), (service, service_secret))
    ]
    with TestClient(create_app(settings), base_url=ISSUER) as http:
        target = Target(http, valid, basic)
        token = http.post(
            "/oauth2/token", data={"grant_type": "client_credentials"}, auth=basic_pair(basic[1])
        ).json()["access_token"]
        valid["token"] = valid["access_token"] = [token]
        yield target


def basic_pair(header: str) -> tuple[str, str]:
    client_id, _, secret = base64.b64decode(header.split()[1]).decode().partition(":")
    return client_id, secret


@pytest.fixture
def signed_in(target: Target, user: str) -> Target:
    """The target with a signed-in browser session and its CSRF token."""
    assert Browser(target.http).login(user).status_code == 303
    target.csrf_token = csrf_of(target.http.get("/account").text)
    return target


_AUTHORIZE = [
    "response_type",
    "client_id",
    "redirect_uri",
    "scope",
    "state",
    "nonce",
    "code_challenge",
    "code_challenge_method",
    "prompt",
    "max_age",
    "login_hint",
    "resource",
]
_TOKEN = [
    "grant_type",
    "client_id",
    "client_secret",
    "code",
    "redirect_uri",
    "code_verifier",
    "refresh_token",
    "device_code",
    "scope",
    "resource",
    "username",
    "password",
]
_TOKEN_ENDPOINTS = ["token", "token_type_hint", "client_id", "client_secret"]
_LOGOUT = ["id_token_hint", "client_id", "post_logout_redirect_uri", "state", "confirm"]
ENDPOINTS = [
    (["GET", "POST"], "/oauth2/authorize", _AUTHORIZE),
    (["POST"], "/oauth2/token", _TOKEN),
    (["POST"], "/oauth2/introspect", _TOKEN_ENDPOINTS),
    (["POST"], "/oauth2/revoke", _TOKEN_ENDPOINTS),
    (["GET", "POST"], "/oauth2/userinfo", ["access_token"]),
    (["POST"], "/oauth2/device_authorization", ["client_id", "client_secret", "scope", "resource"]),
    (["GET", "POST"], "/oauth2/logout", _LOGOUT),
]


@pytest.mark.parametrize(("methods", "path", "names"), ENDPOINTS, ids=[e[1] for e in ENDPOINTS])
@FUZZ
@given(data=st.data())
def test_protocol_endpoints_never_answer_5xx(
    target: Target, methods: list[str], path: str, names: list[str], data: st.DataObject
) -> None:
    response = _send(data, target, methods, path, names)
    assert response.status_code < 500, response.text[:300]


@FUZZ
@given(data=st.data())
def test_authorization_endpoint_signed_in_never_answers_5xx(
    signed_in: Target, data: st.DataObject
) -> None:
    response = _send(data, signed_in, ["GET", "POST"], "/oauth2/authorize", _AUTHORIZE)
    assert response.status_code < 500, response.text[:300]


@pytest.mark.parametrize("kind", ["consents", "sessions"])
@FUZZ
@given(data=st.data(), segment=st.one_of(st.just("a\x00b"), nasty).filter(bool))
def test_account_revoke_never_answers_5xx(
    signed_in: Target, kind: str, data: st.DataObject, segment: str
) -> None:
    path = f"/account/{kind}/{quote(segment, safe='')}/revoke"
    response = _send(data, signed_in, ["POST"], path, [])
    assert response.status_code < 500, response.text[:300]
