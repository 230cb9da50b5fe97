"""The account's passkey pages: adding one (after a recent sign-in), renaming and removing.
The ceremonies themselves are the JSON endpoints of ``web.passkeys``; the rules are
``accounts.passkeys``'s."""

from __future__ import annotations

from collections.abc import Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from identity.accounts import passkeys
from identity.accounts.errors import InvalidInput
from identity.web.pages import Visit, accounts_of, read_form, redirect, render, transact
from identity.web.two_factor import is_recent, password_page, recently_signed_in

NEW_PASSKEY = "/account/passkeys/new"
_ADD = "add a passkey"


async def new_passkey(request: Request) -> Response:
    """GET: the page that adds a passkey, once the sign-in is recent (else the password
    first). POST: that password."""
    form = await read_form(request) if request.method == "POST" else None

    def work(visit: Visit) -> Response:
        if visit.user is None or visit.browser is None:
            return redirect(f"/login?next={NEW_PASSKEY}")
        if not passkeys.available(accounts_of(request).settings):
            return redirect("/account")
        if form is not None:
            return recently_signed_in(request, visit, form, NEW_PASSKEY, _ADD) or redirect(
                NEW_PASSKEY
            )
        if not is_recent(request, visit):
            return password_page(request, visit, NEW_PASSKEY, _ADD)
        return render(request, visit, "passkey_new.html")

    return await transact(request, work, form=form)


def _passkey_form(
    change: Callable[[Request, Visit, dict[str, str], int], Response],
) -> Callable[[Request], object]:
    async def endpoint(request: Request) -> Response:
        form = await read_form(request)
        raw = request.path_params.get("passkey_id", "")
        passkey_id = int(raw) if raw.isdigit() and len(raw) < 19 else -1

        def work(visit: Visit) -> Response:
            if visit.user is None or visit.browser is None:
                return redirect("/login?next=/account")
            return change(request, visit, form, passkey_id)

        return await transact(request, work, form=form)

    return endpoint


def _rename(request: Request, visit: Visit, form: dict[str, str], passkey_id: int) -> Response:
    assert visit.user is not None
    try:
        passkey = passkeys.rename_passkey(
            accounts_of(request),
            visit.db,
            visit.user,
            passkey_id,
            form.get("name", ""),
            visit.context,
        )
    except InvalidInput as error:
        visit.flash(" ".join(error.fields.values()))
        return redirect("/account#two-factor")
    visit.flash(f"The passkey is now called “{passkey.name}”.")
    return redirect("/account#two-factor")


def _remove(request: Request, visit: Visit, form: dict[str, str], passkey_id: int) -> Response:
    action = f"/account/passkeys/{passkey_id}/remove"
    asked = recently_signed_in(request, visit, form, action, "remove the passkey")
    if asked is not None:
        return asked
    assert visit.user is not None
    if passkeys.remove_passkey(
        accounts_of(request), visit.db, visit.user, passkey_id, visit.context
    ):
        visit.flash("The passkey is removed: it no longer signs you in.")
    else:
        visit.flash("That passkey is not on your account.")
    return redirect("/account#two-factor")


def passkey_page_routes() -> list[BaseRoute]:
    """Adding, renaming and removing the account's passkeys."""
    return [
        Route(NEW_PASSKEY, new_passkey, methods=["GET", "POST"]),
        Route("/account/passkeys/{passkey_id}/rename", _passkey_form(_rename), methods=["POST"]),  # type: ignore[arg-type]
        Route("/account/passkeys/{passkey_id}/remove", _passkey_form(_remove), methods=["POST"]),  # type: ignore[arg-type]
    ]
