"""The grants identity serves, on Authlib's grant classes."""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from authlib.oauth2.rfc6749 import (
    InvalidGrantError,
    InvalidRequestError,
    InvalidScopeError,
    OAuth2Error,
    grants,
)
from authlib.oauth2.rfc7636 import CodeChallenge
from sqlalchemy.orm import Session

from identity import repositories
from identity.accounts.factors import acr_of
from identity.accounts.roles import roles_for_client, roles_of
from identity.models import (
    OIDC_SCOPES,
    AuthorizationCode,
    Client,
    User,
    secret_digest,
    utcnow,
)
from identity.protocol.parameters import error_text
from identity.protocol.requests import StarletteOAuth2Request
from identity.protocol.scopes import ACCOUNT_SCOPE, ADMIN_SCOPE, ROLES_SCOPE, account_audience
from identity.protocol.server import current_session
from identity.protocol.tokens import Authentication, IssuedToken


def with_account_audience(
    audience: list[str], scope: str | None, user: Any, issuer: str, client_id: str
) -> list[str]:
    """``audience`` with the account API's added exactly when a user's token carries the
    ``account`` scope, or kept for a client's own token with the ``admin`` scope that the
    operator registered for the API (``--scope admin --audience {issuer}/api/v1``)."""
    api = account_audience(issuer)
    scopes = (scope or "").split()
    kept = [value for value in audience if value != api]
    for_user = user is not None and ACCOUNT_SCOPE in scopes
    for_operator = user is None and ADMIN_SCOPE in scopes and api in audience
    if for_user or for_operator:
        kept.append(api)
    return kept or [client_id]


class InvalidTargetError(OAuth2Error):  # type: ignore[misc]
    """RFC 8707 §2: the requested resource is unknown or not allowed for this client.
    (Authlib 1.9 has no RFC 8707 module, so no error class of its own for it.)"""

    error = "invalid_target"


def resolve_audience(client: Client, request: StarletteOAuth2Request) -> list[str]:
    """``aud``: the RFC 8707 ``resource`` values (each registered for the client), else the
    client's registered audience, else the client itself."""
    resources = request.resources()
    for resource in resources:
        parts = urlsplit(resource)
        if not parts.scheme or parts.fragment:
            raise InvalidTargetError("A resource must be an absolute URI without a fragment.")
        if resource not in client.audience:
            raise InvalidTargetError(
                f"The client may not ask for resource '{error_text(resource, 200)}'."
            )
    if resources:
        return list(dict.fromkeys(resources))
    return list(client.audience) or [client.client_id]


def within_grant(granted: list[str], request: StarletteOAuth2Request) -> list[str]:
    """RFC 8707 §2.2: ``resource`` at the token endpoint may narrow the audiences a grant
    covers (the authorization request's, a refresh family's), never widen or change them;
    without it, all of them. Anything else is invalid_target, never silently ignored."""
    resources = request.resources()
    for resource in resources:
        if resource not in granted:
            raise InvalidTargetError(
                f"The grant does not cover resource '{error_text(resource, 200)}'."
            )
    return list(dict.fromkeys(resources)) or list(granted)


def granted_scope(client: Client, requested: str | None) -> str:
    """The scope to grant: what was asked for, if the client registered all of it; no
    scope asked means the client's whole registered scope."""
    if requested is None:
        return client.scope
    if not requested.strip():
        raise InvalidScopeError("The scope parameter is empty.")
    if not client.has_scope(requested):
        raise InvalidScopeError("The client did not register every scope it asked for.")
    return " ".join(dict.fromkeys(requested.split()))


def token_body(issued: IssuedToken, scope: str | None) -> dict[str, Any]:
    """The token response's members for an access token (RFC 6749 §5.1)."""
    token: dict[str, Any] = {
        "access_token": issued.value,
        "token_type": "Bearer",
        "expires_in": issued.claims["exp"] - issued.claims["iat"],
    }
    if scope:
        token["scope"] = scope
    return token


