"""The admin console (``/admin``): the guard every console page passes, the overview, and
the route list. The pages are one module per noun (``admin_users``, ``admin_clients``,
``admin_audit``, ``admin_webhooks``) on ``admin_console``'s parts; the rules they apply are
the account and protocol services' own, the ones the admin API and the CLI call.

Who may use the console is ``operators.is_console_admin`` (an active user with the ``admin``
role whose session showed a second factor); the guard only tells a visitor it turns away
why, and where to go: anonymous visitors to the login page (and back here afterwards),
signed-in users without the role a 403, administrators whose session has one factor through
the step-up (or, with no second factor at all, to setting one up)."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from identity.accounts import factors, operators, roles
from identity.models import User
from identity.web import admin_audit, admin_clients, admin_users, admin_webhooks
from identity.web.admin_console import Console, ConsolePage, ConsoleRoute
from identity.web.pages import Visit, message, read_form, redirect, transact
from identity.web.two_factor import SETUP, SIGN_IN_STEP


def _here(request: Request) -> str:
    return request.url.path + (f"?{request.url.query}" if request.url.query else "")


def _refused(request: Request, visit: Visit, user: User, back: str) -> Response:
    """Why ``user``'s session may not use the console, and the way on if there is one."""
    if operators.ADMIN_ROLE not in roles.roles_of(visit.db, user):
        return message(
            request,
            visit,
            "This page is for administrators",
            "Your account can't use the admin console. Ask an administrator if you need to.",
            403,
            link=("/account", "Go to your account"),
        )
    if factors.has_second_factor(visit.db, user):
        # The step-up page asks for the factor and comes back to ``back``.
        return redirect(f"{SIGN_IN_STEP}?{urlencode({'next': back})}")
    setup = f"{SETUP}?{urlencode({'next': back})}"
    return message(
        request,
        visit,
        "Set up a second factor first",
        "The admin console needs two factors at every sign-in. Set up an authenticator app "
        "for your account, and you'll come straight back here.",
        403,
        link=(setup, "Set up an authenticator app"),
    )


def _guarded(
    request: Request, work: Callable[[Console], Response], back: str
) -> Callable[[Visit], Response]:
    """``work`` for a session that may use the console; everyone else is told why, and
    comes back to ``back`` (a page, never a form's action) once they can."""

    def run(visit: Visit) -> Response:
        user, browser = visit.user, visit.browser
        if user is None or browser is None:
            return redirect(f"/login?{urlencode({'next': back})}")
        if not operators.is_console_admin(visit.db, browser):
            return _refused(request, visit, user, back)
        return work(Console(request, visit, user))

    return run


def _route(entry: ConsoleRoute) -> Route:
    """The console page or form behind the guard; a form checks CSRF first (``transact``)."""
    if isinstance(entry, ConsolePage):
        show = entry.show

        async def page(request: Request) -> Response:
            return await transact(request, _guarded(request, show, _here(request)))

        return Route(entry.path, page, methods=["GET"])
    submit, back = entry.submit, entry.back

    async def form(request: Request) -> Response:
        fields = await read_form(request)
        guarded = _guarded(request, lambda console: submit(console, fields), back(request))
        return await transact(request, guarded, form=fields)

    return Route(entry.path, form, methods=["POST"])


def _overview(console: Console) -> Response:
    return console.page("admin/overview.html")


def admin_routes() -> list[BaseRoute]:
    """Every ``/admin`` page and form, each behind the guard."""
    entries: list[ConsoleRoute] = [
        ConsolePage("/admin", _overview),
        *admin_users.user_routes(),
        *admin_clients.client_routes(),
        *admin_audit.audit_routes(),
        *admin_webhooks.webhook_routes(),
    ]
    return [_route(entry) for entry in entries]
