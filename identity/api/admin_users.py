"""JSON API handlers for operators' work on user accounts (``/api/v1/admin/users...``):
thin calls into ``accounts.operators`` and ``accounts.roles``, which check, apply and audit
each action (the actor is the call's). Reads are audited here: who looked at whom is
security-relevant."""

from __future__ import annotations

import uuid

from identity import repositories
from identity.accounts import operators, roles
from identity.api.admin_bodies import (
    AdminCreateUserRequest,
    AdminMfaReset,
    AdminUpdateUserRequest,
    AdminUser,
    AdminUserDetail,
    AdminUsers,
    AdminUsersQuery,
)
from identity.api.calls import ApiCall, Result
from identity.api.problems import conflict, not_found
from identity.models import User

_NO_USER = "There is no user with this id."


def _user(call: ApiCall, *, changing: bool = True) -> User:
    """The user the path names (the router took a UUID only); 404 when there is none. A
    change locks the row first: of two racing changes (two deletes) one waits for the
    other, then finds what it left."""
    user_id = uuid.UUID(call.path["user_id"])
    user = repositories.get_user(call.db, user_id, for_update=changing)
    if user is None:
        raise not_found(_NO_USER)
    return user


def _summary(user: User) -> AdminUser:
    return AdminUser.model_validate(operators.describe(user))


def list_users(call: ApiCall) -> Result:
    """A page of accounts by email; the search itself is audited with its filters."""
    query = call.query_as(AdminUsersQuery)
    users, next_cursor = operators.search_users(
        call.db,
        email_prefix=query.email,
        status=query.status,
        cursor=query.cursor,
        limit=query.limit,
    )
    filters = {"email": query.email, "status": query.status, "cursor": query.cursor is not None}
    call.record("admin.users_listed", detail=filters)
    return AdminUsers(users=[_summary(user) for user in users], next_cursor=next_cursor)


def get_user(call: ApiCall) -> Result:
    user = _user(call, changing=False)
    detail = operators.user_detail(call.db, user, now=call.accounts.now())
    call.record("admin.user_viewed", subject=str(user.id))
    return AdminUserDetail.model_validate(detail)


def create_user(call: ApiCall) -> Result:
    body = call.body_as(AdminCreateUserRequest)
    user = operators.create_user(
        call.accounts,
        call.db,
        email=body.email,
        name=body.name,
        password=body.password,
        invite=body.invite,
        actor=call.operator,
        context=call.context,
    )
    return _summary(user)


def update_user(call: ApiCall) -> Result:
    user = _user(call)
    name = call.body_as(AdminUpdateUserRequest).name
    operators.rename_user(
        call.accounts, call.db, user, name, actor=call.operator, context=call.context
    )
    return _summary(user)


def _set_active(call: ApiCall, active: bool) -> Result:
    user = _user(call)
    operators.set_active(
        call.accounts, call.db, user, active, actor=call.operator, context=call.context
    )
    return _summary(user)


def disable_user(call: ApiCall) -> Result:
    """Disabled at once: every session ends, every token is revoked or on the denylist."""
    return _set_active(call, False)


def enable_user(call: ApiCall) -> Result:
    return _set_active(call, True)


def delete_user(call: ApiCall) -> Result:
    operators.delete_user(
        call.accounts, call.db, _user(call), actor=call.operator, context=call.context
    )
    return None


def send_reset(call: ApiCall) -> Result:
    """The forgotten-password mail, as if the owner had asked (its limits too)."""
    try:
        operators.send_reset(
            call.accounts, call.db, _user(call), actor=call.operator, context=call.context
        )
    except operators.AccountDisabled as error:
        raise conflict(str(error), "account-disabled", "Account disabled") from None
    return None


def end_sessions(call: ApiCall) -> Result:
    operators.end_sessions(
        call.accounts, call.db, _user(call), actor=call.operator, context=call.context
    )
    return None


def reset_mfa(call: ApiCall) -> Result:
    reset = operators.reset_mfa(
        call.accounts, call.db, _user(call), actor=call.operator, context=call.context
    )
    return AdminMfaReset(reset=reset)


def add_role(call: ApiCall) -> Result:
    """Idempotent: a role the user has already is no change (and no audit row)."""
    roles.add_role(
        call.db, _user(call), call.path["role"], actor=call.operator, context=call.context
    )
    return None


def remove_role(call: ApiCall) -> Result:
    user = _user(call)
    if not roles.remove_role(
        call.db, user, call.path["role"], actor=call.operator, context=call.context
    ):
        raise not_found("The user does not have this role.")
    return None
