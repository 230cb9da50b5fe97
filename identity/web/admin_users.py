"""The console's user pages: search, detail, the actions on an account, and new accounts.

Every change is ``operators``' (or ``roles``') own function, the one the admin API and the
CLI call, with the administrator as the actor; this module only reads forms and says what
happened."""

from __future__ import annotations

from collections.abc import Callable
from typing import cast
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response

from identity.accounts import operators, profile, roles
from identity.accounts.errors import AccountError, InvalidInput, Throttled
from identity.models import User
from identity.web.admin_console import Console, ConsoleForm, ConsolePage, ConsoleRoute

_PAGE_SIZE = 25
# What the status filter offers: the value sent, and its words.
STATUSES = (
    ("", "Any status"),
    ("active", "Active"),
    ("unverified", "Not verified (invitations too)"),
    ("disabled", "Disabled"),
)
_MAX_QUERY = 320  # the longest email address
_NOT_FOUND = "There is no such user. The account may have been deleted."


def _user_path(request: Request) -> str:
    return f"/admin/users/{request.path_params['user_id']}"


def _find(console: Console) -> User | None:
    """The user the path names (an id; an email works too), or None."""
    try:
        return operators.find_user(console.db, console.request.path_params["user_id"][:_MAX_QUERY])
    except LookupError:
        return None


# -- search -------------------------------------------------------------------------------


def _search(console: Console) -> Response:
    """``/admin/users?q=EMAIL-PREFIX&status=…&cursor=…``: a page of matching accounts."""
    params = console.request.query_params
    query = params.get("q", "").strip()[:_MAX_QUERY]
    status = params.get("status", "")
    cursor = params.get("cursor") or None
    values = {"q": query, "status": status}
    if status not in dict(STATUSES):
        errors = {"form": "Check the filters", "status": "Choose a status from the list."}
        return _search_page(console, [], None, values, 400, errors)
    try:
        users, next_cursor = operators.search_users(
            console.db,
            email_prefix=query or None,
            status=cast("operators.Status | None", status or None),  # one of STATUSES
            cursor=cursor,
            limit=_PAGE_SIZE,
        )
    except InvalidInput as error:
        if "cursor" in error.fields:  # a page link that is not one of ours
            errors = {"form": "That page link doesn't work. Search again."}
        else:
            errors = {"form": "Check the filters", **error.fields}
        return _search_page(console, [], None, values, 400, errors)
    filters = {"email": query or None, "status": status or None, "cursor": cursor is not None}
    console.record_read("admin.users_listed", detail=filters)
    more = None
    if next_cursor is not None:
        more = "/admin/users?" + urlencode({**values, "cursor": next_cursor})
    return _search_page(console, users, more, values, first_page=cursor is None)


def _search_page(
    console: Console,
    users: list[User],
    next_href: str | None,
    values: dict[str, str],
    status: int = 200,
    errors: dict[str, str] | None = None,
    first_page: bool = True,
) -> Response:
    return console.page(
        "admin/users.html",
        status,
        users=users,
        next_href=next_href,
        first_href="" if first_page else "/admin/users?" + urlencode(values),
        statuses=STATUSES,
        values=values,
        errors=errors or {},
    )


# -- one user -----------------------------------------------------------------------------


def _detail_page(
    console: Console,
    user: User,
    status: int = 200,
    errors: dict[str, str] | None = None,
    values: dict[str, str] | None = None,
) -> Response:
    detail = operators.user_detail(console.db, user, now=console.accounts.now())
    for row in detail["sessions"]:
        row["device"] = profile.describe_user_agent(row.get("user_agent"))
    return console.page(
        "admin/user.html",
        status,
        account=user,  # base.html's ``user`` is the signed-in one
        detail=detail,
        is_self=user.id == console.admin.id,
        errors=errors or {},
        values=values or {},
    )


def _detail(console: Console) -> Response:
    user = _find(console)
    if user is None:
        return console.not_found(_NOT_FOUND, "/admin/users")
    console.record_read("admin.user_viewed", subject=str(user.id))
    return _detail_page(console, user)


def _confirm_delete(console: Console) -> Response:
    user = _find(console)
    if user is None:
        return console.not_found(_NOT_FOUND, "/admin/users")
    return console.page(
        "admin/confirm.html",
        heading=f"Delete {user.email}?",
        text=(
            "The account, its sessions, tokens, second factors and linked providers are "
            "deleted, and its access tokens stop working at once. This cannot be undone; "
            "disabling the account instead keeps it."
        ),
        action=f"/admin/users/{user.id}/delete",
        button="Delete the account",
        back=f"/admin/users/{user.id}",
    )


Change = Callable[[Console, User, dict[str, str]], str]


