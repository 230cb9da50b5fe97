"""The URI handed to Authlib: its transport check runs once per issuer, and only a pass is
remembered."""

from __future__ import annotations

import pytest
from authlib.oauth2.rfc6749 import InsecureTransportError

from identity.protocol.requests import issuer_uri


def test_an_https_issuer_gives_its_uri() -> None:
    assert issuer_uri("https://id.example.com", "/oauth2/token") == (
        "https://id.example.com/oauth2/token"
    )


def test_a_plain_http_issuer_is_refused_every_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AUTHLIB_INSECURE_TRANSPORT", raising=False)
    for _ in range(2):  # a refusal is not remembered as a pass
        with pytest.raises(InsecureTransportError):
            issuer_uri("http://id.example.com", "/oauth2/token")
