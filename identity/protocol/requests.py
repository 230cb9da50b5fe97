"""OAuth requests as Authlib sees them: the query and form of a Starlette request, read and
checked in the event loop (``read_oauth2_request``) before any grant or endpoint runs."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from authlib.oauth2 import OAuth2Request
from authlib.oauth2.rfc6749 import InsecureTransportError, InvalidRequestError
from authlib.oauth2.rfc6749.requests import OAuth2Payload
from starlette.datastructures import Headers
from starlette.requests import Request

from identity.audit import RequestContext
from identity.protocol.parameters import (
    check_basic_credentials,
    check_parameters,
    parse_parameters,
)
from identity.protocol.tokens import IssuedToken

_FORM_TYPE = "application/x-www-form-urlencoded"
# Issuers whose URIs passed Authlib's transport check (https, or plain http allowed).
_SECURE_ISSUERS: set[str] = set()


class _Payload(OAuth2Payload):  # type: ignore[misc]
    """Query and form merged, as Authlib's grants expect (like Flask's ``request.values``)."""

    def __init__(self, items: list[tuple[str, str]]) -> None:
        self._datalist: defaultdict[str, list[str]] = defaultdict(list)
        for key, value in items:
            self._datalist[key].append(value)
        self._data = {key: values[-1] for key, values in self._datalist.items()}

    @property
    def data(self) -> dict[str, str]:
        return self._data

    @property
    def datalist(self) -> defaultdict[str, list[str]]:
        return self._datalist


class StarletteOAuth2Request(OAuth2Request):  # type: ignore[misc]
    """An OAuth2Request built from an already-read Starlette request."""

    def __init__(
        self,
        method: str,
        uri: str,
        headers: Headers,
        query: list[tuple[str, str]],
        form: list[tuple[str, str]],
        context: RequestContext,
    ) -> None:
        # OAuth2Request.__init__'s attributes, without its check of the URI's transport: the
        # URI is always the issuer's plus a path (``issuer_uri``), checked once per issuer
        # there (a urlsplit and an environment read per request saved).
        self.method, self.uri, self.headers, self._body = method, uri, headers, None
        self.client: Any = None
        self.auth_method: Any = None
        self.user: Any = None
        self.authorization_code: Any = None
        self.refresh_token: Any = None
        self.credential: Any = None
        self._scope: Any = None
        self._args = dict(query)
        self._form = dict(form)
        self.payload = _Payload([*query, *form])
        self.context = context
        self.issued: list[IssuedToken] = []
        self.token: dict[str, Any] | None = None
        # When and how the user behind an authorization request logged in (set by the
        # authorization endpoint before Authlib creates the code).
        self.authentication: Any = None

    @property
    def args(self) -> dict[str, str]:
        return self._args

    @property
    def form(self) -> dict[str, str]:
        return self._form

    def resources(self) -> list[str]:
        return list(self.payload.datalist.get("resource", []))


def issuer_uri(issuer: str, rest: str) -> str:
    """``issuer`` + ``rest`` (a path and query), the URI an OAuth2Request is given, after
    Authlib's transport check (InsecureTransportError), which depends on the issuer only."""
    uri = issuer + rest
    if issuer not in _SECURE_ISSUERS:
        InsecureTransportError.check(uri)
        _SECURE_ISSUERS.add(issuer)  # only a pass is remembered
    return uri


async def read_oauth2_request(
    request: Request, issuer: str, context: RequestContext
) -> StarletteOAuth2Request:
    """Await and check the parameters (``protocol.parameters``); raise an OAuth error on anything
    malformed. The URI handed to Authlib is built from the issuer, never from the Host header."""
    form: list[tuple[str, str]] = []
    if request.method == "POST":
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != _FORM_TYPE:
            raise InvalidRequestError(f"The request body must be {_FORM_TYPE}.")
        body = await request.body()  # the body cap's 413 is raised here, for the app's handler
        form = parse_parameters(body)
    query = parse_parameters(request.scope["query_string"])
    check_parameters([*query, *form])
    check_basic_credentials(request.headers)
    # From the scope as Starlette's ``request.url`` would give them, without building that
    # URL (parsing the Host header, urlsplit): it was a tenth of an introspection's CPU.
    path = request.scope["path"].replace("?", "%3F").replace("#", "%23").replace("\\", "%5C")
    query_string = request.scope["query_string"].decode()
    uri = issuer_uri(issuer, path + (f"?{query_string}" if query_string else ""))
    return StarletteOAuth2Request(request.method, uri, request.headers, query, form, context)
