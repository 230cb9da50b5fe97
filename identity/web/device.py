"""The hosted /device page (RFC 8628 §3.3): a signed-in person types the code a device
shows, sees what it asks for, and allows or denies it."""

from __future__ import annotations

from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from identity import audit, repositories
from identity.accounts.errors import Throttled
from identity.models import BrowserSession, Client, DeviceAuthorization
from identity.protocol.device import display_user_code, normalise_user_code
from identity.protocol.scopes import describe_scopes
from identity.web.pages import Visit, accounts_of, message, read_form, redirect, render, transact
from identity.web.two_factor import second_factor_redirect

# Wrong codes are counted per IP on an existing limiter, under keys of their own.
_LIMITER = "verify.account"


def _login_redirect(raw_code: str) -> Response:
    """To the login page, and back to /device with the code the device gave."""
    target = "/device"
    code = normalise_user_code(raw_code)
    if code:
        target += "?user_code=" + display_user_code(code)
    return redirect("/login?next=" + quote(target, safe="/"))


def _lacks_second_factor(client: Client | None, browser: BrowserSession) -> bool:
    """The device's client wants two factors and this sign-in has not shown a second one."""
    return client is not None and client.require_mfa and "mfa" not in (browser.amr or [])


def _device_path(code: str) -> str:
    """This page again, with the code typed in, for after the second factor."""
    return "/device?user_code=" + display_user_code(code)


def _find_pending(request: Request, visit: Visit, raw_code: str) -> DeviceAuthorization | None:
    """The live, undecided authorization of a typed code; each miss counts against the IP."""
    accounts = accounts_of(request)
    key = f"device:{visit.context.ip or 'unknown'}"
    blocked = accounts.limiter.peek(_LIMITER, key)
    if not blocked.allowed:
        raise Throttled(blocked.retry_after)
    code = normalise_user_code(raw_code)
    row = (
        repositories.pending_device_authorization(visit.db, code, accounts.now()) if code else None
    )
    if row is None:
        accounts.limiter.hit(_LIMITER, key)
    return row


def _code_form(request: Request, visit: Visit, code: str, error: str | None = None) -> Response:
    errors = {"form": "Check the code", "user_code": error} if error else {}
    return render(
        request,
        visit,
        "device.html",
        400 if error else 200,
        errors=errors,
        values={"user_code": code[:32]},
    )


async def device_page(request: Request) -> Response:
    """GET: the code form (prefilled from ?user_code=). POST: the consent step for a code."""
    if request.method == "GET":
        code = request.query_params.get("user_code", "")

        def show(visit: Visit) -> Response:
            if visit.user is None:
                return _login_redirect(code)
            return _code_form(request, visit, code)

        return await transact(request, show)

    form = await read_form(request)
    typed = form.get("user_code", "")

    def consent(visit: Visit) -> Response:
        if visit.user is None:
            return _login_redirect(typed)
        row = _find_pending(request, visit, typed)
        if row is None:
            return _code_form(request, visit, typed, "This code is wrong or has expired.")
        client = repositories.get_client(visit.db, row.client_id)
        assert client is not None  # the row's foreign key cascades with the client
        if visit.browser is not None and _lacks_second_factor(client, visit.browser):
            return second_factor_redirect(visit, visit.user, _device_path(row.user_code))
        return render(
            request,
            visit,
            "device_consent.html",
            client_name=client.name,
            scopes=describe_scopes(row.scope),
            user_email=visit.user.email,
            user_code=display_user_code(row.user_code),
        )

    return await transact(request, consent, form=form)


async def device_decision(request: Request) -> Response:
    """POST /device/decision: allow or deny the device; the device learns it on its next poll."""
    form = await read_form(request)
    typed, decision = form.get("user_code", ""), form.get("decision", "")

    def decide(visit: Visit) -> Response:
        if visit.user is None or visit.browser is None:
            return _login_redirect(typed)
        if decision not in {"allow", "deny"}:
            return message(request, visit, "Choose Allow or Deny", "Go back and try again.", 400)
        accounts = accounts_of(request)
        now = accounts.now()
        row = None
        pending = _find_pending(request, visit, typed)
        if pending is not None and decision == "allow":
            client = repositories.get_client(visit.db, pending.client_id)
            if _lacks_second_factor(client, visit.browser):
                return second_factor_redirect(visit, visit.user, _device_path(pending.user_code))
        if pending is not None:
            row = repositories.decide_device_authorization(
                visit.db,
                normalise_user_code(typed),
                now,
                status="approved" if decision == "allow" else "denied",
                user_id=visit.user.id,
                # The device's tokens (and ID token) carry this browser session's sign-in.
                auth_time=visit.browser.auth_time or now,
                amr=list(visit.browser.amr or ["pwd"]),
                idp=visit.browser.idp,
                session_id=visit.browser.id,
            )
        if row is None:
            return message(
                request,
                visit,
                "This code doesn't work",
                "The code is wrong, has expired or was already used. Start again on your device.",
                400,
                link=("/device", "Enter a code"),
            )
        audit.record(
            visit.db,
            "device.approved" if decision == "allow" else "device.denied",
            context=visit.context,
            actor=str(visit.user.id),
            subject=str(visit.user.id),
            client_id=row.client_id,
            detail={"scope": row.scope},
        )
        if decision == "allow":
            return message(request, visit, "Device connected", "You can return to your device.")
        return message(
            request,
            visit,
            "Access denied",
            "The device was not given access. You can return to your device.",
        )

    return await transact(request, decide, form=form)


def device_routes() -> list[BaseRoute]:
    return [
        Route("/device", device_page, methods=["GET", "POST"]),
        Route("/device/decision", device_decision, methods=["POST"]),
    ]
