"""Users' roles: named strings an operator gives to people, which reach the tokens of the
apps they sign in to (the ``roles`` scope and claim, ``protocol.grants.role_claims``).

Every surface (the CLI, the admin API, the console) changes roles through ``add_role`` and
``remove_role``, so each change is checked and audited the same way. A change reaches the
next token issued; tokens already issued keep the roles they carry until they expire.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from sqlalchemy.orm import Session

from identity import audit, repositories
from identity.accounts.errors import InvalidInput
from identity.audit import RequestContext
from identity.models import User

# ASCII only: a role travels in JWTs and is compared byte for byte by resource servers,
# where look-alike letters of other scripts would make two roles read the same.
ROLE_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9:._-]{0,99}")
ROLE_RULE = (
    "A role is 1 to 100 characters: letters, digits and : . _ -, "
    "starting with a letter or a digit (e.g. admin or app1:editor)."
)


def validate_role(role: str) -> str:
    """``role`` without surrounding spaces, when it is a valid role name; InvalidInput else."""
    cleaned = role.strip()
    if not ROLE_PATTERN.fullmatch(cleaned):
        raise InvalidInput({"role": ROLE_RULE})
    return cleaned


def roles_of(session: Session, user: User) -> list[str]:
    """The user's roles, sorted."""
    return repositories.user_roles(session, user.id)


def add_role(
    session: Session, user: User, role: str, *, actor: str, context: RequestContext
) -> bool:
    """Give ``user`` the role; False (and no audit row) if they had it already."""
    role = validate_role(role)
    added = repositories.add_user_role(session, user.id, role)
    if added:
        audit.record(
            session,
            "user.role_added",
            context=context,
            actor=actor,
            subject=str(user.id),
            detail={"role": role},
        )
    return added


def remove_role(
    session: Session, user: User, role: str, *, actor: str, context: RequestContext
) -> bool:
    """Take the role from ``user``; False (and no audit row) if they did not have it."""
    role = validate_role(role)
    removed = repositories.remove_user_role(session, user.id, role)
    if removed:
        audit.record(
            session,
            "user.role_removed",
            context=context,
            actor=actor,
            subject=str(user.id),
            detail={"role": role},
        )
    return removed


def roles_for_client(roles: Sequence[str], role_prefixes: Sequence[str]) -> list[str]:
    """The roles an app sees: all of them when it names no prefix, else those that start
    with one of its prefixes (``app1:`` keeps ``app1:editor``, not ``app2:editor``)."""
    if not role_prefixes:
        return list(roles)
    prefixes = tuple(role_prefixes)
    return [role for role in roles if role.startswith(prefixes)]
