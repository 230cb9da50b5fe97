"""The account's authenticator-app pages: setting one up (with the "Confirm it's you" of a
recent sign-in), the recovery codes shown once and their download, new recovery codes, and
removing the app. The second step of a sign-in and step-up are ``web.two_factor``'s; the rules
themselves are ``accounts.factors``'s.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from identity.accounts import factors
from identity.accounts.errors import InvalidCode, InvalidInput, ReauthenticationRequired
from identity.web.pages import (
    NEW_RECOVERY_CODES,
    Visit,
    accounts_of,
    message,
    read_form,
    redirect,
    render,
    safe_next,
    take_recovery_codes,
    transact,
)
from identity.web.two_factor import (
    SETUP,
    SIGN_IN_STEP,
    has_two_factors,
    is_recent,
    password_page,
    recently_signed_in,
    upgrade_session,
)

# What the download echoes back: the shape factors hands out, nothing else.
_RECOVERY_CODE = re.compile(r"[a-z0-9]{5}-[a-z0-9]{5}")
_MAX_CODES = 10


def _login_first(request: Request) -> Response:
    """Anonymous visitors sign in first and come back here, query and all."""
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return redirect(f"/login?{urlencode({'next': here})}")


# -- setting up an authenticator app -------------------------------------------------------


def _setup_page(
    request: Request,
    visit: Visit,
    setup: factors.TotpSetup,
    next_path: str,
    status: int = 200,
    errors: dict[str, str] | None = None,
) -> Response:
    return render(
        request,
        visit,
        "totp_setup.html",
        status,
        qr_svg=setup.qr_svg(),  # drawn by segno from our own URI: markup, not user text
        uri=setup.uri,
        secret=setup.secret,
        next=next_path,
        errors=errors or {},
    )


def recovery_codes_page(
    request: Request, visit: Visit, codes: list[str], next_path: str, heading: str
) -> Response:
    """The recovery codes, shown once, with a download and the way on (``next_path``)."""
    return render(
        request,
        visit,
        "recovery_codes.html",
        heading=heading,
        codes=codes,
        next=next_path,
    )


def _already_set_up(visit: Visit, next_path: str) -> Response:
    if next_path and not has_two_factors(visit):
        return redirect(f"{SIGN_IN_STEP}?{urlencode({'next': next_path})}")
    if not next_path:
        visit.flash("An authenticator app is already set up. Remove it first to set up another.")
    return redirect(next_path or "/account")


async def setup(request: Request) -> Response:
    """GET: the QR code and URI of a new authenticator app. POST: its first code turns it on,
    counts as this session's second factor, and shows the recovery codes."""
    accounts = accounts_of(request)
    form = await read_form(request) if request.method == "POST" else None
    asked_next = form.get("next") if form is not None else request.query_params.get("next")
    next_path = safe_next(asked_next, "")

    def work(visit: Visit) -> Response:
        user = visit.user
        if user is None or visit.browser is None:
            return _login_first(request)
        if factors.has_totp(visit.db, user):
            return _already_set_up(visit, next_path)
        purpose = "set up a second factor"
        if form is not None and "code" not in form:  # the password of "Confirm it's you"
            asked = recently_signed_in(request, visit, form, SETUP, purpose, next_path)
            return asked or redirect(f"{SETUP}?{urlencode({'next': next_path})}")
        if not is_recent(request, visit):
            return password_page(request, visit, SETUP, purpose, next_path)
        if form is None:
            return _setup_page(
                request, visit, factors.begin_totp(accounts, visit.db, user), next_path
            )
        try:
            codes = factors.confirm_totp(
                accounts,
                visit.db,
                user,
                form.get("code", ""),
                visit.context,
                authenticated_at=visit.browser.auth_time,
            )
        except ReauthenticationRequired:  # five minutes passed on the setup page
            return password_page(request, visit, SETUP, purpose, next_path)
        except InvalidCode as error:
            # With no app waiting (removed in another tab), a new one starts here.
            waiting = factors.pending_totp(accounts, visit.db, user)
            again = waiting or factors.begin_totp(accounts, visit.db, user)
            errors = {"form": "Check the code", "code": str(error)}
            return _setup_page(request, visit, again, next_path, 400, errors)
        assert visit.browser is not None
        if not has_two_factors(visit):
            amr = factors.with_factor(visit.browser.amr or ["pwd"], "otp")
            upgrade_session(request, visit, user, amr, step_up="totp")
        if not codes:
            visit.flash("Your authenticator app is set up.")
            return redirect(next_path or "/account")
        heading = "Your authenticator app is set up"
        return recovery_codes_page(request, visit, codes, next_path, heading)

    return await transact(request, work, form=form)


