"""Reading an RFC 6750 bearer token from the ``Authorization`` header.

One parser for every place that takes a bearer token (the JSON API, UserInfo, ``/metrics``),
so they cannot disagree on what a bearer header is. It lives below ``protocol`` because
``metrics`` is a shared service and may not import the protocol package. Each caller keeps
its own answer to a missing or empty token: they differ on purpose (problem+json, RFC 6750
challenges, a bare 403).
"""

from __future__ import annotations

from collections.abc import Mapping

_SCHEME = "bearer"


def bearer_token(headers: Mapping[str, str]) -> str | None:
    """The credentials of ``Authorization: Bearer <token>``, stripped: None when the header
    is absent or names another scheme, ``""`` when it says Bearer and carries nothing."""
    scheme, _, token = headers.get("authorization", "").partition(" ")
    if scheme.lower() != _SCHEME:
        return None
    return token.strip()
