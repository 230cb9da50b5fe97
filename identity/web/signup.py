"""The signup pages: the form, "check your email", and verification by code or link.

Verifying proves the mailbox. In the browser that typed the account's password moments
before (at signup, or at a sign-in refused for the unverified address) it proves the password
too: that browser is signed in and goes on where it was going, such as an app's pending
authorization request (``accounts.sessions.start_verified``). Any other browser only
verifies, and signs in as usual.
"""

from __future__ import annotations

from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from identity.accounts import sessions
from identity.accounts.errors import AccountError, InvalidInput, Throttled
from identity.models import User
from identity.web.authorize import pending_resume_path
from identity.web.pages import (
    Visit,
    accounts_of,
    confirm_page,
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


async def signup(request: Request) -> Response:
    if request.method == "GET":
        return await transact(request, lambda visit: form_page("signup.html")(request, visit))
    form = await read_form(request)
    accounts = accounts_of(request)

    def work(visit: Visit) -> Response:
        try:
            typed = accounts.signup(
                visit.db,
                email=form.get("email", ""),
                name=form.get("name", ""),
                password=form.get("password", ""),
                context=visit.context,
            )
        except InvalidInput as error:
            values = {k: form.get(k, "") for k in ("email", "name", "next")}
            errors = form_errors(error)
            return render(request, visit, "signup.html", 400, errors=errors, values=values)
        if visit.browser is not None:  # always: the form's CSRF token lives in it
            next_path = safe_next(form.get("next"), "")
            sessions.remember_typed_password(visit.browser, typed, accounts.now(), next_path)
        return redirect("/signup/check-email?email=" + quote(form.get("email", "").strip()))

    return await transact(request, work, form=form)


async def check_email(request: Request) -> Response:
    email = request.query_params.get("email", "")[:320]
    purpose = "reset" if request.url.path.startswith("/forgot") else "verify"
    return await transact(
        request,
        lambda visit: render(request, visit, "check_email.html", email=email, purpose=purpose),
    )


async def verify_email(request: Request) -> Response:
    accounts = accounts_of(request)
    if request.method == "GET":
        token = request.query_params.get("token")
        if token is None:
            return await transact(
                request,
                lambda visit: form_page(
                    "verify_email.html", email=request.query_params.get("email", "")
                )(request, visit),
            )

        return await transact(
            request,
            lambda visit: confirm_page(
                request,
                visit,
                token,
                "Confirm your email",
                "One click and your address is verified.",
                "/verify-email/confirm",
                "Verify my email",
            ),
        )

    form = await read_form(request)

    def by_code(visit: Visit) -> Response:
        email = form.get("email", "")
        try:
            user = accounts.verify_code(visit.db, email, form.get("code", ""), visit.context)
        except AccountError as error:
            status, text = 400, str(error)
            if isinstance(error, Throttled):
                # This IP waits; the link in the mail is no guess and still works.
                status, text = 429, f"{error} Or open the link in the email: it still works."
            response = render(
                request,
                visit,
                "verify_email.html",
                status,
                email=email,
                errors={"code": text},
                values={"email": email},
            )
            if isinstance(error, Throttled):
                response.headers["Retry-After"] = str(error.retry_after)
            return response
        return _verified(request, visit, user, "/login?email=" + quote(email))

    return await transact(request, by_code, form=form)


def _verified(request: Request, visit: Visit, user: User, login: str) -> Response:
    """After a verification: on where it was going, signed in, for the browser that typed
    the password; else a page. A code that proved the mailbox only (anyone could have asked
    for it, so it carried no password) leaves the account without one."""
    accounts = accounts_of(request)
    started = sessions.start_verified(
        visit.db, visit.browser, user, accounts.now(), policy_of(request), visit.context
    )
    if started is not None:
        visit.new_cookie, visit.browser, going = started
        visit.user = user
        visit.flash("Your email address is verified, and you're signed in.")
        # As after a login: where it was going, else the app waiting in this browser.
        return redirect(safe_next(going, pending_resume_path(visit) or "/account"))
    if user.password_hash is None:
        return message(
            request,
            visit,
            "Email verified",
            "Your email address is verified. Choose a password to sign in.",
            link=("/forgot-password", "Choose a password"),
        )
    return message(
        request,
        visit,
        "Email verified",
        "Your email address is verified. You can sign in now.",
        link=(login, "Sign in"),
    )


async def confirm_verification(request: Request) -> Response:
    form = await read_form(request)
    accounts = accounts_of(request)

    def work(visit: Visit) -> Response:
        try:
            user = accounts.verify_link(visit.db, form.get("token", ""), visit.context)
        except AccountError as error:
            return message(
                request,
                visit,
                "This link doesn't work",
                str(error),
                400,
                link=("/verify-email", "Enter a code instead"),
            )
        return _verified(request, visit, user, "/login")

    return await transact(request, work, form=form)


async def resend_code(request: Request) -> Response:
    form = await read_form(request)
    accounts = accounts_of(request)

    def work(visit: Visit) -> Response:
        accounts.resend_code(visit.db, form.get("email", ""), visit.context)
        visit.flash("If that address is waiting for verification, a new code is on its way.")
        return redirect("/verify-email?email=" + quote(form.get("email", "").strip()))

    return await transact(request, work, form=form)


def signup_routes() -> list[BaseRoute]:
    """The pages of signing up and verifying an email address."""
    return [
        Route("/signup", signup, methods=["GET", "POST"]),
        Route("/signup/check-email", check_email, methods=["GET"]),
        Route("/verify-email", verify_email, methods=["GET", "POST"]),
        Route("/verify-email/resend", resend_code, methods=["POST"]),
        Route("/verify-email/confirm", confirm_verification, methods=["POST"]),
    ]