async def new_codes(request: Request) -> Response:
    """GET: the recovery codes a passkey's registration just made, shown this once."""

    def work(visit: Visit) -> Response:
        if visit.user is None:
            return _login_first(request)
        kept = take_recovery_codes(accounts_of(request), visit.browser)
        if kept is None:
            return redirect("/account")
        codes, next_path = kept
        heading = "Your passkey is added"
        return recovery_codes_page(request, visit, codes, next_path, heading)

    return await transact(request, work)


async def download_codes(request: Request) -> Response:
    """POST: the recovery codes the page just showed, back as a text file to keep."""
    form = await read_form(request)

    def work(visit: Visit) -> Response:
        if visit.user is None:
            return _login_first(request)
        codes = [c for c in form.get("recovery_codes", "").split() if _RECOVERY_CODE.fullmatch(c)]
        if not codes:
            return message(
                request,
                visit,
                "Nothing to download",
                "There are no recovery codes in this request. Make new ones on your account page.",
                400,
                link=("/account", "Back to your account"),
            )
        lines = [
            f"Recovery codes for {visit.user.email}",
            "Each code signs you in once when you don't have your authenticator app.",
            "",
            *codes[:_MAX_CODES],
            "",
        ]
        return PlainTextResponse(
            "\n".join(lines),
            headers={
                "Content-Disposition": 'attachment; filename="identity-recovery-codes.txt"',
                "Cache-Control": "no-store",
            },
        )

    return await transact(request, work, form=form)


# -- new recovery codes and removing the app, after a recent sign-in -----------------------


def _signed_in_form(
    change: Callable[[Request, Visit, dict[str, str]], Response],
) -> Callable[[Request], object]:
    async def endpoint(request: Request) -> Response:
        form = await read_form(request)

        def work(visit: Visit) -> Response:
            if visit.user is None or visit.browser is None:
                return redirect("/login?next=/account")
            return change(request, visit, form)

        return await transact(request, work, form=form)

    return endpoint


def _regenerate(request: Request, visit: Visit, form: dict[str, str]) -> Response:
    action = "/account/two-factor/recovery-codes"
    asked = recently_signed_in(request, visit, form, action, "make new recovery codes")
    if asked is not None:
        return asked
    assert visit.user is not None
    try:
        codes = factors.regenerate_recovery_codes(
            accounts_of(request), visit.db, visit.user, visit.context
        )
    except InvalidInput:
        visit.flash("Set up an authenticator app first: recovery codes stand in for it.")
        return redirect("/account")
    return recovery_codes_page(request, visit, codes, "", "Your new recovery codes")


def _remove(request: Request, visit: Visit, form: dict[str, str]) -> Response:
    action = "/account/two-factor/remove"
    asked = recently_signed_in(request, visit, form, action, "remove the authenticator app")
    if asked is not None:
        return asked
    assert visit.user is not None
    if factors.remove_totp(accounts_of(request), visit.db, visit.user, visit.context):
        visit.flash("The authenticator app is removed, and its recovery codes no longer work.")
    else:
        visit.flash("There was no authenticator app to remove.")
    return redirect("/account")


def two_factor_setup_routes() -> list[BaseRoute]:
    """Setting up and removing the authenticator app, and its recovery codes."""
    return [
        Route(SETUP, setup, methods=["GET", "POST"]),
        Route("/account/two-factor/recovery-codes", _signed_in_form(_regenerate), methods=["POST"]),  # type: ignore[arg-type]
        Route("/account/two-factor/recovery-codes/download", download_codes, methods=["POST"]),
        Route(NEW_RECOVERY_CODES, new_codes, methods=["GET"]),
        Route("/account/two-factor/remove", _signed_in_form(_remove), methods=["POST"]),  # type: ignore[arg-type]
    ]
