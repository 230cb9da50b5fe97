"""What every admin console page is made of: the ``Console`` a page works with (the request,
the visit, the administrator who is the actor of every change), the console's sections, and
the declarations of its pages and forms, which ``admin.admin_routes`` puts behind the guard.

The page modules (``admin_users``, ``admin_clients``, ``admin_audit``, ``admin_webhooks``)
import this module, and ``admin`` imports them: the pages never import the guard's module."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session, SessionTransaction
from starlette.requests import Request
from starlette.responses import Response

from identity import audit
from identity.accounts.errors import InvalidInput
from identity.accounts.service import Accounts
from identity.audit import RequestContext
from identity.models import User
from identity.web.pages import Visit, accounts_of, form_errors, message, redirect, render


@dataclass(frozen=True)
class Section:
    """One part of the console: its address, its name in the navigation and on the
    overview, and a line saying what it is for."""

    path: str
    title: str
    summary: str


# The console's navigation and overview read this list: a new part (webhooks) is one more
# entry here, and its pages in ``admin.admin_routes``.
SECTIONS: list[Section] = [
    Section(
        "/admin/users",
        "Users",
        "Find accounts by email; disable, delete, reset passwords and second factors; roles.",
    ),
    Section(
        "/admin/clients",
        "Clients",
        "The apps that get tokens: redirect URIs, scopes, grants; rotate their secrets.",
    ),
    Section(
        "/admin/keys",
        "Signing keys",
        "The keys that sign tokens, published in JWKS; rotate the signing key.",
    ),
    Section(
        "/admin/audit",
        "Audit trail",
        "Security events, filtered by user, client, type and time.",
    ),
    Section(
        "/admin/webhooks",
        "Webhooks",
        "Endpoints that receive signed events; their deliveries, redelivery, secrets.",
    ),
]


_SHOW_ONCE = "admin_secret:"  # the session data key of a secret to show once, + its kind
_SECRET_SHOWN_FOR = 600  # seconds: a secret not shown by then is dropped unseen


@dataclass
class Console:
    """One request of an administrator who passed the guard: the page's visit and the
    administrator, who is the actor of every change made here."""

    request: Request
    visit: Visit
    admin: User

    @property
    def db(self) -> Session:
        return self.visit.db

    @property
    def actor(self) -> str:
        """The audit rows' actor: the administrator's user id."""
        return str(self.admin.id)

    @property
    def context(self) -> RequestContext:
        return self.visit.context

    @property
    def accounts(self) -> Accounts:
        return accounts_of(self.request)

    def page(self, template: str, status: int = 200, **context: Any) -> Response:
        """An ``admin/`` page, with the console's navigation."""
        path = self.request.url.path
        current = next((s.path for s in SECTIONS if path.startswith(s.path)), "/admin")
        return render(
            self.request,
            self.visit,
            template,
            status,
            sections=SECTIONS,
            current_section=current,
            **context,
        )

    def record_read(
        self,
        type: str,
        *,
        subject: str | None = None,
        client_id: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        """Audit a look at people's or clients' data (who looked at whom is a security
        event), with the admin API's event types."""
        audit.record(
            self.db,
            type,
            context=self.context,
            actor=self.actor,
            subject=subject,
            client_id=client_id,
            detail=detail,
        )

    def savepoint(self) -> SessionTransaction:
        """A change that may be refused: undone alone when it raises, so the page that says
        why is still written (and the refused change never is)."""
        return self.db.begin_nested()

    def done(self, notice: str, location: str) -> Response:
        """After a change: its confirmation on the next page, and 303 there."""
        self.visit.flash(notice)
        return redirect(location)

    def keep_secret(self, kind: str, owner: str, secret: str) -> None:
        """Keep a secret just made for ``owner`` (e.g. an endpoint), sealed in the
        administrator's server-side session, for ``take_secret`` on the next page."""
        browser = self.visit.browser
        assert browser is not None  # the guard let only signed-in sessions through
        record = {
            "owner": owner,
            "sealed": self.accounts.secret_box.seal(secret),
            "at": self.accounts.now().timestamp(),
        }
        browser.data = {**browser.data, _SHOW_ONCE + kind: record}

    def take_secret(self, kind: str, owner: str) -> str | None:
        """The secret kept for ``owner``'s page, taken out so that it shows once; none when
        it was kept for another page or too long ago (then it is dropped unseen)."""
        browser, key = self.visit.browser, _SHOW_ONCE + kind
        record = browser.data.get(key) if browser is not None else None
        if browser is None or not isinstance(record, dict) or record.get("owner") != owner:
            return None
        browser.data = {k: v for k, v in browser.data.items() if k != key}
        if self.accounts.now().timestamp() - float(record.get("at", 0)) > _SECRET_SHOWN_FOR:
            return None
        return self.accounts.secret_box.open(str(record.get("sealed", "")))

    def not_found(self, text: str, back: str) -> Response:
        return message(
            self.request, self.visit, "Not found", text, 404, link=(back, "Back to the console")
        )

    def invalid(self, template: str, error: InvalidInput, **context: Any) -> Response:
        """The form again, 400, each refused field's message beside it."""
        return self.page(template, 400, errors=form_errors(error), **context)


@dataclass(frozen=True)
class ConsolePage:
    """A GET page of the console at ``path``."""

    path: str
    show: Callable[[Console], Response]


@dataclass(frozen=True)
class ConsoleForm:
    """A POST form of the console at ``path``. ``back`` names the page the form is on,
    where a visitor the guard turns away returns once they may."""

    path: str
    submit: Callable[[Console, dict[str, str]], Response]
    back: Callable[[Request], str]


ConsoleRoute = ConsolePage | ConsoleForm
