"""The signed-in pages: /account and the forms on it."""

from __future__ import annotations

from collections.abc import Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from identity.accounts import factors, federation, passkeys, profile
from identity.accounts.credential_events import Current
from identity.accounts.errors import AccountError, InvalidInput
from identity.protocol.scopes import describe_scopes
from identity.web.pages import (
    Visit,
    accounts_of,
    confirm_page,
    form_errors,
    message,
    read_form,
    redirect,
    render,
    transact,
)


def _signed_in(request: Request, work: Callable[[Visit], Response]) -> Callable[[Visit], Response]:
    """Send anonymous visitors to the login page, and back here afterwards."""

    def guarded(visit: Visit) -> Response:
        if visit.user is None:
            return redirect("/login?next=" + request.url.path)
        return work(visit)

    return guarded


def _account_page(request: Request, visit: Visit, status: int = 200, **context: object) -> Response:
    accounts = accounts_of(request)
    assert visit.user is not None
    consents = profile.list_consents(visit.db, visit.user)
    return render(
        request,
        visit,
        "account.html",
        status,
        sessions=profile.list_sessions(accounts, visit.db, visit.user, visit.browser),
        consents=consents,
        # In the words the consent page asked with, never raw scope names.
        consent_scopes={view.client_id: describe_scopes(view.scope) for view in consents},
        pending_email=profile.pending_email(accounts, visit.db, visit.user),
        two_factor=factors.summary(visit.db, visit.user),
        passkey_list=passkeys.list_passkeys(visit.db, visit.user),
        provider_links=federation.links(visit.db, visit.user),
        **context,
    )


async def account(request: Request) -> Response:
    return await transact(request, _signed_in(request, lambda visit: _account_page(request, visit)))


def _account_form(
    change: Callable[[Request, Visit, dict[str, str]], str | Response],
) -> Callable[[Request], object]:
    """A POST on the account page: CSRF, signed in, then 303 back with a notice, or the
    page again with the field errors."""

    async def endpoint(request: Request) -> Response:
        form = await read_form(request)

        def work(visit: Visit) -> Response:
            try:
                outcome = change(request, visit, form)
            except InvalidInput as error:
                # Only the sent form's own fields: the others keep showing the account's.
                values = {k: form[k] for k in ("name", "new_email") if k in form}
                errors = form_errors(error)
                return _account_page(request, visit, 400, errors=errors, values=values)
            if isinstance(outcome, Response):
                return outcome
            visit.flash(outcome)
            return redirect("/account")

        return await transact(request, _signed_in(request, work), form=form)

    return endpoint


def _name(request: Request, visit: Visit, form: dict[str, str]) -> str:
    assert visit.user is not None
    profile.change_name(visit.db, visit.user, form.get("name", ""), visit.context)
    return "Your name is saved."


def _password(request: Request, visit: Visit, form: dict[str, str]) -> str:
    assert visit.user is not None and visit.browser is not None
    profile.change_password(
        accounts_of(request),
        visit.db,
        visit.user,
        form.get("current_password", ""),
        form.get("new_password", ""),
        visit.context,
        keep=Current(browser_session_id=visit.browser.id),
    )
    return (
        "Your password is changed. Every other browser was signed out, and apps you had "
        "signed in to must sign in again."
    )


def _email(request: Request, visit: Visit, form: dict[str, str]) -> str:
    assert visit.user is not None
    email = profile.request_email_change(
        accounts_of(request),
        visit.db,
        visit.user,
        form.get("new_email", ""),
        form.get("email_password", ""),
        visit.context,
    )
    return f"We sent a confirmation link to {email}. Your email changes once you follow it."


def _cancel_email(request: Request, visit: Visit, form: dict[str, str]) -> str:
    assert visit.user is not None
    if profile.cancel_email_change(accounts_of(request), visit.db, visit.user, visit.context):
        return "The email change is cancelled: its link no longer works."
    return "There was no email change waiting."


