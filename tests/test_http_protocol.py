"""identity serve's HTTP protocol: JWKS and discovery answered from the parser's callback,
byte for byte the app's answer, and everything else through ASGI as before.

The protocol is driven the way uvicorn drives it (``connection_made``, ``data_received``)
over a transport that records what is written, so a test sees whether the answer was
written at once, with no ASGI task, or by a task that had to run.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import json
import logging
import threading
from collections.abc import Awaitable, Callable, Iterator
from email.utils import formatdate
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from prometheus_client import REGISTRY
from starlette.testclient import TestClient
from uvicorn.server import ServerState

from identity.config import Settings
from identity.http_protocol import LANE_KEY, IdentityHttpProtocol, _LaneCycle
from identity.services import key_store

JWKS = "/.well-known/jwks.json"
DISCOVERY = "/.well-known/openid-configuration"
VOLATILE = {b"date", b"x-request-id", b"connection"}


class RecordingTransport(asyncio.Transport):
    """A socket's transport that keeps what is written (the client's end of the test)."""

    def __init__(self, peer: tuple[str, int] = ("192.0.2.10", 50000)) -> None:
        super().__init__()
        self.written = bytearray()
        self.writes = 0  # write calls: each a send() system call on a real socket
        self.closed = False
        self._peer = peer

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": self._peer, "sockname": ("127.0.0.1", 8000)}.get(name, default)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += data
        self.writes += 1

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


class Connection:
    """One connection to the protocol, on an event loop of its own that runs only when asked."""

    def __init__(
        self,
        client: TestClient,
        peer: tuple[str, int] = ("192.0.2.10", 50000),
        app_state: dict[str, Any] | None = None,
    ) -> None:
        self.loop = asyncio.new_event_loop()
        config = uvicorn.Config(client.app, http=IdentityHttpProtocol, log_config=None)
        config.load()
        self.state = ServerState()
        # What uvicorn's server sets every second (config's headers and the date).
        self.state.default_headers = [(b"date", formatdate(usegmt=True).encode())]
        state = client.app_state if app_state is None else app_state
        self.protocol = IdentityHttpProtocol(config, self.state, state, _loop=self.loop)
        self.transport = RecordingTransport(peer)
        self.protocol.connection_made(self.transport)

    def send(self, data: bytes) -> bytes:
        """Feed ``data``; what was written before any task ran."""
        self.transport.written.clear()
        self.transport.writes = 0
        self.protocol.data_received(data)
        return bytes(self.transport.written)

    def run_tasks(self) -> bytes:
        """Run the ASGI tasks started so far to their end; everything written since ``send``."""
        while self.state.tasks:
            self.run(lambda: asyncio.wait(set(self.state.tasks), timeout=30))
        return bytes(self.transport.written)

    def run(self, awaitable: Callable[[], Awaitable[Any]]) -> None:
        """Run this connection's loop until ``awaitable()`` is done, in a thread of its own:
        Playwright's sync API leaves a loop running in the test thread after browser tests."""
        failures: list[BaseException] = []

        def target() -> None:
            try:
                self.loop.run_until_complete(awaitable())
            except BaseException as error:  # handed to the test thread below
                failures.append(error)

        thread = threading.Thread(target=target)
        thread.start()
        thread.join(timeout=60)
        if failures:
            raise failures[0]

    def close(self) -> None:
        self.protocol.connection_lost(None)
        self.loop.close()


@pytest.fixture
def connect(http: TestClient) -> Iterator[Callable[..., Connection]]:
    opened: list[Connection] = []

    def open_connection(client: TestClient = http, **options: Any) -> Connection:
        connection = Connection(client, **options)
        opened.append(connection)
        return connection

    yield open_connection
    for connection in opened:
        connection.close()


def _get(path: str, *headers: str) -> bytes:
    lines = [f"GET {path} HTTP/1.1", "Host: 127.0.0.1:8000", *headers, "", ""]
    return "\r\n".join(lines).encode()


