"""The fast lane (protocol.fast_lane) serves the hot routes with the headers, bodies, errors,
access lines and metrics of the full middleware stack. A query string sends a request the
full way, which is how these tests see both."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

import pytest
from starlette.testclient import TestClient

MakeClient = Callable[..., tuple[str, str]]

# Headers that differ between any two responses.
_PER_RESPONSE = {"x-request-id"}


def _headers(response: object) -> dict[str, str]:
    return {k: v for k, v in response.headers.items() if k not in _PER_RESPONSE}  # type: ignore[attr-defined]


def _same(fast: object, full: object) -> None:
    assert fast.status_code == full.status_code  # type: ignore[attr-defined]
    assert _headers(fast) == _headers(full)
    assert fast.content == full.content  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "path",
    ["/.well-known/jwks.json", "/.well-known/openid-configuration", "/oauth2/userinfo"],
)
def test_gets_answer_as_the_full_stack_does(http: TestClient, path: str) -> None:
    _same(http.get(path), http.get(path + "?via=full"))


def test_token_and_introspection_answer_as_the_full_stack_does(
    http: TestClient, make_client: MakeClient
) -> None:
    client = make_client(scope="read")
    cases = [
        ("/oauth2/token", {"grant_type": "client_credentials", "scope": "nope"}, client),
        ("/oauth2/token", {"grant_type": "client_credentials"}, (client[0], "wrong")),
        ("/oauth2/token", {"grant_type": "nonsense"}, client),
        ("/oauth2/introspect", {"token": "not-a-token"}, client),
        ("/oauth2/introspect", {"token": "x"}, (client[0], "wrong")),
    ]
    for path, form, auth in cases:
        _same(
            http.post(path, data=form, auth=auth),
            http.post(path + "?via=full", data=form, auth=auth),
        )


def test_bodies_the_lane_does_not_take_get_the_full_stacks_answer(
    http: TestClient, make_client: MakeClient
) -> None:
    client = make_client(scope="read")
    form = "grant_type=client_credentials&scope=re%00ad"
    headers = {"content-type": "application/x-www-form-urlencoded"}
    nul = http.post("/oauth2/token", content=form, headers=headers, auth=client)
    _same(nul, http.post("/oauth2/token?via=full", content=form, headers=headers, auth=client))
    assert nul.status_code == 400
    oversized = "grant_type=client_credentials&pad=" + "x" * 2_000_000
    big = http.post("/oauth2/token", content=oversized, headers=headers, auth=client)
    assert big.status_code == 413

    def chunks() -> Iterator[bytes]:
        yield b"grant_type=client_"
        yield b"credentials"

    chunked = http.post("/oauth2/token", content=chunks(), headers=headers, auth=client)
    assert chunked.status_code == 200, chunked.text  # no Content-Length: the full way


def test_each_lane_request_writes_one_access_line_with_its_route(
    http: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    # Its metrics: tests/test_metrics.py counts JWKS requests on a served instance.
    with caplog.at_level(logging.INFO, logger="identity.access"):
        http.get("/.well-known/jwks.json")
    lines = [r.getMessage() for r in caplog.records if r.name == "identity.access"]
    assert len(lines) == 1
    assert lines[0].startswith("GET /.well-known/jwks.json 200 ")
