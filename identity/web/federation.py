"""The pages of signing in with another provider: the start (a redirect to the upstream), its
callback, and unlinking from /account; the page that links an account that exists is
``web.federation_link``'s. The rules (what links, what is created, amr) are
``accounts.federation``'s; the upstream protocol is ``identity.upstream``'s.

What a sign-in keeps between requests lives in the browser's server-side session data: the
upstream's state, nonce and PKCE verifier, a link waiting for its proof, and a sign-in
waiting for identity's own second step.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from identity.accounts import federation, sessions
from identity.accounts.errors import InvalidInput
from identity.models import User
from identity.upstream import UpstreamClient
from identity.upstream_http import UpstreamError
from identity.upstream_providers import ProviderConfig, UpstreamProviders, redirect_uri
from identity.web.authorize import pending_resume_path
from identity.web.pages import (
    Visit,
    accounts_of,
    message,
    policy_of,
    read_form,
    redirect,
    render,
    safe_next,
    transact,
)

LINK_PAGE = "/login/with/link"
SECOND_STEP = "/login/two-factor"
# Sign-ins started at upstreams and not yet back: the newest few, each at most 10 minutes.
_STARTED = "upstream"
_MAX_STARTED = 5
# A link waiting for the proof of the local account (its password, then its second factor).
_WAITING = "federation"
_WAIT_SECONDS = 600


def _providers(request: Request) -> UpstreamProviders:
    providers: UpstreamProviders = request.app.state.providers
    return providers


def enabled_provider(request: Request, visit: Visit, name: str) -> ProviderConfig | None:
    """The provider ``name`` names, if there is one and it is enabled."""
    provider = _providers(request).get(visit.db, name[:40])
    return provider if provider is not None and provider.enabled else None


def _dead_end(request: Request, visit: Visit, heading: str, text: str, status: int) -> Response:
    return message(request, visit, heading, text, status, link=("/login", "Back to sign in"))


def _unavailable(request: Request, visit: Visit) -> Response:
    text = "There is no such provider to sign in with here. Sign in another way."
    return _dead_end(request, visit, "This sign-in option is not available", text, 404)


def expired(request: Request, visit: Visit) -> Response:
    """The page of a sign-in this browser did not start, or started too long ago."""
    text = "This sign-in expired or was not started in this browser. Please start again."
    return _dead_end(request, visit, "This sign-in expired", text, 400)


def now_seconds(request: Request) -> float:
    """The accounts' clock, in seconds: what the waiting records are timed with."""
    return accounts_of(request).now().timestamp()


# -- the start and the callback ----------------------------------------------------------------


async def start(request: Request) -> Response:
    """GET /login/with/{name}: remember the sign-in in this browser, then off to the upstream."""
    name = request.path_params["name"]
    next_path = safe_next(request.query_params.get("next"), "")
    accounts = accounts_of(request)

    def work(visit: Visit) -> Response:
        provider = enabled_provider(request, visit, name)
        if provider is None:
            return _unavailable(request, visit)
        client = UpstreamClient(accounts.settings)
        try:
            url, kept = client.start(
                provider, redirect_uri(accounts.settings.issuer, provider.name)
            )
        except UpstreamError as error:
            federation.record_upstream_error(visit.db, name, error.reason, visit.context)
            return _upstream_failed(request, visit, error, 503)
        finally:
            client.close()
        browser = visit.ensure_browser(accounts)
        now = now_seconds(request)
        started = {
            state: entry
            for state, entry in dict(browser.data.get(_STARTED, {})).items()
            if now - float(entry.get("at", 0)) <= _WAIT_SECONDS
        }
        while len(started) >= _MAX_STARTED:  # oldest first: dicts keep insertion order
            started.pop(next(iter(started)))
        started[str(kept["state"])] = {"kept": kept, "next": next_path, "at": now}
        browser.data = {**browser.data, _STARTED: started}
        return redirect(url)

    return await transact(request, work)


def _started(visit: Visit, state: str, now: float) -> dict[str, Any] | None:
    """The sign-in ``state`` names, if this browser started it less than 10 minutes ago."""
    entry = visit.browser.data.get(_STARTED, {}).get(state) if visit.browser and state else None
    if not isinstance(entry, dict) or now - float(entry.get("at", 0)) > _WAIT_SECONDS:
        return None
    return entry


def _forget_started(visit: Visit, state: str) -> None:
    if visit.browser is not None and state in visit.browser.data.get(_STARTED, {}):
        started = {k: v for k, v in visit.browser.data[_STARTED].items() if k != state}
        visit.browser.data = {**visit.browser.data, _STARTED: started}


def _upstream_failed(
    request: Request, visit: Visit, error: UpstreamError, status: int = 400
) -> Response:
    # A provider that is down is a dependency that is down (503); the rest is this sign-in's.
    status = 503 if error.reason == "unreachable" else status
    return _dead_end(request, visit, "We couldn't sign you in", str(error), status)


