"""The second-factor pages: the second step of a sign-in, the step-up of a signed-in session
that an app wants with two factors, and the "Confirm it's you" of changes that need a recent
sign-in. Setting up an authenticator app and its recovery codes are ``web.two_factor_setup``'s;
the rules themselves (replay, drift, limits) are ``accounts.factors``'s.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlencode

from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from identity import audit, repositories
from identity.accounts import factors, recovery_codes, sessions
from identity.accounts.errors import InvalidCode, InvalidInput, ReauthenticationRequired
from identity.accounts.service import Accounts
from identity.audit import RequestContext
from identity.models import User
from identity.web.pages import (
    Visit,
    accounts_of,
    form_errors,
    message,
    policy_of,
    read_form,
    redirect,
    render,
    safe_next,
    transact,
)

SIGN_IN_STEP = "/login/two-factor"
SETUP = "/account/two-factor/setup"


def second_factor_redirect(visit: Visit, user: User, next_path: str) -> Response:
    """Where a signed-in session without a second factor goes when an app wants two: the
    code page (step-up), or setting up an authenticator app; either comes back to ``next_path``."""
    target = SIGN_IN_STEP if factors.has_second_factor(visit.db, user) else SETUP
    return redirect(f"{target}?{urlencode({'next': next_path})}")


def has_two_factors(visit: Visit) -> bool:
    """True when this browser's session signed in with two factors."""
    return visit.browser is not None and "mfa" in (visit.browser.amr or [])


def upgrade_session(
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
    "recovery_code.html", "recovery_code", "recovery_code", recovery_codes.use_recovery_code
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
            if pending is None and has_two_factors(visit):
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
                upgrade_session(request, visit, user, amr, step_up=None, idp=pending.idp)
                return redirect(safe_next(pending.next_path))
            assert visit.browser is not None
            amr = factors.with_factor(visit.browser.amr or ["pwd"], "otp")
            upgrade_session(request, visit, user, amr, step_up=method.factor)
            return redirect(next_path or "/account")

        return await transact(request, work, form=form)

    return endpoint


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
        upgrade_session(request, visit, visit.user, amr, step_up=None, idp=visit.browser.idp)
    return None


def two_factor_routes() -> list[BaseRoute]:
    """The second step of a sign-in (with an authenticator app or a recovery code), and step-up."""
    return [
        Route(SIGN_IN_STEP, _second_step(_AUTHENTICATOR), methods=["GET", "POST"]),  # type: ignore[arg-type]
        Route("/login/recovery-code", _second_step(_RECOVERY), methods=["GET", "POST"]),  # type: ignore[arg-type]
    ]
