"""The sign-in pages: signup, email verification, login, logout, password reset."""

from __future__ import annotations

from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from identity import audit
from identity.accounts import recovery, sessions
from identity.accounts.errors import AccountError, EmailNotVerified, InvalidInput, Throttled
from identity.models import User
from identity.web.authorize import pending_resume_path
from identity.web.pages import (
    Visit,
    accounts_of,
    confirm_page,
    form_page,
    message,
    policy_of,
    read_form,
    redirect,
    render,
    safe_next,
    transact,
)

# -- signup and verification ----------------------------------------------------------------


async def signup(request: Request) -> Response:
    if request.method == "GET":
        return await transact(request, lambda visit: form_page("signup.html")(request, visit))
    form = await read_form(request)
    accounts = accounts_of(request)

    def work(visit: Visit) -> Response:
        try:
            accounts.signup(
                visit.db,
                email=form.get("email", ""),
                name=form.get("name", ""),
                password=form.get("password", ""),
                context=visit.context,
            )
        except InvalidInput as error:
            values = {k: form.get(k, "") for k in ("email", "name", "next")}
            return render(request, visit, "signup.html", 400, errors=error.fields, values=values)
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
    """The page after a verification. A code that proved the mailbox only (anyone could
    have asked for it, so it carried no password) leaves the account without one."""
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


# -- login and logout ----------------------------------------------------------------------


async def login(request: Request) -> Response:
    if request.method == "GET":
        return await transact(request, lambda visit: form_page("login.html")(request, visit))
    form = await read_form(request)
    accounts, policy = accounts_of(request), policy_of(request)

    def work(visit: Visit) -> Response:
        email = form.get("email", "")
        values = {"email": email, "next": form.get("next", "")}
        try:
            user = accounts.authenticate(visit.db, email, form.get("password", ""), visit.context)
        except EmailNotVerified as error:
            # No session, and no new mail if a code is live: the person types the code they
            # have, or asks for a new one on that page.
            visit.flash(
                "Your email address is not verified yet. Enter the code from our email, "
                "or send yourself a new one."
            )
            return redirect("/verify-email?email=" + quote(error.email))
        except (InvalidInput, AccountError) as error:
            if isinstance(error, Throttled):
                raise
            return render(
                request, visit, "login.html", 400, errors={"form": str(error)}, values=values
            )
        visit.new_cookie, visit.browser = sessions.start_authenticated(
            visit.db, visit.browser, user.id, accounts.now(), policy, visit.context, ["pwd"]
        )
        # A sign-in started by an app goes back to it, even after a detour through signup.
        return redirect(safe_next(form.get("next"), pending_resume_path(visit) or "/account"))

    return await transact(request, work, form=form)


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
                request, visit, "reset_password.html", 400, token=token, errors=error.fields
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
        Route("/signup", signup, methods=["GET", "POST"]),
        Route("/signup/check-email", check_email, methods=["GET"]),
        Route("/verify-email", verify_email, methods=["GET", "POST"]),
        Route("/verify-email/resend", resend_code, methods=["POST"]),
        Route("/verify-email/confirm", confirm_verification, methods=["POST"]),
        Route("/login", login, methods=["GET", "POST"]),
        Route("/logout", logout, methods=["GET", "POST"]),
        Route("/forgot-password", forgot_password, methods=["GET", "POST"]),
        Route("/forgot-password/check-email", check_email, methods=["GET"]),
        Route("/reset-password", reset_password, methods=["GET", "POST"]),
    ]
