"""What an upstream provider definition may be: the presets of well-known providers (GitHub,
Google, Microsoft, GitLab) and the rules every definition must meet (name, issuer, client id,
client secret, scope, label), with ``ProviderError`` saying which rule one broke.

``identity.upstream_providers`` applies them when an operator adds or changes a provider;
nothing here reads or writes the database.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

KINDS = ("oidc", "github")
# The name is a path segment of the callback URL and is typed on command lines: no leading
# dash, which argparse would read as an option.
_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")
# RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
_SCOPE_TOKEN = re.compile(r"^[\x21\x23-\x5B\x5D-\x7E]+$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
DEFAULT_SCOPE = "openid email profile"
_MAX_ISSUER = 500  # the column's length
_MAX_SECRET = 4096


class ProviderError(ValueError):
    """A provider definition identity refuses; the message says which rule it broke."""


@dataclass(frozen=True)
class Preset:
    """What a well-known provider's preset fills in."""

    kind: str
    issuer: str
    scope: str
    label: str


PRESETS: dict[str, Preset] = {
    "github": Preset(
        "github", "https://github.com", "read:user user:email", "Continue with GitHub"
    ),
    "google": Preset("oidc", "https://accounts.google.com", DEFAULT_SCOPE, "Continue with Google"),
    "microsoft": Preset(
        "oidc",
        "https://login.microsoftonline.com/common/v2.0",
        DEFAULT_SCOPE,
        "Continue with Microsoft",
    ),
    "gitlab": Preset("oidc", "https://gitlab.com", DEFAULT_SCOPE, "Continue with GitLab"),
}

# /login/with/link is the page that links an existing account: no provider may be called so.
_RESERVED_NAMES = frozenset({"link"})


def checked_name(name: str) -> str:
    """``name`` when it may name a provider; ProviderError otherwise."""
    if not _NAME.match(name):
        raise ProviderError(
            f"provider name {name!r} must be 1 to 40 lower-case letters, digits and dashes, "
            "not starting with a dash"
        )
    if name in _RESERVED_NAMES:
        raise ProviderError(f"provider name {name!r} is reserved")
    return name


def checked_issuer(issuer: str, insecure_http: bool) -> str:
    """``issuer`` when it is an https URL (http too with IDENTITY_INSECURE_HTTP) that an ID
    token's ``iss`` can equal; ProviderError otherwise."""
    parts = urlsplit(issuer)
    allowed = ("https", "http") if insecure_http else ("https",)
    if parts.scheme not in allowed:
        if parts.scheme == "http":
            raise ProviderError(
                f"issuer {issuer!r} is plain http; use https, "
                "or set IDENTITY_INSECURE_HTTP=1 for development"
            )
        raise ProviderError(f"issuer {issuer!r} must be an https URL")
    if not parts.hostname or parts.username is not None or parts.password is not None:
        raise ProviderError(f"issuer {issuer!r} must name a host, without credentials")
    if "?" in issuer or "#" in issuer or issuer.endswith("/"):
        raise ProviderError(f"issuer {issuer!r} must have no query, fragment or trailing slash")
    if len(issuer) > _MAX_ISSUER or _CONTROL.search(issuer) or " " in issuer:
        raise ProviderError(f"issuer {issuer!r} is not a URL identity accepts")
    return issuer


def checked_client_id(client_id: str) -> str:
    """``client_id`` when it is 1 to 255 characters without spaces or controls."""
    if not client_id or len(client_id) > 255 or any(c.isspace() for c in client_id):
        raise ProviderError("the client id must be 1 to 255 characters without spaces")
    if _CONTROL.search(client_id):
        raise ProviderError("the client id must not hold control characters")
    return client_id


def checked_secret(secret: str) -> str:
    """``secret`` when it is 1 to 4096 characters without controls."""
    # The message never quotes the value: it is a secret, and errors reach terminals and logs.
    if not secret or len(secret) > _MAX_SECRET or _CONTROL.search(secret):
        raise ProviderError(
            f"the client secret must be 1 to {_MAX_SECRET} characters without control characters"
        )
    return secret


def checked_scope(scope: str, kind: str) -> str:
    """``scope`` without repeats when its tokens are RFC 6749's and an OpenID Connect
    provider's include openid."""
    tokens = list(dict.fromkeys(scope.split()))
    for token in tokens:
        if not _SCOPE_TOKEN.match(token):
            raise ProviderError(f"scope {token!r} has characters RFC 6749 forbids")
    # Without openid an OpenID Connect provider sends no ID token, and sign-in needs one.
    if kind == "oidc" and "openid" not in tokens:
        raise ProviderError("an OpenID Connect provider's scope must include openid")
    joined = " ".join(tokens)
    if len(joined) > 500:
        raise ProviderError("the scope must be 500 characters at most")
    return joined


def checked_label(label: str) -> str:
    """``label`` stripped, when it is 1 to 100 characters without controls."""
    label = label.strip()
    if not label or len(label) > 100 or _CONTROL.search(label):
        raise ProviderError("the label must be 1 to 100 characters without control characters")
    return label
