"""The second-factor pages: the second step of a sign-in, the step-up of a signed-in session
that an app wants with two factors, and setting up an authenticator app with its recovery
codes. The rules themselves (replay, drift, limits) are ``accounts.factors``'s.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlencode

from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from identity import audit, repositories
from identity.accounts import factors, sessions
from identity.accounts.errors import InvalidCode, InvalidInput, ReauthenticationRequired
from identity.accounts.service import Accounts
from identity.audit import RequestContext
from identity.models import User
from identity.web.pages import (
    NEW_RECOVERY_CODES,
    Visit,
    accounts_of,
    form_errors,
    message,
    policy_of,
    read_form,
    redirect,
    render,
    safe_next,
    take_recovery_codes,
    transact,
)

SIGN_IN_STEP = "/login/two-factor"
SETUP = "/account/two-factor/setup"
# What the download echoes back: the shape factors hands out, nothing else.
_RECOVERY_CODE = re.compile(r"[a-z0-9]{5}-[a-z0-9]{5}")
_MAX_CODES = 10


def second_factor_redirect(visit: Visit, user: User, next_path: str) -> Response:
    """Where a signed-in session without a second factor goes when an app wants two: the
    code page (step-up), or setting up an authenticator app; either comes back to ``next_path``."""
    target = SIGN_IN_STEP if factors.has_second_factor(visit.db, user) else SETUP
    return redirect(f"{target}?{urlencode({'next': next_path})}")


def _has_two_factors(visit: Visit) -> bool:
    return visit.browser is not None and "mfa" in (visit.browser.amr or [])


def _login_first(request: Request) -> Response:
    """Anonymous visitors sign in first and come back here, query and all."""
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return redirect(f"/login?{urlencode({'next': here})}")


def _upgrade(
    request: Request,
    visit: Visit,
    user: User,
    amr: list[str],
    *,
    step_up: str | None,
    idp: str | None = None,
) -> None:
    """Sign this browser in with ``amr``: a new session id and a new auth_time, as at every
    sign-in. ``step_up`` names the factor that upgraded a session that was already signed in;
    a session's upstream provider (``idp``) stays, as its first factor does."""
    if idp is None and step_up is not None and visit.browser is not None:
        idp = visit.browser.idp
    accounts = accounts_of(request)
    if step_up is not None:
        audit.record(
            visit.db,
            "mfa.step_up",
            context=visit.context,
            subject=str(user.id),
            detail={"factor": step_up},
        )
    visit.new_cookie, visit.browser = sessions.start_authenticated(
        visit.db,
        visit.browser,
        user.id,
        accounts.now(),
        policy_of(request),
        visit.context,
        amr,
        idp=idp,
    )
    visit.user = user


# -- the second step of a sign-in, and step-up ---------------------------------------------


@dataclass(frozen=True)
class _Method:
    """One way to show the second factor: its page, its field and the rule that checks it."""

    template: str
    field: str
    factor: str
    check: Callable[[Accounts, Session, User, str, RequestContext], None]


_AUTHENTICATOR = _Method("two_factor.html", "code", "totp", factors.check_totp)
_RECOVERY = _Method(
    "recovery_code.html", "recovery_code", "recovery_code", factors.use_recovery_code
)


def _expired(request: Request, visit: Visit) -> Response:
    return message(
        request,
        visit,
        "This sign-in expired",
        "For your safety a sign-in waits only five minutes for its second step, and only "
        "in the browser where the password was typed. Sign in again.",
        400,
        link=("/login", "Sign in again"),
    )


