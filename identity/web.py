"""Hosted pages: the machinery (forms, CSRF, sessions, rendering) and the sign-in pages.

Each request is one threadpool hop and one transaction (``_transact``). Every POST form is
checked against the CSRF token of its session before anything else happens; every POST
answers with 303 or a page, never 307.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from identity import audit, recovery, repositories, sessions
from identity.accounts import (
    AccountError,
    Accounts,
    EmailNotVerified,
    InvalidInput,
    Throttled,
)
from identity.audit import RequestContext
from identity.models import BrowserSession, User
from identity.security import request_context

log = logging.getLogger("identity.web")

TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "templates"
templates = Jinja2Templates(directory=str(TEMPLATES_DIR))
_NO_STORE = {"Cache-Control": "no-store"}


class CsrfRejected(Exception):
    """The form's CSRF token is missing or not the one bound to the session."""


@dataclass
class Visit:
    """What one page request sees: its database session, browser session and user."""

    db: Session
    browser: BrowserSession | None
    user: User | None
    context: RequestContext
    new_cookie: str | None = None
    drop_cookie: bool = False

    def ensure_browser(self, accounts: Accounts) -> BrowserSession:
        """An anonymous session for the CSRF token of a form, if there is none yet."""
        if self.browser is None:
            self.new_cookie, self.browser = sessions.start_anonymous(
                self.db, accounts.now(), self.context
            )
        return self.browser

    def pop_notice(self) -> str | None:
        if self.browser is None or "notice" not in self.browser.data:
            return None
        data = dict(self.browser.data)
        notice = data.pop("notice")
        self.browser.data = data
        return str(notice)

    def flash(self, notice: str) -> None:
        if self.browser is not None:
            self.browser.data = {**self.browser.data, "notice": notice}


def accounts_of(request: Request) -> Accounts:
    accounts: Accounts = request.app.state.accounts
    return accounts


def policy_of(request: Request) -> sessions.SessionPolicy:
    policy: sessions.SessionPolicy = request.app.state.session_policy
    return policy


def safe_next(value: str | None, default: str = "/account") -> str:
    """Same-origin paths only: no scheme, no host, no protocol-relative or backslash tricks."""
    if not value or len(value) > 2000 or not value.startswith("/") or value.startswith("//"):
        return default
    if "\\" in value or any(ord(c) < 32 for c in value):
        return default
    parts = urlsplit(value)
    if parts.scheme or parts.netloc:
        return default
    return value


async def read_form(request: Request) -> dict[str, str]:
    """The submitted fields (the last value of each); an unreadable body is an empty form."""
    try:
        form = await request.form(max_files=0, max_fields=50)
    except Exception as error:
        if getattr(error, "status_code", None) == 413:
            raise
        return {}
    return {key: value for key, value in form.multi_items() if isinstance(value, str)}


def render(
    request: Request,
    visit: Visit | None,
    template: str,
    status: int = 200,
    **context: Any,
) -> Response:
    """Render a page with the common context (CSRF token, user, notice, errors, values)."""
    base: dict[str, Any] = {
        "csrf_token": visit.browser.csrf_token if visit and visit.browser else "",
        "current_user": visit.user if visit else None,
        "notice": visit.pop_notice() if visit else None,
        "errors": {},
        "values": {},
    }
    base.update(context)
    response = templates.TemplateResponse(request, template, base, status_code=status)
    response.headers.update(_NO_STORE)
    return response