async def callback(request: Request) -> Response:
    """GET /login/with/{name}/callback: check the upstream's answer, then sign in, link or
    refuse (``federation.resolve``)."""
    name = request.path_params["name"]
    query = dict(request.query_params)
    accounts = accounts_of(request)

    def work(visit: Visit) -> Response:
        state = query.get("state", "")
        entry = _started(visit, state, now_seconds(request))
        provider = enabled_provider(request, visit, name)
        # Nothing is written before the upstream's round trips: on SQLite the first write
        # would hold the one write lock through them.
        try:
            if entry is None or entry["kept"].get("provider") != name:
                return expired(request, visit)
            if provider is None:
                return _unavailable(request, visit)
            client = UpstreamClient(accounts.settings)
            try:
                issuer = accounts.settings.issuer
                kept = entry["kept"]
                upstream = client.finish(provider, redirect_uri(issuer, name), query, kept)
            finally:
                client.close()
        except UpstreamError as error:
            federation.record_upstream_error(visit.db, name, error.reason, visit.context)
            return _upstream_failed(request, visit, error)
        finally:
            _forget_started(visit, state)  # a callback works once, whatever it answered
        outcome = federation.resolve(accounts, visit.db, provider, upstream, visit.context)
        next_path = str(entry.get("next") or "")
        if isinstance(outcome, federation.Refused):
            return _refused(request, visit, provider, outcome, next_path)
        if isinstance(outcome, federation.NeedsProof):
            keep_waiting(visit, _record_of(outcome, next_path, now_seconds(request)))
            return redirect(LINK_PAGE)
        user = outcome.user
        if outcome.needs_second_factor:  # identity's own second step first
            target = safe_next(next_path, pending_resume_path(visit) or "/account")
            await_second_factor(request, visit, user, provider, outcome.amr, target)
            return redirect(SECOND_STEP)
        return signed_in(request, visit, user, provider, outcome.amr, next_path)

    return await transact(request, work)


def signed_in(
    request: Request,
    visit: Visit,
    user: User,
    provider: ProviderConfig,
    amr: list[str],
    next_path: str,
) -> Response:
    """Sign ``user`` in to this browser through ``provider``, then go on to ``next_path``."""
    # A sign-in started by an app goes back to it (as the login form does).
    target = safe_next(next_path, pending_resume_path(visit) or "/account")
    visit.new_cookie, visit.browser = sessions.start_authenticated(
        visit.db,
        visit.browser,
        user.id,
        accounts_of(request).now(),
        policy_of(request),
        visit.context,
        amr,
        idp=provider.name,
    )
    visit.user = user
    return redirect(target)


def await_second_factor(
    request: Request,
    visit: Visit,
    user: User,
    provider: ProviderConfig,
    amr: list[str],
    next_path: str,
) -> None:
    """Leave the sign-in waiting for identity's own second step, which then goes to
    ``next_path``."""
    # The second step's pages finish the sign-in, keeping its provider, then go to next_path.
    browser = visit.ensure_browser(accounts_of(request))
    now = accounts_of(request).now()
    sessions.await_second_factor(browser, user.id, now, amr, next_path, idp=provider.name)


def _refused(
    request: Request,
    visit: Visit,
    provider: ProviderConfig,
    refused: federation.Refused,
    next_path: str,
) -> Response:
    if refused.reason == "disabled":
        text = "This account can't be used to sign in."
        return _dead_end(request, visit, "You can't sign in with this account", text, 403)
    others = [p for p in _providers(request).enabled(visit.db) if p.name != provider.name]
    return render(
        request,
        visit,
        "federation_unverified.html",
        403,
        provider_title=federation.provider_title(provider.label),
        providers=[{"name": p.name, "label": p.label} for p in others],
        next=next_path,
    )


# -- a sign-in waiting for a proof or for the second step ------------------------------------


def _record_of(proof: federation.NeedsProof, next_path: str, now: float) -> dict[str, Any]:
    """What waits in the browser: the upstream identity to link once the account is proven,
    and where the sign-in was going."""
    return {**proof.as_data(), "next": next_path, "at": now}


def keep_waiting(visit: Visit, record: dict[str, Any]) -> None:
    """Keep ``record`` (``_record_of``'s) in this browser until the account is proven."""
    assert visit.browser is not None  # the callback found its state in it
    visit.browser.data = {**visit.browser.data, _WAITING: record}


def waiting(visit: Visit, now: float) -> dict[str, Any] | None:
    """The link waiting in this browser, if it is less than 10 minutes old."""
    record = visit.browser.data.get(_WAITING) if visit.browser is not None else None
    if not isinstance(record, dict) or now - float(record.get("at", 0)) > _WAIT_SECONDS:
        return None
    return record


def forget_waiting(visit: Visit) -> None:
    """Drop the link waiting in this browser: it is done, or has failed."""
    if visit.browser is not None:
        visit.browser.data = {k: v for k, v in visit.browser.data.items() if k != _WAITING}


# -- unlinking, from /account ---------------------------------------------------------------


async def unlink(request: Request) -> Response:
    """POST /account/providers/{name}/unlink: remove a link while another way in remains."""
    form = await read_form(request)
    name = request.path_params["name"][:40]

    def work(visit: Visit) -> Response:
        if visit.user is None:
            return redirect("/login?" + urlencode({"next": "/account"}))
        try:
            federation.unlink(accounts_of(request), visit.db, visit.user, name, visit.context)
        except (LookupError, InvalidInput) as error:
            back = ("/account", "Back to your account")
            if isinstance(error, InvalidInput):
                heading = "This is your only way to sign in"
                return message(request, visit, heading, str(error), 400, link=back)
            text = "Your account is not linked to that provider."
            return message(request, visit, "Not found", text, 404, link=back)
        visit.flash("The provider is unlinked: it no longer signs you in to this account.")
        return redirect("/account")

    return await transact(request, work, form=form)


def federation_routes() -> list[BaseRoute]:
    """The pages of signing in with another provider (after ``federation_link_routes``)."""
    return [
        Route("/login/with/{name}", start, methods=["GET"]),
        Route("/login/with/{name}/callback", callback, methods=["GET"]),
        Route("/account/providers/{name}/unlink", unlink, methods=["POST"]),
    ]