def _second_step(method: _Method) -> Callable[[Request], object]:
    """GET and POST of a second-factor page. This browser's half-done sign-in comes first;
    with none, a signed-in session without two factors steps up and goes on to ``next``."""

    async def endpoint(request: Request) -> Response:
        accounts = accounts_of(request)
        form = await read_form(request) if request.method == "POST" else None
        asked_next = form.get("next") if form is not None else request.query_params.get("next")
        next_path = safe_next(asked_next, "")

        def work(visit: Visit) -> Response:
            pending = sessions.pending_sign_in(visit.browser, accounts.now())
            user = repositories.get_user(visit.db, pending.user_id) if pending else visit.user
            if user is None or (pending is not None and not pending.still_valid_for(user)):
                return _expired(request, visit)
            if pending is None and _has_two_factors(visit):
                return redirect(next_path or "/account")
            if pending is None and not factors.has_second_factor(visit.db, user):
                return redirect(f"{SETUP}?{urlencode({'next': next_path or '/account'})}")
            step_up = pending is None
            ways = {
                "has_totp": factors.has_totp(visit.db, user),
                "has_passkey": repositories.count_passkeys(visit.db, user.id) > 0,
            }
            if form is None:
                return render(
                    request, visit, method.template, next=next_path, step_up=step_up, **ways
                )
            try:
                method.check(accounts, visit.db, user, form.get(method.field, ""), visit.context)
            except InvalidCode as error:
                errors = {"form": "Check the code", method.field: str(error)}
                return render(
                    request,
                    visit,
                    method.template,
                    400,
                    errors=errors,
                    next=next_path,
                    step_up=step_up,
                    **ways,
                )
            if pending is not None:
                assert visit.browser is not None
                sessions.forget_pending_sign_in(visit.browser)
                amr = factors.with_factor(pending.amr, "otp")
                _upgrade(request, visit, user, amr, step_up=None, idp=pending.idp)
                return redirect(safe_next(pending.next_path))
            assert visit.browser is not None
            amr = factors.with_factor(visit.browser.amr or ["pwd"], "otp")
            _upgrade(request, visit, user, amr, step_up=method.factor)
            return redirect(next_path or "/account")

        return await transact(request, work, form=form)

    return endpoint


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
    if next_path and not _has_two_factors(visit):
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
        if not _has_two_factors(visit):
            amr = factors.with_factor(visit.browser.amr or ["pwd"], "otp")
            _upgrade(request, visit, user, amr, step_up="totp")
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


# -- changes that need a recent sign-in ----------------------------------------------------


def is_recent(request: Request, visit: Visit) -> bool:
    """True when this session signed in (or confirmed its password) within five minutes."""
    auth_time = visit.browser.auth_time if visit.browser is not None else None
    return auth_time is not None and accounts_of(request).now() - auth_time <= factors.RECENT


def password_page(
    request: Request,
    visit: Visit,
    action: str,
    purpose: str,
    next_path: str = "",
    status: int = 200,
    errors: dict[str, str] | None = None,
) -> Response:
    return render(
        request,
        visit,
        "two_factor_password.html",
        status,
        action=action,
        purpose=purpose,
        next=next_path,
        errors=errors or {},
    )


def recently_signed_in(
    request: Request,
    visit: Visit,
    form: dict[str, str],
    action: str,
    purpose: str,
    next_path: str = "",
) -> Response | None:
    """None when the session signed in within five minutes or the form carries the right
    password; else the page asking for it, which posts the same action again. A right
    password is a sign-in: the session gets a new auth_time (and id), so the next changes
    within five minutes need it no more."""
    assert visit.user is not None and visit.browser is not None
    typed = form.get("password") or None
    try:
        factors.check_recent(
            accounts_of(request), visit.user, visit.browser.auth_time, typed, visit.context
        )
    except ReauthenticationRequired:
        return password_page(request, visit, action, purpose, next_path)
    except InvalidInput as error:
        return password_page(request, visit, action, purpose, next_path, 400, form_errors(error))
    if typed is not None and not is_recent(request, visit):
        amr = list(visit.browser.amr or ["pwd"])
        _upgrade(request, visit, visit.user, amr, step_up=None, idp=visit.browser.idp)
    return None


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


def two_factor_routes() -> list[BaseRoute]:
    """The second step of a sign-in, step-up, and managing the authenticator app."""
    return [
        Route(SIGN_IN_STEP, _second_step(_AUTHENTICATOR), methods=["GET", "POST"]),  # type: ignore[arg-type]
        Route("/login/recovery-code", _second_step(_RECOVERY), methods=["GET", "POST"]),  # type: ignore[arg-type]
        Route(SETUP, setup, methods=["GET", "POST"]),
        Route("/account/two-factor/recovery-codes", _signed_in_form(_regenerate), methods=["POST"]),  # type: ignore[arg-type]
        Route("/account/two-factor/recovery-codes/download", download_codes, methods=["POST"]),
        Route(NEW_RECOVERY_CODES, new_codes, methods=["GET"]),
        Route("/account/two-factor/remove", _signed_in_form(_remove), methods=["POST"]),  # type: ignore[arg-type]
    ]
