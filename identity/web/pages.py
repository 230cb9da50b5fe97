"""Hosted pages: the machinery every page uses (forms, CSRF, sessions, rendering).

Each request is one threadpool hop and one transaction (``_transact``). Every POST form is
checked against the CSRF token of its session before anything else happens; every POST
answers with 303 or a page, never 307.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from identity import logs, rendering, repositories
from identity.accounts import passkeys, sessions
from identity.accounts.errors import InvalidInput, Throttled
from identity.accounts.service import Accounts
from identity.audit import RequestContext
from identity.lanes import Lanes, carries_password
from identity.models import BrowserSession, User
from identity.security import MalformedInput, request_context

log = logging.getLogger("identity.web")


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
    """The submitted fields (the last value of each); an unreadable body is an empty form,
    but an oversize one (413) or one holding NUL (400) is refused in the app's handler."""
    try:
        form = await request.form(max_files=0, max_fields=50)
    except Exception as error:
        if isinstance(error, MalformedInput) or getattr(error, "status_code", None) == 413:
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
    if visit is not None:
        context = {
            "csrf_token": visit.browser.csrf_token if visit.browser else "",
            "current_user": visit.user,
            "notice": visit.pop_notice(),
            # Off on an issuer at an IP address, where browsers refuse WebAuthn.
            "passkeys_on": passkeys.available(accounts_of(request).settings),
            **context,
        }
    return rendering.page(request, template, status, **context)


# Where recovery codes made by a step that answers JSON (a passkey's registration) are shown.
NEW_RECOVERY_CODES = "/account/two-factor/recovery-codes/new"
_CODES_TO_SHOW = "recovery_codes_to_show"


def show_recovery_codes_once(
    accounts: Accounts, browser: BrowserSession, codes: list[str], next_path: str
) -> None:
    """Keep new recovery codes in ``browser``'s server-side data, sealed, for the one page
    that shows them (``take_recovery_codes``)."""
    sealed = accounts.secret_box.seal(" ".join(codes))
    record = {"sealed": sealed, "next": next_path, "at": accounts.now().timestamp()}
    browser.data = {**browser.data, _CODES_TO_SHOW: record}


def take_recovery_codes(
    accounts: Accounts, browser: BrowserSession | None
) -> tuple[list[str], str] | None:
    """The codes ``show_recovery_codes_once`` kept (and where the person was going), taken
    out so they show once; None after ten minutes or when there are none."""
    record = browser.data.get(_CODES_TO_SHOW) if browser is not None else None
    if browser is None or not isinstance(record, dict):
        return None
    browser.data = {k: v for k, v in browser.data.items() if k != _CODES_TO_SHOW}
    if accounts.now().timestamp() - float(record.get("at", 0)) > 600:
        return None
    codes = accounts.secret_box.open(str(record.get("sealed", ""))).split()
    return codes, str(record.get("next") or "")


def form_errors(error: InvalidInput) -> dict[str, str]:
    """What a form page shows for refused fields: each message beside its field, and a
    summary on top linking to each (on a long page the field may be out of sight)."""
    return {"form": "Check what you typed", **error.fields}


def message(
    request: Request,
    visit: Visit | None,
    heading: str,
    text: str,
    status: int = 200,
    link: tuple[str, str] | None = None,
    headers: dict[str, str] | None = None,
    detail: str | None = None,
) -> Response:
    """The friendly one-message page, for errors and confirmations alike; ``detail`` is a
    small print line under the message (what an app's developers need to know)."""
    extra = {"link_href": link[0], "link_text": link[1]} if link else {}
    response = render(
        request,
        visit,
        "message.html",
        status,
        heading=heading,
        message=text,
        detail=detail,
        **extra,
    )
    response.headers.update(headers or {})
    return response


def redirect(location: str) -> Response:
    return RedirectResponse(location, status_code=303, headers=rendering.NO_STORE)


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
                user, ended = None, None
                if browser is not None and browser.user_id is not None:
                    user = repositories.get_user(db, browser.user_id)
                    if user is None or not user.is_active:
                        ended, browser, user = browser, None, None
                visit = Visit(db, browser, user, context)
                if user is not None:
                    logs.note(user_id=str(user.id))
                if form is not None and not sessions.csrf_matches(browser, form.get("csrf_token")):
                    raise CsrfRejected()
                response = work(visit)
                # Writes of the session's own upkeep come last: on SQLite the first write of
                # a transaction takes the one write lock, which a refusal's audit row (its own
                # transaction, inside ``work``) must not find taken.
                if ended is not None and visit.browser is None:
                    sessions.end(db, ended)  # a disabled or deleted user's session
                sessions.upkeep(db, cookie, accounts.now(), policy)
                return response, visit
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

    lanes: Lanes = request.app.state.lanes
    password = form is not None and carries_password(form)
    response, visit = await lanes.run(run, password=password)
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
