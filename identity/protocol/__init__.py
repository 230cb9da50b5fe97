"""The OAuth 2.1 / OpenID Connect core on Authlib. ``build_server`` lists every grant and
endpoint in one table."""

from __future__ import annotations

from identity.db import Database
from identity.denylist import Denylist
from identity.protocol.endpoints import TokenIntrospection, TokenRevocation
from identity.protocol.grants import ClientCredentialsGrant
from identity.protocol.server import IdentityServer
from identity.protocol.tokens import AccessTokenIssuer

GRANTS = (ClientCredentialsGrant,)
ENDPOINTS = (TokenRevocation, TokenIntrospection)


def build_server(
    database: Database, issuer: AccessTokenIssuer, denylist: Denylist
) -> IdentityServer:
    """The authorization server with every grant and endpoint identity serves."""
    server = IdentityServer(database, issuer, denylist)
    for grant in GRANTS:
        server.register_grant(grant)
    for endpoint in ENDPOINTS:
        server.register_endpoint(endpoint)
    return server


def grant_types() -> list[str]:
    return [str(grant.GRANT_TYPE) for grant in GRANTS]
