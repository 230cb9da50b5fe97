"""The Starlette glue around Authlib's synchronous AuthorizationServer.

A route awaits the form in the event loop, builds an ``OAuth2Request``, then runs the whole
Authlib call in one threadpool hop inside one unit of work (``IdentityServer.run``).
"""

from __future__ import annotations

import json
import logging
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar
from urllib.parse import parse_qsl

from authlib.oauth2 import AuthorizationServer, OAuth2Request
from authlib.oauth2.rfc6749 import InvalidClientError, InvalidRequestError, OAuth2Error
from authlib.oauth2.rfc6749.requests import OAuth2Payload
from authlib.oauth2.rfc6749.util import extract_basic_authorization
from sqlalchemy.orm import Session
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import Response

from identity import audit, logs, metrics, repositories
from identity.accounts.service import Accounts
from identity.audit import RequestContext
from identity.config import Settings
from identity.db import Database
from identity.denylist import Denylist
from identity.lanes import Lanes
from identity.models import AuthorizationCode, Client, User, utcnow
from identity.protocol.refresh_tokens import RefreshTokens
from identity.protocol.tokens import AccessTokenIssuer, IdTokenIssuer, IssuedToken
from identity.row_cache import RowCache

log = logging.getLogger("identity.protocol")

T = TypeVar("T")

_MAX_PARAMETERS = 64
_MAX_VALUE_LENGTH = 8192
# RFC 8707 allows several resource parameters; every other one must appear at most once
# (RFC 6749 §3.1).
_REPEATABLE = frozenset({"resource"})
_FORM_TYPE = "application/x-www-form-urlencoded"


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
        super().__init__(method=method, uri=uri, headers=headers)
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


async def read_oauth2_request(
    request: Request, issuer: str, context: RequestContext
) -> StarletteOAuth2Request:
    """Await and check the parameters; raise InvalidRequestError on anything malformed.

    The URI handed to Authlib is built from the issuer, never from the Host header."""
    form: list[tuple[str, str]] = []
    if request.method == "POST":
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != _FORM_TYPE:
            raise InvalidRequestError(f"The request body must be {_FORM_TYPE}.")
        body = await request.body()  # the body cap's 413 is raised here, for the app's handler
        # parse_qsl rather than Starlette's form parser: the same decoding (UTF-8 escapes,
        # invalid ones replaced) at a tenth of the cost, on every protocol request.
        try:
            form = parse_qsl(
                body.decode("latin-1"), keep_blank_values=True, max_num_fields=_MAX_PARAMETERS
            )
        except ValueError as error:
            raise InvalidRequestError("Too many parameters.") from error
    query = list(request.query_params.multi_items())
    items = [*query, *form]
    if len(items) > _MAX_PARAMETERS:
        raise InvalidRequestError("Too many parameters.")
    seen: set[str] = set()
    for key, value in items:
        if len(key) > 128 or len(value) > _MAX_VALUE_LENGTH:
            raise InvalidRequestError(f"Parameter {key[:40]!r} is too long.")
        if "\x00" in value:
            raise InvalidRequestError(f"Parameter {key[:40]!r} holds a NUL character.")
        if key in seen and key not in _REPEATABLE:
            raise InvalidRequestError(f"Parameter {key[:40]!r} is repeated.")
        seen.add(key)
    uri = issuer + request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return StarletteOAuth2Request(request.method, uri, request.headers, query, form, context)


@dataclass
class _UnitOfWork:
    session: Session
    request: StarletteOAuth2Request | None


_current: ContextVar[_UnitOfWork] = ContextVar("identity_protocol_unit_of_work")


def current_session() -> Session:
    """The session of the protocol call running in this thread."""
    return _current.get().session


