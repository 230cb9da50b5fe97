"""The page that links an upstream identity to an account that already has its email
(/login/with/link: the account's password, or a code mailed to it), and the return from
identity's second step that makes the link (/login/with/NAME/finish). The callback in
``web.federation`` leaves the link waiting in the browser; the proof's rules are
``accounts.federation_links``'s.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from identity import repositories
from identity.accounts import factors, federation, federation_links
from identity.accounts.errors import AccountError, Throttled
from identity.models import User
from identity.upstream_providers import ProviderConfig
from identity.web.authorize import pending_resume_path
from identity.web.federation import (
    LINK_PAGE,
    SECOND_STEP,
    await_second_factor,
    enabled_provider,
    expired,
    forget_waiting,
    keep_waiting,
    now_seconds,
    signed_in,
    waiting,
)
from identity.web.pages import (
    Visit,
    accounts_of,
    message,
    read_form,
    redirect,
    render,
    safe_next,
    transact,
)


async def link_page(request: Request) -> Response:
    """GET and POST /login/with/link: "An account with this email exists: enter its password
    to link the provider". Its second factor, when it has one, is asked on the second-step
    pages, which come back to ``finish``."""
    form = await read_form(request) if request.method == "POST" else None
    accounts = accounts_of(request)

    def work(visit: Visit) -> Response:
        record = waiting(visit, now_seconds(request))
        if record is None:
            return expired(request, visit)
        proof = federation.NeedsProof.from_data(record)
        provider = enabled_provider(request, visit, proof.provider)
        user = repositories.get_user(visit.db, proof.user_id)
        if provider is None or user is None:
            return expired(request, visit)
        page: dict[str, Any] = {
            "email": proof.email,
            "provider_title": federation.provider_title(provider.label),
            "has_password": user.password_hash is not None,
        }
        field = "password" if user.password_hash is not None else "code"
        if form is None:
            if field == "code" and not record.get("code_sent"):
                # No password to prove the account with: its mailbox does.
                federation_links.send_link_code(accounts, visit.db, proof, page["provider_title"])
                keep_waiting(visit, {**record, "code_sent": now_seconds(request)})
            return render(request, visit, "federation_link.html", **page)
        try:
            if field == "code":
                proven = federation_links.prove_code(
                    accounts, visit.db, proof, form.get("code", ""), visit.context
                )
            else:
                proven = federation_links.prove_password(
                    accounts, visit.db, proof, form.get("password", ""), visit.context
                )
        except AccountError as error:  # an unverified address too: its text says what to do
            if isinstance(error, Throttled):
                raise
            return render(
                request,
                visit,
                "federation_link.html",
                400,
                errors={"form": str(error), field: str(error)},
                **page,
            )
        if factors.has_second_factor(visit.db, proven):
            keep_waiting(visit, {**record, "proven_at": now_seconds(request)})
            finish_path = f"/login/with/{provider.name}/finish"
            amr = proof.amr_with_password() if field == "password" else list(proof.amr)
            await_second_factor(request, visit, proven, provider, amr, finish_path)
            return redirect(SECOND_STEP)
        failed = _link(request, visit, proven, provider, proof)
        # A mailed code proves the mailbox, not a method of signing in: the upstream's stand.
        amr = proof.amr_with_password() if field == "password" else list(proof.amr)
        next_path = str(record.get("next") or "")
        return failed or signed_in(request, visit, proven, provider, amr, next_path)

    return await transact(request, work, form=form)


def _link(
    request: Request,
    visit: Visit,
    user: User,
    provider: ProviderConfig,
    proof: federation.NeedsProof,
) -> Response | None:
    """Link the proven account; None when done, else the page that says why not."""
    forget_waiting(visit)
    try:
        federation_links.link_after_proof(
            accounts_of(request), visit.db, user, proof, provider, visit.context
        )
    except AccountError as error:
        return message(request, visit, "We couldn't link this account", str(error), 409)
    title = federation.provider_title(provider.label)
    visit.flash(f"{title} is now linked to your account: you can sign in with it from now on.")
    return None


async def finish(request: Request) -> Response:
    """GET /login/with/{name}/finish, where identity's second step sends a sign-in whose
    password proved an account to link: make the link. A GET, as the callback is: it acts
    only on what this browser's own sign-in left waiting, once that sign-in is complete."""
    name = request.path_params["name"]

    def work(visit: Visit) -> Response:
        record = waiting(visit, now_seconds(request))
        browser, user = visit.browser, visit.user
        if record is None or browser is None or user is None:
            return expired(request, visit) if user is None else redirect("/account")
        signed_in_at = browser.auth_time.timestamp() if browser.auth_time else 0.0
        # This browser passed the second step of this very sign-in, after its password.
        passed = (
            str(user.id) == record["user"]
            and record["provider"] == name == browser.idp
            and record.get("proven_at") is not None
            and signed_in_at >= float(record["proven_at"])
            and "mfa" in (browser.amr or [])
        )
        provider = enabled_provider(request, visit, name)
        if not passed or provider is None:
            return expired(request, visit)
        proof = federation.NeedsProof.from_data(record)
        failed = _link(request, visit, user, provider, proof)
        target = safe_next(str(record.get("next") or ""), pending_resume_path(visit) or "/account")
        return failed or redirect(target)

    return await transact(request, work)


def federation_link_routes() -> list[BaseRoute]:
    """The pages that link an account that exists; before ``federation_routes``, whose
    /login/with/{name} would take "link" for a provider."""
    return [
        Route(LINK_PAGE, link_page, methods=["GET", "POST"]),
        Route("/login/with/{name}/finish", finish, methods=["GET"]),
    ]