class IssuingGrant:
    """Issues tokens through our signer, so every grant gets the same claims and audit.

    ``generate_token`` is the one override of Authlib's token hook; grants adjust it through
    small methods instead of repeating its signature. A grant that acts for a user overrides
    ``authentication`` (when and how the user logged in) and may override
    ``granted_audience`` and ``refresh_family``; a refresh token is added when the server's
    refresh-token policy says so. An OpenID Connect sign-in (``ISSUES_ID_TOKEN``: the code
    and device grants) adds an ID token when ``openid`` is granted, from one issuer."""

    request: StarletteOAuth2Request
    server: Any
    GRANT_TYPE: str | None
    ISSUES_ID_TOKEN = False

    def granted_audience(self) -> list[str]:
        """Every audience the grant covers: a grant that carries an earlier authorization
        (code, device, refresh family) returns the one fixed then; otherwise the request's
        ``resource`` values, else the client's registered audience."""
        return resolve_audience(self.request.client, self.request)

    def audience(self) -> list[str]:
        """The access token's audience: the grant's, narrowed to ``resource``."""
        return within_grant(self.granted_audience(), self.request)

    def nonce(self) -> str | None:
        """The authorization request's ``nonce``, for the ID token."""
        return None

    def authentication(self) -> Authentication | None:
        return None

    def refresh_family(self) -> tuple[Any, Any] | None:
        """(family_id, parent row) when this grant rotates a refresh token."""
        return None

    def generate_token(
        self,
        user: Any = None,
        scope: str | None = None,
        grant_type: str | None = None,
        expires_in: int | None = None,
        include_refresh_token: bool = True,
    ) -> dict[str, Any]:
        """Authlib's hook, with its signature: the access token from our signer, a refresh
        token when policy allows, then an ID token for an OpenID Connect sign-in.
        ``grant_type`` and ``expires_in`` are ignored: the lifetime is the issuer's, the
        same for every grant."""
        client: Client = self.request.client
        issuer = self.server.issuer.issuer
        if user is not None:
            scope = user_token_scope(scope or "")
        audience = with_account_audience(self.audience(), scope, user, issuer, client.client_id)
        authentication = self.authentication() if user is not None else None
        if client.require_mfa and authentication is not None and "mfa" not in authentication.amr:
            # The pages ask for the second factor before a code or device approval exists;
            # this stops what began before the client required it (a refresh family, a code).
            raise InvalidGrantError(
                "mfa_required: this app requires a sign-in with a second factor; sign in again."
            )
        extra: dict[str, Any] = {}
        if authentication is not None:
            # RFC 9068 §2.2.1: a resource server asking for step-up (RFC 9470) reads these.
            extra["auth_time"] = int(authentication.auth_time.timestamp())
            extra["acr"] = acr_of(authentication.amr)
        # Read now, at every issue: a role change reaches the next token of every grant.
        roles = {} if user is None else role_claims(current_session(), user, client, scope or "")
        extra.update(roles)
        issued = self.server.issuer.issue(
            client_id=client.client_id,
            subject=client.client_id if user is None else str(user.get_user_id()),
            audience=audience,
            scope=scope or "",
            extra=extra,
        )
        self.request.issued.append(issued)
        token = token_body(issued, scope)
        token_scopes = (scope or "").split()
        refresh_tokens = self.server.refresh_tokens
        if (
            user is not None
            and authentication is not None
            and include_refresh_token
            and refresh_tokens.should_issue(client, scope or "")
        ):
            family = self.refresh_family()
            token["refresh_token"] = refresh_tokens.issue(
                current_session(),
                client=client,
                user_id=user.id,
                scope=scope or "",
                # The whole grant, not the narrowed token's: a later refresh may ask for
                # any of its resources (RFC 8707 §2.2).
                audience=with_account_audience(
                    self.granted_audience(), scope, user, issuer, client.client_id
                ),
                authentication=authentication,
                access=issued,
                family_id=family[0] if family else None,
                parent=family[1] if family else None,
            )
        if self.ISSUES_ID_TOKEN and authentication is not None and "openid" in token_scopes:
            # OIDC Core 3.1.3.3: the ID token of the sign-in this grant completes.
            token["id_token"] = self.server.id_tokens.issue(
                client_id=client.client_id,
                subject=str(user.get_user_id()),
                authentication=authentication,
                nonce=self.nonce(),
                access_token=issued.value,
                claims={**user_claims(user, scope or ""), **roles},
            )
        # What this request issued, for hooks that run after it (delete_authorization_code).
        self.request.token = token
        return token


