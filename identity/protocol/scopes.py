"""The scopes identity itself gives meaning to, and the audience that goes with them.

One definition for the grants that issue them and the JSON API that checks them.
"""

from __future__ import annotations

# The scope of the JSON account API (``/api/v1``): first-party clients only, and a user
# grant that carries it gets the API's audience too.
ACCOUNT_SCOPE = "account"
# The operators' audit API (``/api/v1/admin``): a client's own client_credentials token only.
ADMIN_SCOPE = "admin"


def account_audience(issuer: str) -> str:
    """The ``aud`` the JSON account API accepts: ``{issuer}/api/v1``."""
    return f"{issuer}/api/v1"
