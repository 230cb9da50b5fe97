"""The Starlette glue around Authlib's synchronous AuthorizationServer.

A route awaits the form in the event loop, builds an ``OAuth2Request``, then runs the whole
Authlib call in one threadpool hop inside one unit of work (``IdentityServer.run``).
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

from authlib.oauth2 import AuthorizationServer
from authlib.oauth2.rfc6749 import InvalidClientError, InvalidRequestError, OAuth2Error
from authlib.oauth2.rfc6749.authenticate_client import (
    authenticate_client_secret_basic,
    authenticate_client_secret_post,
    authenticate_none,
)
from authlib.oauth2.rfc6749.util import extract_basic_authorization
from sqlalchemy.orm import Session
from starlette.responses import Response

from identity import audit, logs, metrics, repositories
from identity.accounts.service import Accounts
from identity.audit import RequestContext
from identity.config import Settings
from identity.db import Database
from identity.denylist import Denylist
from identity.group_commit import GroupCommit
from identity.lanes import Lanes
from identity.models import AuthorizationCode, Client, User, utcnow
from identity.protocol.refresh_tokens import RefreshTokens
from identity.protocol.requests import StarletteOAuth2Request
from identity.protocol.tokens import (
    AccessTokenIssuer,
    IdTokenIssuer,
    InvalidToken,
    IssuedToken,
    token_user_id,
)
from identity.row_cache import RowCache

log = logging.getLogger("identity.protocol")

T = TypeVar("T")

# Client authentication as Authlib implements each method; a method added later
# (private_key_jwt) goes here and into ``client_auth_method``.
_AUTHENTICATE: dict[str, Callable[[Callable[[str], Any], Any], Any]] = {
    "client_secret_basic": authenticate_client_secret_basic,
    "client_secret_post": authenticate_client_secret_post,
    "none": authenticate_none,
}


def client_auth_method(request: StarletteOAuth2Request) -> str | None:
    """The one client authentication method the request uses (RFC 6749 §2.3): HTTP Basic, a
    secret in the body, or a bare client_id (a public client); None when it carries none.

    Basic together with a secret in the body, or with a body client_id naming another
    client, is ``invalid_request``: the two could name different clients, and trying one
    after the other would let a wrong secret pass beside a right one."""
    basic_id, _ = extract_basic_authorization(request.headers)
    data = request.payload.data
    if basic_id:
        if data.get("client_secret") or data.get("client_assertion"):
            raise InvalidRequestError(
                "Use one client authentication method: HTTP Basic or a secret in the body."
            )
        if data.get("client_id") not in (None, "", basic_id):
            raise InvalidRequestError("The client_id in the body is not the HTTP Basic one.")
        return "client_secret_basic"
    if data.get("client_secret"):
        return "client_secret_post"
    return "none" if data.get("client_id") else None


def _failure_description(method: str, methods: list[str]) -> str:
    accepted = ", ".join(methods[:-1]) + (" or " if len(methods) > 1 else "") + methods[-1]
    if not method:
        return f"The request carries no client credentials; this endpoint takes {accepted}."
    return f"Client authentication failed; this endpoint takes {accepted}."


def token_issued_row(request: StarletteOAuth2Request, issued: IssuedToken) -> dict[str, Any]:
    """The ``token.issued`` audit event of a token the request's client got."""
    return audit.event_row(
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
        audit_writer: GroupCommit,
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
        # The event-loop paths' durable audit rows (protocol.lean).
        self.audit_writer = audit_writer
        self.id_tokens = IdTokenIssuer(settings.issuer, issuer.keys, settings.id_token_ttl)
        check = settings.cache_check_seconds
        self.clients: RowCache[str, Client] = RowCache(
            "clients", repositories.get_client, check, database.transaction
        )
        self.users: RowCache[uuid.UUID, User] = RowCache(
            "users", repositories.get_user, check, database.transaction
        )
        self.lanes = Lanes(settings.db_pool_size, settings.password_threads)

    def user_is_active(self, user_id: uuid.UUID, session: Session | None) -> bool | None:
        """Whether the user exists and is active, from the user cache: a disable or delete
        reaches every instance within IDENTITY_CACHE_CHECK_SECONDS. Without a session (in
        the event loop) None when only the database can tell."""
        user = self.users.peek(user_id) if session is None else self.users.get(session, user_id)
        if user is None:
            return None if session is None else False
        return user.is_active

    def subject_is_active(self, claims: dict[str, Any], session: Session | None) -> bool | None:
        """``user_is_active`` for the user an access token acts for; a client's own token
        (no user) always is."""
        try:
            user_id = token_user_id(claims)
        except InvalidToken:
            return False
        return True if user_id is None else self.user_is_active(user_id, session)

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

    def _query_client_uncached(self, client_id: str) -> Client | None:
        if not client_id or len(client_id) > 64:
            return None
        return repositories.get_client(current_session(), client_id)

    def save_token(self, token: dict[str, Any], request: StarletteOAuth2Request) -> None:
        session = current_session()
        metrics.count_token(request.payload.grant_type)
        for issued in request.issued:
            repositories.add_audit_event(session, **token_issued_row(request, issued))

    def client_in_memory(self, request: StarletteOAuth2Request, endpoint: str) -> Client | None:
        """The confidential client whose secret the request carries (basic or post), when
        the client cache holds it and the secret matches; None for anything the full path
        must decide (a client not cached, a wrong secret, which the full path records, two
        methods at once, which it refuses, a public client). For the event-loop paths."""
        try:
            method = client_auth_method(request)
        except OAuth2Error:
            return None
        if method == "client_secret_basic":
            client_id, secret = extract_basic_authorization(request.headers)
        elif method == "client_secret_post":
            client_id, secret = request.form.get("client_id"), request.form.get("client_secret")
        else:
            return None
        if not client_id or not secret or len(client_id) > 64:
            return None
        client = self.clients.peek(client_id)
        if client is None or client.is_public:
            return None
        if not client.check_endpoint_auth_method(method, endpoint):
            return None
        return client if client.check_client_secret(secret) else None

    def authenticate_client(
        self, request: StarletteOAuth2Request, methods: list[str], endpoint: str = "token"
    ) -> Client:
        """Authlib's hook, held to the one method the request uses (``client_auth_method``).

        Authlib's own loop tries every allowed method in turn, so a wrong secret in one place
        passed when another place held a right one; and it named the methods as a Python
        list in its error."""
        method = client_auth_method(request) or ""
        try:
            authenticate = _AUTHENTICATE[method] if method in methods else None
            client: Client | None = (
                authenticate(self.query_client, request) if authenticate else None
            )
            if client is None and authenticate is not None and method != "none":
                # The cached copy may predate a secret rotation: the new secret works at
                # once, on every instance, without waiting for the cache's next check.
                client = authenticate(self._query_client_uncached, request)
            if client is None or not client.check_endpoint_auth_method(method, endpoint):
                raise InvalidClientError(
                    # 401 (with WWW-Authenticate) wherever HTTP Basic is accepted, as Authlib.
                    status_code=401 if "client_secret_basic" in methods else 400,
                    description=_failure_description(method, methods),
                )
        except InvalidClientError as error:
            self._record_client_auth_failure(request, endpoint, error)
            raise
        request.auth_method = method
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