class ClientCredentialsGrant(IssuingGrant, grants.ClientCredentialsGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post"]

    def validate_requested_scope(self) -> None:
        self.request.granted_scope = granted_scope(self.request.client, self.request.payload.scope)

    def create_token_response(self) -> tuple[int, dict[str, Any], list[tuple[str, str]]]:
        token = self.generate_token(scope=self.request.granted_scope, include_refresh_token=False)
        self.save_token(token)
        return 200, token, self.TOKEN_RESPONSE_HEADER


def user_scope(client: Client, requested: str | None) -> str:
    """The scope of a user grant: OpenID Connect scopes plus the client's registered ones;
    anything else is invalid_scope (never silently dropped)."""
    allowed = set(client.scope.split()) | set(OIDC_SCOPES)
    if client.is_first_party:
        allowed.add(ACCOUNT_SCOPE)
    else:
        allowed.discard(ACCOUNT_SCOPE)  # even if registered: the account API is ours alone
    tokens = (requested or "").split()
    unknown = [token for token in tokens if token not in allowed]
    if unknown:
        raise InvalidScopeError(f"The client may not ask for '{error_text(unknown[0])}'.")
    if "offline_access" in tokens and not client.check_grant_type("refresh_token"):
        tokens.remove("offline_access")  # it cannot be honoured: no refresh grant
    return user_token_scope(" ".join(dict.fromkeys(tokens)))


def user_token_scope(scope: str) -> str:
    """``scope`` as a token obtained for a user may carry it: never ``admin``, whatever the
    client registered or asked for. The operators' API is for a client's own token; a
    person's token reaching it would let any app they use act as the operator. Dropped,
    not refused, as ``offline_access`` without a refresh grant: the rest of the grant
    stands. (Every user grant's token passes ``IssuingGrant.generate_token``, which
    applies it; the code and device grants also keep it out of what they store and show.)"""
    return " ".join(token for token in scope.split() if token != ADMIN_SCOPE)


class S256CodeChallenge(CodeChallenge):  # type: ignore[misc]
    """PKCE as OAuth 2.1 wants it: required for every client, S256 only. Authlib's own
    accepts ``plain`` and only insists on PKCE for public clients."""

    SUPPORTED_CODE_CHALLENGE_METHOD = ["S256"]

    def __init__(self) -> None:
        super().__init__(required=True)

    def validate_code_challenge(self, grant: Any, redirect_uri: str) -> None:
        data = grant.request.payload.data
        if not data.get("code_challenge"):
            raise InvalidRequestError("PKCE is required: send code_challenge (S256).")
        if data.get("code_challenge_method") != "S256":
            raise InvalidRequestError("code_challenge_method must be S256.")
        super().validate_code_challenge(grant, redirect_uri)

    def validate_code_verifier(self, grant: Any, result: Any) -> None:
        # RFC 7636 §4.6: a missing or wrong verifier is invalid_grant.
        if not grant.request.form.get("code_verifier"):
            raise InvalidGrantError("Missing 'code_verifier'.")
        try:
            super().validate_code_verifier(grant, result)
        except InvalidRequestError as error:
            raise InvalidGrantError(error.description) from None


class AuthorizationCodeGrant(IssuingGrant, grants.AuthorizationCodeGrant):  # type: ignore[misc]
    """The code flow with OpenID Connect: codes are stored hashed, live a minute at most,
    are spent atomically, and a replayed code revokes what the first redemption got."""

    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "none"]
    ISSUES_ID_TOKEN = True

    def validate_requested_scope(self) -> None:
        # Refuses what the client may not ask for; Authlib then keeps the allowed part.
        user_scope(self.request.client, self.request.payload.scope)

    def validate_authorization_request(self) -> str:
        """Authlib's checks; then the scope the consent page shows and the code stores is
        the user grant's (``user_scope``), where Authlib kept every registered scope."""
        redirect_uri: str = super().validate_authorization_request()
        self.request.scope = user_scope(self.request.client, self.request.payload.scope)
        return redirect_uri

    def save_authorization_code(self, code: str, request: StarletteOAuth2Request) -> None:
        authentication: Authentication = request.authentication  # set by the endpoint
        now = utcnow()
        repositories.add_authorization_code(
            current_session(),
            AuthorizationCode(
                digest=secret_digest(code),
                client_id=request.client.client_id,
                user_id=request.user.id,
                redirect_uri=request.payload.redirect_uri or request.client.redirect_uris[0],
                scope=user_scope(request.client, request.payload.scope),
                audience=resolve_audience(request.client, request),
                nonce=request.payload.data.get("nonce"),
                code_challenge=request.payload.data["code_challenge"],
                code_challenge_method="S256",
                auth_time=authentication.auth_time,
                amr=list(authentication.amr),
                idp=authentication.idp,
                session_id=authentication.session_id,
                created_at=now,
                expires_at=now + timedelta(seconds=self.server.settings.authorization_code_ttl),
            ),
        )

    def query_authorization_code(self, code: str, client: Client) -> AuthorizationCode | None:
        session, digest, now = current_session(), secret_digest(code or ""), utcnow()
        row = repositories.get_authorization_code(session, digest)
        if row is None or row.client_id != client.client_id:
            return None
        if row.used_at is None and row.expires_at > now:
            # Refused before the code is spent, so the client may retry without it.
            within_grant(list(row.audience), self.request)
        if not repositories.use_authorization_code(session, digest, now):
            if row.used_at is not None:
                self.server.revoke_code_tokens(session, row, self.request.context)
            return None
        return row

    def delete_authorization_code(self, authorization_code: AuthorizationCode) -> None:
        # Kept (spent) until it expires, so a replay can still be recognised.
        token_jtis = [issued.jti for issued in self.request.issued]
        authorization_code.issued_jtis = token_jtis
        refresh = self.request.token.get("refresh_token") if self.request.token else None
        if refresh:
            family = self.server.refresh_tokens.find(current_session(), refresh)
            authorization_code.refresh_family_id = family.family_id if family else None

    def authenticate_user(self, authorization_code: AuthorizationCode) -> User | None:
        user = repositories.get_user(current_session(), authorization_code.user_id)
        return user if user is not None and user.is_active and user.email_verified else None

    def granted_audience(self) -> list[str]:
        # What the authorization request asked for (its resource), fixed in the code.
        return list(self.request.authorization_code.audience)

    def authentication(self) -> Authentication:
        code: AuthorizationCode = self.request.authorization_code
        return Authentication(code.auth_time, tuple(code.amr), code.session_id, code.idp)

    def nonce(self) -> str | None:
        code: AuthorizationCode = self.request.authorization_code
        return code.nonce


def user_claims(user: User, scope: str) -> dict[str, Any]:
    """The identity claims a scope releases (OIDC Core 5.4)."""
    scopes = scope.split()
    claims: dict[str, Any] = {}
    if "email" in scopes:
        claims.update(email=user.email, email_verified=user.email_verified)
    if "profile" in scopes:
        claims.update(name=user.name)
    return claims


def role_claims(session: Session, user: User, client: Client | None, scope: str) -> dict[str, Any]:
    """``{"roles": [...]}`` (possibly empty) when ``scope`` has ``roles``: the user's roles
    as they are now, those with one of the client's role prefixes when it names any; else
    nothing. For access tokens, ID tokens and UserInfo alike. A client that is gone sees
    none."""
    if ROLES_SCOPE not in scope.split():
        return {}
    if client is None:
        return {"roles": []}
    return {"roles": roles_for_client(roles_of(session, user), client.role_prefixes)}
