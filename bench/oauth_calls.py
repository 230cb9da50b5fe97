"""Single requests before a run: get the tokens a scenario needs, and check that the
scenario's request really succeeds (so it never measures a cheap refusal)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlencode

from bench.lua import basic_auth
from bench.provision import USER_SCOPE, Client, User


def _call(request: urllib.request.Request) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            data: dict[str, Any] = json.load(response)
    except urllib.error.HTTPError as error:
        body = error.read().decode(errors="replace")[:500]
        raise RuntimeError(f"{request.full_url} answered {error.code}: {body}") from None
    return data


def post_form(base: str, path: str, form: dict[str, str], client: Client) -> dict[str, Any]:
    request = urllib.request.Request(  # noqa: S310
        base + path,
        data=urlencode(form).encode(),
        headers={
            "Authorization": basic_auth(client.client_id, client.client_secret),
            "Content-Type": "application/x-www-form-urlencoded",
        },
    )
    return _call(request)


def service_token(base: str, client: Client) -> str:
    form = {"grant_type": "client_credentials", "scope": "read"}
    token: str = post_form(base, "/oauth2/token", form, client)["access_token"]
    return token


def login_form(user: User, scope: str) -> dict[str, str]:
    return {
        "grant_type": "password",
        "username": user.email,
        "password": user.password,
        "scope": scope,
    }


def login(base: str, app: Client, user: User, scope: str = USER_SCOPE) -> dict[str, Any]:
    """A password-grant login; the token response, checked to hold what ``scope`` gives."""
    answer = post_form(base, "/oauth2/token", login_form(user, scope), app)
    wanted = ["access_token", *(["refresh_token"] if "offline_access" in scope else [])]
    missing = [name for name in wanted if name not in answer]
    if missing:
        raise RuntimeError(f"login of {user.email} answered without {missing}: {answer}")
    return answer


def check_introspection(base: str, client: Client, token: str) -> None:
    """The introspection scenario must measure an active token, not a cheap refusal."""
    form = {"token": token, "token_type_hint": "access_token"}
    answer = post_form(base, "/oauth2/introspect", form, client)
    if answer.get("active") is not True:
        raise RuntimeError(f"introspection of the pre-issued token answered {answer}")


def check_userinfo(base: str, token: str, user: User) -> None:
    """The userinfo scenario must answer 200 with the user's own ``sub``."""
    request = urllib.request.Request(  # noqa: S310
        base + "/oauth2/userinfo", headers={"Authorization": f"Bearer {token}"}
    )
    answer = _call(request)
    if answer.get("sub") != user.id:
        raise RuntimeError(f"userinfo answered {answer}, not the sub {user.id}")


def check_refresh(base: str, app: Client, refresh_token: str) -> None:
    """One token of the pool, spent here (it is not in the files wrk reads): a rotation
    must answer 200 with a new refresh token."""
    form = {"grant_type": "refresh_token", "refresh_token": refresh_token}
    answer = post_form(base, "/oauth2/token", form, app)
    if not answer.get("refresh_token") or answer["refresh_token"] == refresh_token:
        raise RuntimeError(f"a refresh answered without a new refresh token: {answer}")