def _responses(raw: bytes) -> list[tuple[int, list[tuple[bytes, bytes]], bytes]]:
    """The HTTP/1.1 responses in ``raw``, each (status, headers, body by Content-Length)."""
    found = []
    while raw:
        head, _, rest = raw.partition(b"\r\n\r\n")
        status_line, *lines = head.split(b"\r\n")
        headers = [tuple(line.split(b": ", 1)) for line in lines]
        length = int(dict(headers).get(b"content-length", b"0"))  # type: ignore[arg-type]
        found.append((int(status_line.split()[1]), headers, rest[:length]))
        raw = rest[length:]
    return found  # type: ignore[return-value]


def _stable(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    return [(name, value) for name, value in headers if name not in VOLATILE]


@pytest.mark.parametrize("path", [JWKS, DISCOVERY, "/.well-known/oauth-authorization-server"])
def test_a_ready_document_is_written_at_once_and_is_the_apps_answer(
    http: TestClient, connect: Callable[..., Connection], path: str
) -> None:
    connection = connect()
    written = connection.send(_get(path))
    assert not connection.state.tasks  # no ASGI task: the protocol answered itself
    ((status, headers, body),) = _responses(written)
    names = [name for name, _ in headers]
    assert status == 200 and b"date" in names and b"connection" not in names
    assert len(dict(headers)[b"x-request-id"]) == 32

    # The same request through the app's own stack (ASGI, every middleware): same bytes.
    through_app = http.get(path)
    assert body == through_app.content
    assert _stable(headers) == _stable(through_app.headers.raw)
    assert dict(headers)[b"x-content-type-options"] == b"nosniff"


def test_what_is_not_a_plain_get_goes_through_the_app_with_the_same_answer(
    connect: Callable[..., Connection],
) -> None:
    ready = _responses(connect().send(_get(JWKS)))[0]
    requests = {
        "query string": _get(JWKS + "?x=1"),
        "percent-escape": _get("/.well-known/jwks%2Ejson"),
        "connection close": _get(JWKS, "Connection: close"),
        "HTTP/1.0": b"GET " + JWKS.encode() + b" HTTP/1.0\r\nHost: x\r\n\r\n",
        "a body": _get(JWKS, "Content-Length: 2")[:-2] + b"\r\n{}",
    }
    for name, request in requests.items():
        connection = connect()
        assert connection.send(request) == b"", name  # not answered from the callback
        assert connection.state.tasks, name
        ((status, headers, body),) = _responses(connection.run_tasks())
        assert (status, body) == (200, ready[2]), name
        assert _stable(headers) == _stable(ready[1]), name


def test_head_goes_through_the_app(connect: Callable[..., Connection]) -> None:
    connection = connect()
    assert connection.send(_get(JWKS).replace(b"GET", b"HEAD", 1)) == b""
    head, _, body = connection.run_tasks().partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ") and body == b""  # a head, never the document


def test_a_ready_request_behind_one_in_progress_waits_its_turn(
    connect: Callable[..., Connection],
) -> None:
    connection = connect()
    # Pipelined: a request the app must serve, then JWKS, in one read.
    written = connection.send(_get("/healthz") + _get(JWKS))
    assert written == b""  # JWKS must not overtake the health check
    health, jwks = _responses(connection.run_tasks())
    assert json.loads(health[2]) == {"status": "ok"}
    assert b'"keys"' in jwks[2]
    # Then the next one on the connection is answered at once again.
    assert _responses(connection.send(_get(DISCOVERY)))[0][0] == 200


def test_two_ready_requests_in_one_read_are_both_answered_in_order(
    connect: Callable[..., Connection],
) -> None:
    connection = connect()
    written = connection.send(_get(JWKS) + _get(DISCOVERY))
    first, second = _responses(written)
    assert b'"keys"' in first[2] and b'"issuer"' in second[2]
    # The keep-alive timeout is armed once the last one is answered, not cancelled for good.
    assert connection.protocol.timeout_keep_alive_task is not None


def test_with_cors_a_request_with_an_origin_goes_through_the_app(
    app_for: Callable[[Settings], TestClient],
    settings_for: Callable[..., Settings],
    connect: Callable[..., Connection],
) -> None:
    client = app_for(settings_for(cors_origins=("https://app.example.com",)))
    connection = connect(client)
    assert connection.send(_get(JWKS, "Origin: https://app.example.com")) == b""
    ((_, headers, _),) = _responses(connection.run_tasks())
    assert dict(headers)[b"access-control-allow-origin"] == b"https://app.example.com"
    # Without an Origin it is a plain GET again.
    assert _responses(connection.send(_get(JWKS)))[0][0] == 200


def test_a_new_signing_key_is_in_the_next_ready_answer(
    app_for: Callable[[Settings], TestClient],
    settings_for: Callable[..., Settings],
    connect: Callable[..., Connection],
    tmp_path: Path,
) -> None:
    settings = settings_for(keys_dir=tmp_path / "keys")
    connection = connect(app_for(settings))
    before = json.loads(_responses(connection.send(_get(JWKS)))[0][2])
    promoted = key_store(settings).rotate()
    after = json.loads(_responses(connection.send(_get(JWKS)))[0][2])
    # Rotation promotes the published next key and publishes a new next one.
    kids_before = {key["kid"] for key in before["keys"]}
    kids_after = {key["kid"] for key in after["keys"]}
    assert promoted.kid in kids_after and kids_after - kids_before


def test_a_ready_answer_is_counted_and_logged_with_its_request_id(
    connect: Callable[..., Connection], caplog: pytest.LogCaptureFixture
) -> None:
    def served_jwks() -> float:
        labels = {"route": JWKS, "method": "GET", "status": "200"}
        return REGISTRY.get_sample_value("identity_http_requests_total", labels) or 0.0

    caplog.set_level(logging.INFO, logger="identity.access")
    before = served_jwks()
    caplog.clear()
    ((_, headers, _),) = _responses(connect().send(_get(JWKS, "User-Agent: probe/2.0")))
    (record,) = [r for r in caplog.records if r.name == "identity.access"]
    fields = record.fields  # type: ignore[attr-defined]
    assert fields["request_id"] == dict(headers)[b"x-request-id"].decode()
    assert fields["route"] == JWKS and fields["status"] == 200
    assert fields["client_ip"] == "192.0.2.10" and fields["user_agent"] == "probe/2.0"
    assert served_jwks() == before + 1


def test_a_trusted_proxys_request_id_is_kept(
    app_for: Callable[[Settings], TestClient],
    settings_for: Callable[..., Settings],
    connect: Callable[..., Connection],
) -> None:
    settings = settings_for(trusted_proxies=(ipaddress.ip_network("127.0.0.0/8"),))
    client = app_for(settings)
    behind_proxy = connect(client, peer=("127.0.0.1", 40000))
    ((_, headers, _),) = _responses(behind_proxy.send(_get(JWKS, "X-Request-ID: edge-7")))
    assert dict(headers)[b"x-request-id"] == b"edge-7"
    ((_, headers, _),) = _responses(connect(client).send(_get(JWKS, "X-Request-ID: edge-7")))
    assert dict(headers)[b"x-request-id"] != b"edge-7"  # not from an untrusted peer


def test_a_response_through_the_app_leaves_in_one_write(
    connect: Callable[..., Connection],
) -> None:
    connection = connect()
    connection.send(_get("/healthz"))
    ((status, _, body),) = _responses(connection.run_tasks())
    assert status == 200 and json.loads(body) == {"status": "ok"}
    assert connection.transport.writes == 1  # uvicorn alone writes the head, then the body


def test_a_head_with_no_body_still_leaves_at_the_end_of_its_response(
    connect: Callable[..., Connection],
) -> None:
    connection = connect()
    connection.send(_get("/healthz").replace(b"GET", b"HEAD", 1))
    written = connection.run_tasks()
    assert written.startswith(b"HTTP/1.1 ") and written.endswith(b"\r\n\r\n")
    assert connection.transport.writes == 1


def test_a_100_continue_is_not_held_back(connect: Callable[..., Connection]) -> None:
    connection = connect()
    head = (
        "POST /oauth2/revoke HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 7\r\n\r\n"
    )
    connection.send(head.encode())
    # The app asks for the body: the client is told to send it, before it has.
    connection.run(lambda: asyncio.sleep(0.05))
    assert bytes(connection.transport.written) == b"HTTP/1.1 100 Continue\r\n\r\n"
    connection.protocol.data_received(b"token=x")
    answer = _responses(connection.run_tasks().split(b"\r\n\r\n", 1)[1])
    assert answer[0][0] == 401  # no client credentials: the revocation endpoint's own refusal


# The hot lane: token, introspection and userinfo requests read by the protocol itself and
# answered by the app's lane (protocol.fast_lane.HotLane), with no uvicorn cycle.

MakeClient = Callable[..., tuple[str, str]]
INTROSPECT = "/oauth2/introspect"
TOKEN = "/oauth2/token"
FORM = "application/x-www-form-urlencoded"


def _post(path: str, form: str, *headers: str, content_type: str = FORM) -> bytes:
    body = form.encode()
    lines = [
        f"POST {path} HTTP/1.1",
        "Host: 127.0.0.1:8000",
        f"Content-Type: {content_type}",
        f"Content-Length: {len(body)}",
        *headers,
        "",
        "",
    ]
    return "\r\n".join(lines).encode() + body


def _basic(client: tuple[str, str]) -> str:
    return "Authorization: Basic " + base64.b64encode(f"{client[0]}:{client[1]}".encode()).decode()


def _token(http: TestClient, client: tuple[str, str]) -> str:
    answer = http.post(TOKEN, data={"grant_type": "client_credentials"}, auth=client)
    token: str = answer.json()["access_token"]
    return token


def _in_lane(connection: Connection) -> bool:
    return isinstance(connection.protocol.cycle, _LaneCycle)


def _token_request_in_lane(
    connect: Callable[..., Connection], make_client: MakeClient
) -> tuple[tuple[str, str], Connection]:
    """A client and a connection whose client_credentials request the lane is answering."""
    client = make_client(scope="read")
    connection = connect()
    connection.send(_post(TOKEN, "grant_type=client_credentials", _basic(client)))
    assert _in_lane(connection)
    return client, connection


def test_introspection_is_answered_by_the_lane_as_the_app_answers_it(
    http: TestClient, connect: Callable[..., Connection], make_client: MakeClient
) -> None:
    client, other = make_client(scope="read"), make_client(scope="read")
    token = _token(http, client)
    cases = {
        "active": (f"token={token}", _basic(client)),
        "another client's": (f"token={token}", _basic(other)),
        "not a token": ("token=nope", _basic(client)),
        "wrong secret": (f"token={token}", _basic((client[0], "wrong"))),
        "no credentials": (f"token={token}",),
    }
    for name, (form, *headers) in cases.items():
        connection = connect()
        assert connection.send(_post(INTROSPECT, form, *headers)) == b"", name  # a task
        assert _in_lane(connection), name
        ((status, answer_headers, body),) = _responses(connection.run_tasks())
        assert connection.transport.writes == 1, name
        # The same request the full way (a query string is never the lane's).
        auth = {"Authorization": headers[0].split(": ", 1)[1]} if headers else {}
        through_app = http.post(
            INTROSPECT + "?via=app", content=form, headers=auth | {"Content-Type": FORM}
        )
        assert (status, body) == (through_app.status_code, through_app.content), name
        assert _stable(answer_headers) == _stable(through_app.headers.raw), name


def test_a_token_from_the_lane_has_the_apps_headers_and_a_working_token(
    http: TestClient, connect: Callable[..., Connection], make_client: MakeClient
) -> None:
    client, connection = _token_request_in_lane(connect, make_client)
    ((status, headers, body),) = _responses(connection.run_tasks())
    through_app = http.post(
        TOKEN + "?via=app", data={"grant_type": "client_credentials"}, auth=client
    )
    assert status == through_app.status_code == 200
    assert _stable(headers) == _stable(through_app.headers.raw)
    issued = json.loads(body)
    assert issued.keys() == through_app.json().keys()
    introspected = http.post(INTROSPECT, data={"token": issued["access_token"]}, auth=client)
    assert introspected.json()["active"] is True


def test_what_the_lane_does_not_take_goes_through_the_app_with_the_same_answer(
    http: TestClient, connect: Callable[..., Connection], make_client: MakeClient
) -> None:
    client = make_client(scope="read")
    token = _token(http, client)
    form = f"token={token}"
    expected = http.post(INTROSPECT + "?via=app", data={"token": token}, auth=client)
    requests = {
        "query string": _post(INTROSPECT + "?x=1", form, _basic(client)),
        "percent-escape": _post("/oauth2/%69ntrospect", form, _basic(client)),
        "connection close": _post(INTROSPECT, form, _basic(client), "Connection: close"),
        "HTTP/1.0": _post(INTROSPECT, form, _basic(client)).replace(b"HTTP/1.1", b"HTTP/1.0", 1),
    }
    for name, request in requests.items():
        connection = connect()
        connection.send(request)
        assert not _in_lane(connection), name
        ((status, headers, body),) = _responses(connection.run_tasks())
        assert (status, body) == (200, expected.content), name
        assert _stable(headers) == _stable(expected.headers.raw), name


def test_bodies_the_lane_does_not_take_get_the_apps_refusals(
    http: TestClient, connect: Callable[..., Connection], make_client: MakeClient
) -> None:
    client = make_client(scope="read")
    chunked = (
        f"POST {INTROSPECT} HTTP/1.1\r\nHost: x\r\n{_basic(client)}\r\n"
        f"Content-Type: {FORM}\r\nTransfer-Encoding: chunked\r\n\r\n"
        "8\r\ntoken=ab\r\n0\r\n\r\n"
    ).encode()
    cases = {
        # Taken by its head, handed to the app once the body shows a NUL: the layers' 400.
        "NUL in the form": (_post(INTROSPECT, "token=a%00b", _basic(client)), 400),
        # Over the body cap (settings.max_body_bytes): the layers' 413, never read whole.
        "over the cap": (_post(INTROSPECT, "token=" + "a" * 70_000, _basic(client)), 413),
        "chunked": (chunked, 200),
    }
    for name, (request, wanted) in cases.items():
        connection = connect()
        connection.send(request)
        assert not _in_lane(connection), name
        ((status, _, body),) = _responses(connection.run_tasks())
        assert status == wanted, (name, body)


def test_a_body_that_comes_in_pieces_is_answered_once_whole(
    http: TestClient, connect: Callable[..., Connection], make_client: MakeClient
) -> None:
    client = make_client(scope="read")
    request = _post(INTROSPECT, f"token={_token(http, client)}", _basic(client))
    connection = connect()
    assert connection.send(request[:-20]) == b""
    assert not connection.state.tasks  # nothing to answer yet
    connection.send(request[-20:])
    ((status, _, body),) = _responses(connection.run_tasks())
    assert status == 200 and json.loads(body)["active"] is True


def test_requests_pipelined_behind_a_lane_request_wait_their_turn(
    http: TestClient, connect: Callable[..., Connection], make_client: MakeClient
) -> None:
    client = make_client(scope="read")
    connection = connect()
    lane = _post(TOKEN, "grant_type=client_credentials", _basic(client))
    connection.send(lane)
    assert _in_lane(connection)
    # More on the connection before the answer: JWKS must not overtake the token.
    assert connection.send(_get(JWKS) + _get("/healthz") + lane) == b""
    answers = _responses(connection.run_tasks())
    assert [status for status, _, _ in answers] == [200, 200, 200, 200]
    assert b"access_token" in answers[0][2] and b'"keys"' in answers[1][2]
    assert json.loads(answers[2][2]) == {"status": "ok"} and b"access_token" in answers[3][2]
    assert connection.protocol.timeout_keep_alive_task is not None  # idle again


def test_a_client_that_leaves_during_a_lane_answer_is_not_written_to(
    http: TestClient, connect: Callable[..., Connection], make_client: MakeClient
) -> None:
    _client, connection = _token_request_in_lane(connect, make_client)
    connection.protocol.connection_lost(None)
    assert connection.run_tasks() == b""
    assert connection.transport.closed


def test_a_shutdown_during_a_lane_answer_lets_it_finish_then_closes(
    http: TestClient, connect: Callable[..., Connection], make_client: MakeClient
) -> None:
    _client, connection = _token_request_in_lane(connect, make_client)
    connection.protocol.shutdown()
    assert not connection.transport.closed  # the answer under way is still given
    ((status, headers, _),) = _responses(connection.run_tasks())
    assert status == 200 and dict(headers)[b"connection"] == b"close"
    assert connection.transport.closed


def test_a_lane_request_is_counted_and_logged_with_its_client(
    http: TestClient,
    connect: Callable[..., Connection],
    make_client: MakeClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = make_client(scope="read")
    token = _token(http, client)

    def introspections() -> float:
        labels = {"route": INTROSPECT, "method": "POST", "status": "200"}
        return REGISTRY.get_sample_value("identity_http_requests_total", labels) or 0.0

    caplog.set_level(logging.INFO, logger="identity.access")
    before = introspections()
    caplog.clear()
    connection = connect()
    connection.send(_post(INTROSPECT, f"token={token}", _basic(client)))
    assert _in_lane(connection)
    ((_, headers, _),) = _responses(connection.run_tasks())
    (record,) = [r for r in caplog.records if r.name == "identity.access"]
    fields = record.fields  # type: ignore[attr-defined]
    assert fields["request_id"] == dict(headers)[b"x-request-id"].decode()
    assert fields["route"] == INTROSPECT and fields["status"] == 200
    assert fields["client_id"] == client[0] and fields["client_ip"] == "192.0.2.10"
    assert introspections() == before + 1


class _FailingLane:
    """A lane whose answer fails before it writes anything."""

    def takes(self, method: bytes, url: bytes, headers: object) -> str | None:
        return "route" if url == b"/fails" else None

    def is_clean(self, headers: object, body: bytes) -> bool:
        return True

    async def answer(self, route: object, scope: object, body: bytes, write: object) -> None:
        raise RuntimeError("the lane broke")


def test_a_lane_answer_that_fails_gets_a_500_and_the_connection_closes(
    http: TestClient, connect: Callable[..., Connection], caplog: pytest.LogCaptureFixture
) -> None:
    connection = connect(app_state=http.app_state | {LANE_KEY: _FailingLane()})
    caplog.set_level(logging.ERROR, logger="uvicorn.error")
    connection.send(_post("/fails", "x=1"))
    ((status, headers, body),) = _responses(connection.run_tasks())
    assert (status, body) == (500, b"Internal Server Error")
    assert dict(headers)[b"connection"] == b"close" and connection.transport.closed
    assert any("the lane broke" in str(r.exc_info[1]) for r in caplog.records if r.exc_info)


def test_userinfo_is_answered_by_the_lane_as_the_app_answers_it(
    http: TestClient, connect: Callable[..., Connection], make_client: MakeClient
) -> None:
    token = _token(http, make_client(scope="read"))  # a machine's token: no user to show
    cases = {401: (), 403: (f"Authorization: Bearer {token}",)}
    for wanted, headers in cases.items():
        connection = connect()
        assert connection.send(_get("/oauth2/userinfo", *headers)) == b""
        assert _in_lane(connection)
        ((status, answer_headers, body),) = _responses(connection.run_tasks())
        auth = dict(header.split(": ", 1) for header in headers)
        through_app = http.get("/oauth2/userinfo?via=app", headers=auth)
        assert status == through_app.status_code == wanted, body
        assert body == through_app.content
        assert _stable(answer_headers) == _stable(through_app.headers.raw)
