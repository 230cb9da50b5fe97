"""The sign-in pages: login, logout and password reset (signup and verification: ``signup``)."""

from __future__ import annotations

from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from identity import audit
from identity.accounts import factors, recovery, sessions
from identity.accounts.errors import AccountError, EmailNotVerified, InvalidInput, Throttled
from identity.web.authorize import pending_app_name, pending_resume_path
from identity.web.pages import (
    Visit,
    accounts_of,
    form_errors,
    form_page,
    message,
    policy_of,
    read_form,
    redirect,
    render,
    safe_next,
    transact,
)
from identity.web.signup import check_email

# -- login and logout ----------------------------------------------------------------------


async def login(request: Request) -> Response:
    if request.method == "GET":

        def show(visit: Visit) -> Response:
            return form_page("login.html", providers=_providers(request, visit))(request, visit)

        return await transact(request, show)
    form = await read_form(request)
    accounts, policy = accounts_of(request), policy_of(request)

    def work(visit: Visit) -> Response:
        email = form.get("email", "")
        values = {"email": email, "next": form.get("next", "")}
        try:
            user = accounts.authenticate(visit.db, email, form.get("password", ""), visit.context)
        except EmailNotVerified as error:
            # No session, and no new mail if a code is live: the person types the code they
            # have, or asks for a new one on that page. This browser proved the password, so
            # verifying in it signs it in and goes on to ``next`` (signup.py).
            next_path = safe_next(form.get("next"), "")
            if visit.browser is not None:  # always: the form's CSRF token lives in it
                sessions.remember_typed_password(
                    visit.browser, error.password_fingerprint, accounts.now(), next_path
                )
            visit.flash(_verify_first(visit, next_path))
            return redirect("/verify-email?email=" + quote(error.email))
        except (InvalidInput, AccountError) as error:
            if isinstance(error, Throttled):
                raise
            return render(
                request,
                visit,
                "login.html",
                400,
                errors={"form": str(error)},
                values=values,
                providers=_providers(request, visit),
            )
        # A sign-in started by an app goes back to it, even after a detour through signup.
        next_path = safe_next(form.get("next"), pending_resume_path(visit) or "/account")
        if factors.has_second_factor(visit.db, user):
            # No session yet: the password step waits, in this browser only, for the code.
            browser = visit.ensure_browser(accounts)
            sessions.await_second_factor(browser, user.id, accounts.now(), ["pwd"], next_path)
            return redirect("/login/two-factor")
        visit.new_cookie, visit.browser = sessions.start_authenticated(
            visit.db, visit.browser, user.id, accounts.now(), policy, visit.context, ["pwd"]
        )
        return redirect(next_path)

    return await transact(request, work, form=form)


def _providers(request: Request, visit: Visit) -> list[dict[str, str]]:
    """The "Continue with ..." buttons: only enabled providers, never their secrets."""
    enabled = request.app.state.providers.enabled(visit.db)
    return [{"name": p.name, "label": p.label} for p in enabled]


def _verify_first(visit: Visit, next_path: str) -> str:
    """Why the person is on the code page instead of where they were going."""
    app = pending_app_name(visit, next_path)
    if app is not None:
        return (
            f"You need to verify your email address before you can continue to {app}. "
            "Enter the code from our email, or send yourself a new one, and you'll go "
            "straight on, without signing in again."
        )
    return (
        "Your email address is not verified yet, and you need to verify it before you can "
        "sign in. Enter the code from our email, or send yourself a new one, and you'll be "
        "signed in straight away."
    )


async def logout(request: Request) -> Response:
    if request.method == "GET":

        def confirm(visit: Visit) -> Response:
            if visit.user is None:
                return message(
                    request,
                    visit,
                    "You're signed out",
                    "You are not signed in on this browser.",
                    link=("/login", "Sign in"),
                )
            return render(request, visit, "logout.html")

        return await transact(request, confirm)
    form = await read_form(request)

    def work(visit: Visit) -> Response:
        if visit.browser is not None:
            if visit.user is not None:
                audit.record(visit.db, "logout", context=visit.context, subject=str(visit.user.id))
            sessions.end(visit.db, visit.browser)
        visit.drop_cookie = True
        visit.browser, visit.user = None, None
        return message(
            request, visit, "You're signed out", "See you soon.", link=("/login", "Sign in again")
        )

    return await transact(request, work, form=form)


# -- forgotten password --------------------------------------------------------------------


async def forgot_password(request: Request) -> Response:
    if request.method == "GET":
        return await transact(
            request, lambda visit: form_page("forgot_password.html")(request, visit)
        )
    form = await read_form(request)
    accounts = accounts_of(request)

    def work(visit: Visit) -> Response:
        recovery.request_reset(accounts, visit.db, form.get("email", ""), visit.context)
        return redirect(
            "/forgot-password/check-email?email=" + quote(form.get("email", "").strip())
        )

    return await transact(request, work, form=form)


async def reset_password(request: Request) -> Response:
    accounts = accounts_of(request)
    invalid = (
        "This link doesn't work",
        "This reset link is invalid, used or expired. Ask for a new one.",
    )
    if request.method == "GET":
        token = request.query_params.get("token", "")

        def show(visit: Visit) -> Response:
            try:
                recovery.check_reset_token(accounts, visit.db, token)
            except AccountError:
                return message(
                    request, visit, *invalid, 400, link=("/forgot-password", "Get a new link")
                )
            visit.ensure_browser(accounts)
            return render(request, visit, "reset_password.html", token=token)

        return await transact(request, show)
    form = await read_form(request)

    def work(visit: Visit) -> Response:
        token = form.get("token", "")
        try:
            recovery.reset_password(
                accounts, visit.db, token, form.get("password", ""), visit.context
            )
        except InvalidInput as error:
            return render(
                request, visit, "reset_password.html", 400, token=token, errors=form_errors(error)
            )
        except AccountError:
            return message(
                request, visit, *invalid, 400, link=("/forgot-password", "Get a new link")
            )
        if visit.browser is not None and visit.browser.user_id is not None:
            visit.drop_cookie = True  # this browser's session ended with all the others
        visit.user = None
        return message(
            request,
            visit,
            "Password changed",
            "Your password is changed and every session was signed out. "
            "Sign in with your new password.",
            link=("/login", "Sign in"),
        )

    return await transact(request, work, form=form)


def signin_routes() -> list[BaseRoute]:
    """The pages of signing up, in and out, and of recovering a password."""
    return [
        Route("/", lambda request: redirect("/account"), methods=["GET"]),
        Route("/login", login, methods=["GET", "POST"]),
        Route("/logout", logout, methods=["GET", "POST"]),
        Route("/forgot-password", forgot_password, methods=["GET", "POST"]),
        Route("/forgot-password/check-email", check_email, methods=["GET"]),
        Route("/reset-password", reset_password, methods=["GET", "POST"]),
    ]