def _action(
    change: Change, after: Callable[[User], str] | None = None
) -> Callable[[Console, dict[str, str]], Response]:
    """A POST on a user's page: the change, then its confirmation on the page ``after``
    names (the user's page by default); refused input shows the user's page with why."""

    def work(console: Console, form: dict[str, str]) -> Response:
        user = _find(console)
        if user is None:
            return console.not_found(_NOT_FOUND, "/admin/users")
        location = after(user) if after else f"/admin/users/{user.id}"
        try:
            with console.savepoint():
                notice = change(console, user, form)
        except InvalidInput as error:
            values = {k: v for k, v in form.items() if k in ("name", "role")}
            errors = {"form": "Check what you typed", **error.fields}
            return _detail_page(console, user, 400, errors, values)
        except Throttled:
            raise  # the "too many attempts" page (pages.transact)
        except AccountError as error:  # e.g. a reset mail for a disabled account
            return _detail_page(console, user, 400, {"form": str(error)})
        return console.done(notice, location)

    return work


def _disable(console: Console, user: User, form: dict[str, str]) -> str:
    operators.set_active(
        console.accounts, console.db, user, False, actor=console.actor, context=console.context
    )
    return f"Disabled {user.email}"


def _enable(console: Console, user: User, form: dict[str, str]) -> str:
    operators.set_active(
        console.accounts, console.db, user, True, actor=console.actor, context=console.context
    )
    return f"Enabled {user.email}"


def _delete(console: Console, user: User, form: dict[str, str]) -> str:
    email = user.email
    operators.delete_user(
        console.accounts, console.db, user, actor=console.actor, context=console.context
    )
    return f"Deleted {email}"


def _send_reset(console: Console, user: User, form: dict[str, str]) -> str:
    operators.send_reset(
        console.accounts, console.db, user, actor=console.actor, context=console.context
    )
    return f"Sent a password reset link to {user.email}"


def _end_sessions(console: Console, user: User, form: dict[str, str]) -> str:
    operators.end_sessions(
        console.accounts, console.db, user, actor=console.actor, context=console.context
    )
    return f"Signed {user.email} out of every browser and app"


def _reset_mfa(console: Console, user: User, form: dict[str, str]) -> str:
    removed = operators.reset_mfa(
        console.accounts, console.db, user, actor=console.actor, context=console.context
    )
    if removed:
        return f"Removed the second factors of {user.email}"
    return f"{user.email} had no second factor to remove"


def _rename(console: Console, user: User, form: dict[str, str]) -> str:
    operators.rename_user(
        console.accounts,
        console.db,
        user,
        form.get("name", ""),
        actor=console.actor,
        context=console.context,
    )
    return f"Renamed {user.email}"


def _add_role(console: Console, user: User, form: dict[str, str]) -> str:
    role = form.get("role", "").strip()
    if roles.add_role(console.db, user, role, actor=console.actor, context=console.context):
        return f"Gave {user.email} the role {role}"
    return f"{user.email} already has the role {role}"


def _remove_role(console: Console, user: User, form: dict[str, str]) -> str:
    role = form.get("role", "")
    if roles.remove_role(console.db, user, role, actor=console.actor, context=console.context):
        return f"Took the role {role} from {user.email}"
    return f"{user.email} did not have the role {role}"


# -- a new account ------------------------------------------------------------------------

_HOW = ("password", "invite")


def _new_form(console: Console) -> Response:
    return console.page("admin/user_new.html", values={"how": "password"})


def _create(console: Console, form: dict[str, str]) -> Response:
    """A verified account with the password typed here, or an invitation: a mail whose
    link lets the person choose their password."""
    how = form.get("how", "")
    values = {k: form.get(k, "") for k in ("email", "name", "how")}
    if how not in _HOW:
        error = InvalidInput({"how": "Choose how the person gets a password."})
        return console.invalid("admin/user_new.html", error, values=values)
    invite = how == "invite"
    try:
        with console.savepoint():
            user = operators.create_user(
                console.accounts,
                console.db,
                email=form.get("email", ""),
                name=form.get("name", ""),
                # Empty is none: with an invitation, a typed one is refused (operators' rule).
                password=form.get("password") or None,
                verified=True,
                invite=invite,
                actor=console.actor,
                context=console.context,
            )
    except InvalidInput as error:
        return console.invalid("admin/user_new.html", error, values=values)
    verb = "Invited" if invite else "Created"
    return console.done(f"{verb} {user.email}", f"/admin/users/{user.id}")


def user_routes() -> list[ConsoleRoute]:
    """The user pages of the console."""

    def act(path: str, change: Change, after: Callable[[User], str] | None = None) -> ConsoleForm:
        return ConsoleForm(f"/admin/users/{{user_id}}/{path}", _action(change, after), _user_path)

    return [
        ConsolePage("/admin/users", _search),
        ConsolePage("/admin/users/new", _new_form),
        ConsoleForm("/admin/users/new", _create, lambda request: "/admin/users/new"),
        ConsolePage("/admin/users/{user_id}", _detail),
        ConsolePage("/admin/users/{user_id}/delete", _confirm_delete),
        act("disable", _disable),
        act("enable", _enable),
        act("delete", _delete, after=lambda user: "/admin/users"),
        act("send-reset", _send_reset),
        act("end-sessions", _end_sessions),
        act("reset-mfa", _reset_mfa),
        act("name", _rename),
        act("roles", _add_role),
        act("roles/remove", _remove_role),
    ]
