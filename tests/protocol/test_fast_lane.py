"""The fast lane (protocol.fast_lane) serves the hot routes with the headers, bodies, errors,
access lines and metrics of the full middleware stack. A query string sends a request the
full way, which is how these tests see both."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import pytest
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from identity.app import _http_error, _unexpected
from identity.config import Settings
from identity.protocol.fast_lane import HotLane, HotRoute
from tests.loops import run_in_own_loop

MakeClient = Callable[..., tuple[str, str]]
FORM = b"application/x-www-form-urlencoded"

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


def _lane_answer(
    settings: Settings, endpoint: Callable[[Request], Awaitable[Response]]
) -> tuple[int, dict[bytes, bytes], bytes]:
    """What ``HotLane.answer`` writes for a POST to a route served by ``endpoint``, as the
    HTTP protocol hands it over; with the app's own handlers."""
    route = Route("/oauth2/probe", endpoint, methods=["POST"])
    lane = HotLane(
        routes=[HotRoute("POST", route, True)],
        settings=settings,
        handlers={HTTPException: _http_error},
        unexpected=_unexpected,
    )
    head = [(b"host", b"127.0.0.1:8000"), (b"content-type", FORM), (b"content-length", b"3")]
    hot = lane.takes(b"POST", b"/oauth2/probe", head)
    assert hot is not None
    scope = {
        "type": "http", "method": "POST", "path": "/oauth2/probe", "raw_path": b"/oauth2/probe",
        "query_string": b"", "root_path": "", "headers": head, "client": ("192.0.2.1", 1),
        "server": ("127.0.0.1", 8000), "scheme": "http", "http_version": "1.1",
    }  # fmt: skip
    written: list[tuple[int, dict[bytes, bytes], bytes]] = []
    # In a loop of its own: Playwright leaves one running in this thread after browser tests.
    run_in_own_loop(
        lambda: lane.answer(hot, scope, b"a=1", lambda s, h, b: written.append((s, dict(h), b)))
    )
    (answer,) = written
    return answer


def test_an_error_no_handler_takes_gets_the_apps_500_from_the_lane(settings: Settings) -> None:
    async def broken(request: Request) -> Response:
        raise RuntimeError("boom")

    status, headers, body = _lane_answer(settings, broken)
    assert status == 500 and json.loads(body)["error"] == "server_error"
    assert headers[b"x-content-type-options"] == b"nosniff" and b"x-request-id" in headers


def test_a_streamed_response_reaches_the_lane_whole(settings: Settings) -> None:
    async def streamed(request: Request) -> Response:
        form = await request.form()

        async def parts() -> AsyncIterator[bytes]:
            yield b"got "
            yield str(form["a"]).encode()

        return StreamingResponse(parts(), media_type="text/plain")

    status, headers, body = _lane_answer(settings, streamed)
    assert (status, body) == (200, b"got 1")
    assert headers[b"content-type"].startswith(b"text/plain")
