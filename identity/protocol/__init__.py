"""The OAuth 2.1 / OpenID Connect core on Authlib. ``build_server`` lists every grant and
endpoint in one table."""

from __future__ import annotations

from typing import Any

from identity.accounts.service import Accounts
from identity.config import Settings
from identity.db import Database
from identity.denylist import Denylist
from identity.group_commit import GroupCommit
from identity.protocol.device import DeviceCodeGrant
from identity.protocol.endpoints import TokenIntrospection, TokenRevocation
from identity.protocol.grants import (
    AuthorizationCodeGrant,
    ClientCredentialsGrant,
    S256CodeChallenge,
)
from identity.protocol.mfa_grant import MfaGrant
from identity.protocol.password import PasswordGrant
from identity.protocol.refresh import RefreshTokenGrant
from identity.protocol.refresh_tokens import RefreshTokens
from identity.protocol.server import IdentityServer
from identity.protocol.tokens import AccessTokenIssuer
from identity.token_families import TokenFamilies


def grant_table(settings: Settings) -> list[tuple[Any, list[Any]]]:
    """Every grant the server serves, with its extensions."""
    table: list[tuple[Any, list[Any]]] = [
        (AuthorizationCodeGrant, [S256CodeChallenge()]),
        (ClientCredentialsGrant, []),
        (RefreshTokenGrant, []),
        (DeviceCodeGrant, []),
    ]
    if settings.password_grant:  # off by default: then it is neither served nor listed
        # The mfa grant is the password grant's second step, for accounts with two factors.
        table += [(PasswordGrant, []), (MfaGrant, [])]
    return table


ENDPOINTS = (TokenRevocation, TokenIntrospection)


def build_server(
    settings: Settings,
    database: Database,
    issuer: AccessTokenIssuer,
    denylist: Denylist,
    families: TokenFamilies,
    accounts: Accounts,
    audit_writer: GroupCommit,
) -> IdentityServer:
    """The authorization server with every grant and endpoint identity serves."""
    refresh_tokens = RefreshTokens(settings, denylist, families)
    server = IdentityServer(
        settings, database, issuer, denylist, refresh_tokens, accounts, audit_writer
    )
    for grant, extensions in grant_table(settings):
        server.register_grant(grant, extensions)
    for endpoint in ENDPOINTS:
        server.register_endpoint(endpoint)
    return server


def grant_types(settings: Settings) -> list[str]:
    """What discovery lists: exactly the grants registered."""
    return [str(grant.GRANT_TYPE) for grant, _ in grant_table(settings)]