class IdentityServer(AuthorizationServer):  # type: ignore[misc]
    """Authlib's server bound to our database, token issuer, denylist and audit log."""

    def __init__(
        self,
        settings: Settings,
        database: Database,
        issuer: AccessTokenIssuer,
        denylist: Denylist,
        refresh_tokens: RefreshTokens,
        accounts: Accounts,
    ) -> None:
        super().__init__(scopes_supported=None)
        self.settings = settings
        self.database = database
        self.issuer = issuer
        self.denylist = denylist
        self.refresh_tokens = refresh_tokens
        self.families = refresh_tokens.families
        # The password grant signs people in through the same rules as the login page.
        self.accounts = accounts
        self.id_tokens = IdTokenIssuer(settings.issuer, issuer.keys, settings.id_token_ttl)
        check = settings.cache_check_seconds
        self.clients: RowCache[str, Client] = RowCache("clients", repositories.get_client, check)
        self.users: RowCache[uuid.UUID, User] = RowCache("users", repositories.get_user, check)
        self.lanes = Lanes(settings.db_pool_size, settings.password_threads)

    def revoke_code_tokens(
        self, session: Session, code: AuthorizationCode, context: RequestContext
    ) -> None:
        """A spent code came back: revoke what its first redemption got (RFC 9700 4.5)."""
        until = utcnow() + timedelta(seconds=self.settings.access_token_ttl + 60)
        for jti in code.issued_jtis:
            self.denylist.revoke(session, jti, until)
        if code.refresh_family_id is not None:
            self.families.revoke_family(
                session, code.refresh_family_id, reason="code_replay", context=context
            )
        audit.record(
            session,
            "code.replayed",
            context=context,
            outcome="failure",
            subject=str(code.user_id),
            client_id=code.client_id,
            detail={"revoked_access_tokens": len(code.issued_jtis)},
        )

    # -- running a call ------------------------------------------------------------------

    @contextmanager
    def using(
        self, session: Session, oauth_request: StarletteOAuth2Request | None
    ) -> Iterator[None]:
        """Bind Authlib's calls in this block to a unit of work the caller already has
        (the hosted pages' transaction)."""
        token = _current.set(_UnitOfWork(session, oauth_request))
        try:
            yield
        finally:
            _current.reset(token)

    def _run_sync(self, oauth_request: StarletteOAuth2Request | None, call: Callable[[], T]) -> T:
        with self.database.transaction() as session, self.using(session, oauth_request):
            return call()

    async def run(
        self,
        oauth_request: StarletteOAuth2Request | None,
        call: Callable[[], T],
        *,
        password: bool = False,
    ) -> T:
        """Run ``call`` in a thread of its lane, in one transaction committed when it returns
        (``password``: the call verifies a password, e.g. the password grant)."""
        return await self.lanes.run(lambda: self._run_sync(oauth_request, call), password=password)

    def error_response(self, error: OAuth2Error) -> Response:
        """Render an OAuth error raised before Authlib saw the request."""
        response: Response = self.handle_response(*error())
        return response

    # -- Authlib's hooks ---------------------------------------------------------------------

    def query_client(self, client_id: str) -> Client | None:
        if not client_id or len(client_id) > 64:
            return None
        return self.clients.get(current_session(), client_id)

    def save_token(self, token: dict[str, Any], request: StarletteOAuth2Request) -> None:
        session = current_session()
        metrics.count_token(request.payload.grant_type)
        for issued in request.issued:
            audit.record(
                session,
                "token.issued",
                context=request.context,
                actor=request.client.client_id,
                subject=issued.claims["sub"],
                client_id=request.client.client_id,
                detail={
                    "grant_type": request.payload.grant_type,
                    "jti": issued.jti,
                    "scope": issued.claims.get("scope", ""),
                    "aud": issued.claims["aud"],
                },
            )

    def authenticate_client(
        self, request: StarletteOAuth2Request, methods: list[str], endpoint: str = "token"
    ) -> Client:
        try:
            client: Client = super().authenticate_client(request, methods, endpoint)
        except InvalidClientError as error:
            self._record_client_auth_failure(request, endpoint, error)
            raise
        logs.note(client_id=client.client_id)
        return client

    def _record_client_auth_failure(
        self, request: StarletteOAuth2Request, endpoint: str, error: InvalidClientError
    ) -> None:
        basic_id, _ = extract_basic_authorization(request.headers)
        attempted = basic_id or request.form.get("client_id")
        # Its own transaction: the request's own one will not commit anything useful.
        with self.database.transaction() as session:
            audit.record(
                session,
                "client.auth_failed",
                context=request.context,
                outcome="failure",
                client_id=attempted,
                detail={"endpoint": endpoint, "reason": error.description or error.error},
            )

    def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
        unit = _current.get(None)
        if name == "after_revoke_token" and unit is not None:
            token, client = kwargs.get("token"), kwargs.get("client")
            audit.record(
                unit.session,
                "token.revoked",
                context=unit.request.context if unit.request else None,
                actor=client.client_id if client else None,
                subject=getattr(token, "subject", None),
                client_id=getattr(token, "client_id", None),
                detail={
                    "token_type": getattr(token, "token_type", "unknown"),
                    "jti": getattr(token, "jti", None),
                },
            )

    def create_oauth2_request(self, request: Any) -> Any:
        return request  # routes always hand over a built StarletteOAuth2Request

    def create_json_request(self, request: Any) -> Any:
        return request

    def handle_response(self, status: int, body: Any, headers: Any) -> Response:
        header_map = dict(headers or [])
        if isinstance(body, dict | list):
            content = json.dumps(body, separators=(",", ":"))
            header_map.setdefault("Content-Type", "application/json")
        else:
            content = body or ""
        return Response(content, status_code=status, headers=header_map)
