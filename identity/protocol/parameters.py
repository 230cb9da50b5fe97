"""The syntax of OAuth request parameters, checked once, when a protocol request is read.

Authlib quotes some parameters into error descriptions (``redirect_uri``, ``response_type``),
and its ``OAuth2Error`` raises ``ValueError`` for a description outside the characters
RFC 6749 allows there, so a client's typo would otherwise become a 500. Hence:

- bodies and query strings are decoded as strict UTF-8: a value that is not text is refused,
  never silently replaced (``state`` must come back exactly as it was sent);
- no parameter holds a control character (TAB aside, which free text may carry); NUL in
  particular never reaches the database, where PostgreSQL refuses it in text;
- each parameter the RFCs give an ASCII syntax (RFC 6749 Appendix A, RFC 8707) must match it,
  so none of them can carry a character an error description may not hold;
- ``error_text`` is the one way to quote other user text into a description.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable, Mapping
from types import CodeType
from urllib.parse import parse_qsl, unquote

from authlib.oauth2.base import OAuth2Error
from authlib.oauth2.rfc6749 import InvalidRequestError

MAX_PARAMETERS = 64
MAX_VALUE_LENGTH = 8192
MAX_NAME_LENGTH = 128
# RFC 8707 allows several resource parameters; every other one must appear at most once
# (RFC 6749 §3.1).
REPEATABLE = frozenset({"resource"})

_VSCHAR = re.compile(r"[\x20-\x7e]*")
# NQCHAR tokens separated by spaces (A.4); runs of spaces are tolerated, as Authlib splits.
_SCOPE = re.compile(r"[\x20\x21\x23-\x5b\x5d-\x7e]*")
# RFC 3986's unreserved and reserved characters and percent escapes: an ASCII URI.
_URI = re.compile(r"[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]*")
_NAME = re.compile(r"[A-Za-z0-9_.\-]*")
_RESPONSE_TYPE = re.compile(r"[A-Za-z0-9_ ]*")
_SYNTAX: dict[str, re.Pattern[str]] = {
    "client_id": _VSCHAR,  # A.1
    "client_secret": _VSCHAR,  # A.2
    "response_type": _RESPONSE_TYPE,  # A.3
    "scope": _SCOPE,  # A.4
    "state": _VSCHAR,  # A.5
    "redirect_uri": _URI,  # A.6
    "grant_type": _URI,  # A.10: a name or an absolute URI
    "code": _VSCHAR,  # A.11
    "refresh_token": _VSCHAR,  # A.17
    "device_code": _VSCHAR,  # RFC 8628 §3.4, like a code
    "code_challenge_method": _NAME,  # RFC 7636 §4.3
    "token_type_hint": _NAME,  # RFC 7009 §2.1
    "resource": _URI,  # RFC 8707 §2: an absolute URI
}
# Parameters with a syntax of their own get their own error code (RFC 6749 §5.2, RFC 8707).
_ERRORS: dict[str, str] = {"scope": "invalid_scope", "resource": "invalid_target"}
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_NAME_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# The characters RFC 6749 §4.1.2.1 allows in an error description, and its complement.
_NOT_DESCRIPTION = re.compile(r"[^\x20\x21\x23-\x5b\x5d-\x7e]")


def error_text(text: str, limit: int = 40) -> str:
    """``text`` shortened and with every character an error description may not hold
    replaced by ``?``: how user input is quoted into an OAuth error."""
    return _NOT_DESCRIPTION.sub("?", text[:limit])


def parse_parameters(raw: bytes) -> list[tuple[str, str]]:
    """The name/value pairs of a query string or form body, decoded as strict UTF-8."""
    # parse_qsl rather than Starlette's form parser: the same decoding at a tenth of the
    # cost, on every protocol request; strict, because a replaced byte would change the value.
    try:
        return parse_qsl(
            raw.decode("utf-8"),
            keep_blank_values=True,
            max_num_fields=MAX_PARAMETERS,
            errors="strict",
        )
    except UnicodeDecodeError as error:  # a ValueError too: caught first
        raise InvalidRequestError("The request is not valid UTF-8 text.") from error
    except ValueError as error:
        raise InvalidRequestError("Too many parameters.") from error


def check_parameters(items: Iterable[tuple[str, str]]) -> None:
    """Raise an OAuth error (invalid_request, or invalid_scope / invalid_target for those
    parameters) unless every name and value is well formed."""
    items = list(items)
    if len(items) > MAX_PARAMETERS:
        raise InvalidRequestError("Too many parameters.")
    seen: set[str] = set()
    for name, value in items:
        shown = error_text(name)
        if len(name) > MAX_NAME_LENGTH or len(value) > MAX_VALUE_LENGTH:
            raise InvalidRequestError(f"Parameter '{shown}' is too long.")
        if _NAME_CONTROL.search(name) or _CONTROL.search(value):
            raise InvalidRequestError(f"Parameter '{shown}' holds a control character.")
        if name in seen and name not in REPEATABLE:
            raise InvalidRequestError(f"Parameter '{shown}' is repeated.")
        seen.add(name)
        syntax = _SYNTAX.get(name)
        if syntax is not None and not syntax.fullmatch(value):
            # ``name`` is one of ours here, safe to show; the value is not shown at all.
            raise OAuth2Error(
                f"The {name} parameter holds characters its syntax does not allow.",
                error=_ERRORS.get(name, "invalid_request"),
            )


def check_basic_credentials(headers: Mapping[str, str]) -> None:
    """Refuse an ``Authorization`` header that Authlib's Basic parser would crash on, and
    Basic credentials that hold what a client_id or secret may not (RFC 6749 §2.3.1: form
    encoded; A.1, A.2).

    Authlib (``extract_basic_authorization``) lets a non-ASCII or non-UTF-8 payload escape
    as ValueError, fails to unpack a header that splits into one word, and decodes ``%00``
    into a NUL client_id that would be looked up in the database. Its steps, strictly:"""
    header = headers.get("authorization")
    if not header or " " not in header:
        return  # Authlib reads no Basic credentials from it
    words = header.split(None, 1)
    if len(words) != 2:
        raise InvalidRequestError("The Authorization header is malformed.")
    if words[0].lower() != "basic":
        return
    try:
        decoded = base64.b64decode(words[1]).decode("utf-8")
        client_id, _, secret = decoded.partition(":")
        parts = (unquote(client_id, errors="strict"), unquote(secret, errors="strict"))
    except ValueError as error:  # binascii.Error and UnicodeDecodeError among them
        raise InvalidRequestError("The Basic credentials are malformed.") from error
    if not all(_VSCHAR.fullmatch(part) for part in parts):
        raise InvalidRequestError("The Basic credentials hold characters they may not.")


_DESCRIPTION_CHECK: CodeType = OAuth2Error.__init__.__code__


def is_forbidden_description(error: BaseException) -> bool:
    """Whether ``error`` is Authlib refusing an error description's characters (raised in
    ``OAuth2Error.__init__`` itself): malformed input that slipped past ``check_parameters``."""
    if not isinstance(error, ValueError):
        return False
    trace = error.__traceback__
    while trace is not None and trace.tb_next is not None:
        trace = trace.tb_next
    return trace is not None and trace.tb_frame.f_code is _DESCRIPTION_CHECK
