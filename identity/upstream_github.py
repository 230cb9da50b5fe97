"""Signing in with GitHub (github.com or a GitHub Enterprise Server), which speaks OAuth but
not OpenID Connect: no discovery and no ID token, so who signed in is read from its user API
with the access token, and the verified email from its emails list.

``identity.upstream.UpstreamClient`` starts every sign-in and checks the callback's state
first; it hands GitHub's callbacks to ``finish_github``. PKCE S256 is sent here too.
"""

from __future__ import annotations

from identity.upstream_http import (
    Callback,
    UpstreamError,
    UpstreamHttp,
    UpstreamIdentity,
    code_of,
    identity_from,
    json_object,
    json_value,
    ok_body,
)
from identity.upstream_providers import ProviderConfig

_GITHUB = "https://github.com"


def github_authorization_endpoint(provider: ProviderConfig) -> str:
    """Where GitHub (or an Enterprise Server at ``provider.issuer``) asks the person."""
    return f"{provider.issuer.rstrip('/')}/login/oauth/authorize"


def finish_github(http: UpstreamHttp, callback: Callback) -> UpstreamIdentity:
    """Redeem the code of a callback whose state is checked, and read who signed in."""
    provider, query = callback.provider, callback.query
    if "iss" in query and query["iss"] != provider.issuer:
        raise UpstreamError("issuer", "the iss parameter names another issuer")
    base = provider.issuer.rstrip("/")
    form = {
        "client_id": provider.client_id,
        "client_secret": provider.client_secret,
        "code": code_of(query),
        "redirect_uri": callback.redirect_uri,
        "code_verifier": callback.kept["verifier"],
    }
    status, body = http.request("POST", f"{base}/login/oauth/access_token", data=form)
    # GitHub answers a refused code with 200 and an "error" member.
    access_token = json_object(ok_body(status, body, "token")).get("access_token")
    if not isinstance(access_token, str) or not access_token:
        raise UpstreamError("token", "the token response has no access_token")
    api = "https://api.github.com" if base == _GITHUB else f"{base}/api/v3"
    headers = {
        "Authorization": f"Bearer {access_token}",
        "Accept": "application/vnd.github+json",
        "X-GitHub-Api-Version": "2022-11-28",
    }
    status, body = http.request("GET", f"{api}/user", headers=headers)
    user = json_object(ok_body(status, body, "token"))
    if not isinstance(user.get("id"), int) or isinstance(user["id"], bool):
        raise UpstreamError("invalid_response", "the GitHub user has no numeric id")
    status, body = http.request("GET", f"{api}/user/emails", headers=headers)
    if status >= 500:
        raise UpstreamError("unreachable", f"the emails answer was {status}")
    # Without the user:email scope the list is refused: then the person has no email here.
    emails = json_value(body) if status == 200 else []
    primary = (
        next((e for e in emails if isinstance(e, dict) and e.get("primary") is True), {})
        if isinstance(emails, list)
        else {}
    )
    claims = {
        "email": primary.get("email"),
        "email_verified": primary.get("verified"),
        "name": user.get("name") or user.get("login"),
    }
    return identity_from(str(user["id"]), claims)
