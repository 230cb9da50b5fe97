"""The client's IP: the socket peer, or behind a trusted proxy the right-most untrusted hop."""

from __future__ import annotations

import ipaddress

import pytest
from starlette.requests import Request

from identity.security import client_ip

PROXIES = (ipaddress.ip_network("10.0.0.0/8"),)


def _request(peer: str, forwarded: list[str]) -> Request:
    headers = [(b"x-forwarded-for", value.encode()) for value in forwarded]
    return Request({"type": "http", "client": (peer, 1234), "headers": headers})


@pytest.mark.parametrize(
    ("peer", "forwarded", "expected"),
    [
        ("203.0.113.9", ["198.51.100.1"], "203.0.113.9"),  # no trusted proxy: header ignored
        ("10.0.0.2", ["198.51.100.1"], "198.51.100.1"),
        ("10.0.0.2", ["6.6.6.6, 198.51.100.1, 10.0.0.3"], "198.51.100.1"),  # spoofed left part
        ("10.0.0.2", ["6.6.6.6", "198.51.100.1"], "198.51.100.1"),  # two header lines
        ("10.0.0.2", ["not-an-ip"], "10.0.0.2"),
        ("10.0.0.2", [], "10.0.0.2"),
        ("10.0.0.2", ["10.0.0.4, 10.0.0.3"], "10.0.0.2"),  # only proxies: the peer
    ],
)
def test_client_ip_is_the_right_most_untrusted_hop(
    peer: str, forwarded: list[str], expected: str
) -> None:
    assert client_ip(_request(peer, forwarded), PROXIES) == expected


def test_without_trusted_proxies_the_socket_peer_is_used() -> None:
    assert client_ip(_request("10.0.0.2", ["198.51.100.1"]), ()) == "10.0.0.2"