def message(
    request: Request,
    visit: Visit | None,
    heading: str,
    text: str,
    status: int = 200,
    link: tuple[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    """The friendly one-message page, for errors and confirmations alike."""
    extra = {"link_href": link[0], "link_text": link[1]} if link else {}
    response = render(
        request, visit, "message.html", status, heading=heading, message=text, **extra
    )
    response.headers.update(headers or {})
    return response


def redirect(location: str) -> Response:
    return RedirectResponse(location, status_code=303, headers=_NO_STORE)


async def transact(
    request: Request,
    work: Callable[[Visit], Response],
    *,
    form: dict[str, str] | None = None,
) -> Response:
    """Run ``work`` in the threadpool within one transaction, with the browser session
    loaded; for a form, check CSRF first. Sets or clears the session cookie afterwards."""
    accounts, policy = accounts_of(request), policy_of(request)
    context = request_context(request, accounts.settings.trusted_proxies)
    cookie = request.cookies.get(policy.cookie_name)

    def run() -> tuple[Response, Visit | None]:
        visit: Visit | None = None
        try:
            with accounts.database.transaction() as db:
                browser = sessions.load(db, cookie, accounts.now(), policy)
                user = None
                if browser is not None and browser.user_id is not None:
                    user = repositories.get_user(db, browser.user_id)
                    if user is None or not user.is_active:
                        sessions.end(db, browser)
                        browser, user = None, None
                visit = Visit(db, browser, user, context)
                if form is not None and not sessions.csrf_matches(browser, form.get("csrf_token")):
                    raise CsrfRejected()
                return work(visit), visit
        except CsrfRejected:
            response = message(
                request,
                None,
                "This form expired",
                "For your safety the form could not be sent. "
                "Go back, reload the page and try again.",
                status=403,
            )
            return response, None
        except Throttled as error:
            response = message(
                request,
                None,
                "Too many attempts",
                str(error),
                status=429,
                headers={"Retry-After": str(error.retry_after)},
            )
            return response, None

    response, visit = await run_in_threadpool(run)
    if visit is not None and visit.new_cookie is not None:
        response.set_cookie(
            policy.cookie_name,
            visit.new_cookie,
            max_age=int(policy.absolute.total_seconds()),
            **policy.cookie_options(),
        )
    elif visit is not None and visit.drop_cookie:
        response.delete_cookie(policy.cookie_name, **policy.cookie_options())
    return response


def form_page(template: str, **extra: Any) -> Callable[[Request, Visit], Response]:
    """A GET handler that shows a form (with a CSRF token, making a session if needed)."""

    def show(request: Request, visit: Visit) -> Response:
        visit.ensure_browser(accounts_of(request))
        values = {k: v for k, v in request.query_params.items() if k in {"email", "next"}}
        return render(request, visit, template, values=values, **extra)

    return show


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
            accounts.verify_code(visit.db, email, form.get("code", ""), visit.context)
        except AccountError as error:
            return render(
                request,
                visit,
                "verify_email.html",
                400,
                email=email,
                errors={"code": str(error)},
                values={"email": email},
            )
        return message(
            request,
            visit,
            "Email verified",
            "Your email address is verified. You can sign in now.",
            link=("/login?email=" + quote(email), "Sign in"),
        )

    return await transact(request, by_code, form=form)


def confirm_page(
    request: Request, visit: Visit, token: str, heading: str, text: str, action: str, button: str
) -> Response:
    """What an emailed link opens: a button that POSTs the token (a GET changes nothing)."""
    visit.ensure_browser(accounts_of(request))
    return render(
        request,
        visit,
        "confirm_link.html",
        heading=heading,
        message=text,
        action=action,
        token=token[:200],
        button=button,
    )


async def confirm_verification(request: Request) -> Response:
    form = await read_form(request)
    accounts = accounts_of(request)

    def work(visit: Visit) -> Response:
        try:
            accounts.verify_link(visit.db, form.get("token", ""), visit.context)
        except AccountError as error:
            return message(
                request,
                visit,
                "This link doesn't work",
                str(error),
                400,
                link=("/verify-email", "Enter a code instead"),
            )
        return message(
            request,
            visit,
            "Email verified",
            "Your email address is verified. You can sign in now.",
            link=("/login", "Sign in"),
        )

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
        return redirect(safe_next(form.get("next")))

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


def page_routes() -> list[BaseRoute]:
    """The hosted pages (the account pages live in ``web_account``)."""
    from identity.web_account import account_routes

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
        *account_routes(),
        Mount("/static", StaticFiles(directory=str(TEMPLATES_DIR / "static")), name="static"),
    ]
