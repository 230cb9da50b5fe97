"""The scopes identity itself gives meaning to, and the audience that goes with them.

One definition for the grants that issue them, the JSON API that checks them and the pages
that ask a person to allow them.
"""

from __future__ import annotations

from dataclasses import dataclass

# The scope of the JSON account API (``/api/v1``): first-party clients only, and a user
# grant that carries it gets the API's audience too.
ACCOUNT_SCOPE = "account"
# The operators' API (``/api/v1/admin``): a client's own client_credentials token only; a
# token obtained for a user never carries it (``protocol.grants.user_token_scope``).
ADMIN_SCOPE = "admin"
# The user's roles (``accounts.roles``), filtered by the client's role prefixes, in the
# ``roles`` claim of access tokens, ID tokens and UserInfo. Any client with a user grant
# may ask for it (``models.OIDC_SCOPES``).
ROLES_SCOPE = "roles"


def account_audience(issuer: str) -> str:
    """The ``aud`` the JSON account API accepts: ``{issuer}/api/v1``."""
    return f"{issuer}/api/v1"


@dataclass(frozen=True)
class ScopeDescription:
    """One scope as a person is asked to allow it."""

    name: str
    description: str


# The one table of what a scope lets an app do, in a person's words. The browser consent
# page, the device page and the account page all read it, so a scope reads the same
# wherever it is asked for or listed. Each line follows "This will allow <app> to:".
SCOPE_DESCRIPTIONS = {
    "openid": "Know who you are on identity",
    "profile": "See your name",
    "email": "See your email address",
    "offline_access": "Stay signed in, even while you are away, until you remove its access",
    ROLES_SCOPE: "See the roles you have been given",
    ACCOUNT_SCOPE: "Manage your account: your name, email address, password and sessions",
}


def describe_scopes(scope: str) -> list[ScopeDescription]:
    """Each scope of a space-separated ``scope`` once, in order, with its description;
    a scope of a resource server (not ours to word) is named as it is."""
    names = dict.fromkeys(scope.split())
    return [
        ScopeDescription(name, SCOPE_DESCRIPTIONS.get(name, f"Use the “{name}” permission"))
        for name in names
    ]