def _revoke_all(request: Request, visit: Visit, form: dict[str, str]) -> Response:
    assert visit.user is not None
    profile.revoke_everything(accounts_of(request), visit.db, visit.user, visit.context)
    visit.drop_cookie, visit.browser, visit.user = True, None, None
    return message(
        request,
        visit,
        "Signed out everywhere",
        "Every browser and app was signed out.",
        link=("/login", "Sign in again"),
    )


async def revoke_session(request: Request) -> Response:
    form = await read_form(request)
    public_id = request.path_params["public_id"]

    def work(visit: Visit) -> Response:
        assert visit.user is not None
        try:
            profile.revoke_session(visit.db, visit.user, public_id, visit.context)
        except LookupError:
            return message(
                request,
                visit,
                "Not found",
                "That session does not exist.",
                404,
                link=("/account", "Back to your account"),
            )
        visit.flash("That session is signed out.")
        return redirect("/account")

    return await transact(request, _signed_in(request, work), form=form)


async def confirm_email_page(request: Request) -> Response:
    token = request.query_params.get("token", "")
    return await transact(
        request,
        lambda visit: confirm_page(
            request,
            visit,
            token,
            "Confirm your new email",
            "Confirm that this is your new email address for identity.",
            "/account/email/confirm",
            "Use this email",
        ),
    )


async def confirm_email(request: Request) -> Response:
    form = await read_form(request)
    accounts = accounts_of(request)

    def work(visit: Visit) -> Response:
        # The confirming browser keeps its session only when it is the account's own.
        own = visit.browser if visit.browser is not None and visit.user is not None else None
        keep = Current(browser_session_id=own.id) if own is not None else None
        try:
            user = profile.confirm_email_change(
                accounts, visit.db, form.get("token", ""), visit.context, keep=keep
            )
        except AccountError as error:
            return message(request, visit, "This link doesn't work", str(error), 400)
        if own is not None and own.user_id == user.id:
            visit.flash("Your new email address is confirmed.")
            return redirect("/account")
        if visit.browser is not None and visit.browser.user_id is not None:
            visit.drop_cookie = True
        visit.browser, visit.user = None, None
        return message(
            request,
            visit,
            "Email changed",
            "Your new email address is confirmed. Sign in with it from now on.",
            link=("/login", "Sign in"),
        )

    return await transact(request, work, form=form)


async def revoke_consent(request: Request) -> Response:
    form = await read_form(request)
    client_id = request.path_params["client_id"][:64]

    def work(visit: Visit) -> Response:
        assert visit.user is not None
        try:
            profile.revoke_consent(
                accounts_of(request), visit.db, visit.user, client_id, visit.context
            )
        except LookupError:
            return message(
                request,
                visit,
                "Not found",
                "That app has no access to remove.",
                404,
                link=("/account", "Back to your account"),
            )
        visit.flash("That app no longer has access to your account.")
        return redirect("/account")

    return await transact(request, _signed_in(request, work), form=form)


def account_routes() -> list[BaseRoute]:
    return [
        Route("/account", account, methods=["GET"]),
        Route("/account/name", _account_form(_name), methods=["POST"]),  # type: ignore[arg-type]
        Route("/account/password", _account_form(_password), methods=["POST"]),  # type: ignore[arg-type]
        Route("/account/email", _account_form(_email), methods=["POST"]),  # type: ignore[arg-type]
        Route("/account/email/cancel", _account_form(_cancel_email), methods=["POST"]),  # type: ignore[arg-type]
        Route("/account/email/confirm", confirm_email_page, methods=["GET"]),
        Route("/account/email/confirm", confirm_email, methods=["POST"]),
        Route("/account/sessions/revoke-all", _account_form(_revoke_all), methods=["POST"]),  # type: ignore[arg-type]
        Route("/account/sessions/{public_id}/revoke", revoke_session, methods=["POST"]),
        Route("/account/consents/{client_id}/revoke", revoke_consent, methods=["POST"]),
    ]
