"""The upstream identity providers people may sign in with ("Continue with Google"), as an
operator configured them: adding, changing and removing them (audited), and every process's
view of them. The presets and the rules a definition must meet are in
``identity.upstream_presets``.

Each process keeps the providers in memory and re-reads them when the "upstream_providers"
cache generation moved, checked at most every IDENTITY_CACHE_CHECK_SECONDS: every change here
bumps it in its own transaction, so an instance sees it within that interval, no restart.
Client secrets are sealed at rest (identity.secret_box) and opened only into ``ProviderConfig``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from sqlalchemy.orm import Session

from identity import audit, repositories
from identity.config import Settings
from identity.models import UpstreamProvider
from identity.secret_box import SecretBox, SecretBoxError
from identity.upstream_presets import (
    DEFAULT_SCOPE,
    PRESETS,
    ProviderError,
    checked_client_id,
    checked_issuer,
    checked_label,
    checked_name,
    checked_scope,
    checked_secret,
)

log = logging.getLogger("identity.upstream_providers")


@dataclass(frozen=True)
class ProviderConfig:
    """One provider as the sign-in flow uses it, its client secret opened."""

    name: str
    kind: str
    issuer: str
    client_id: str
    # Out of repr: a config that reaches a log line must not carry the secret with it.
    client_secret: str = field(repr=False)
    scope: str
    label: str
    enabled: bool
    trust_mfa: bool


class _Described(Protocol):
    # What ``describe`` reads: a ProviderConfig and an UpstreamProvider row both have it.
    name: str
    kind: str
    issuer: str
    client_id: str
    scope: str
    label: str
    enabled: bool
    trust_mfa: bool


def redirect_uri(issuer: str, name: str) -> str:
    """The callback URL to register at the upstream for provider ``name`` of ``issuer``."""
    return f"{issuer}/login/with/{name}/callback"


def describe(provider: _Described, issuer: str) -> dict[str, object]:
    """The JSON shape of a provider for operators: never its client secret."""
    return {
        "name": provider.name,
        "kind": provider.kind,
        "issuer": provider.issuer,
        "client_id": provider.client_id,
        "scope": provider.scope,
        "label": provider.label,
        "enabled": provider.enabled,
        "trust_mfa": provider.trust_mfa,
        "redirect_uri": redirect_uri(issuer, provider.name),
    }


class UpstreamProviders:
    """The configured providers: read (cached per process) by the sign-in flow, changed by
    operators."""

    def __init__(
        self,
        settings: Settings,
        secret_box: SecretBox,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._insecure_http = settings.insecure_http
        self._check_seconds = settings.cache_check_seconds
        self._secret_box = secret_box
        self._clock = clock
        self._configs: dict[str, ProviderConfig] | None = None
        self._generation: int | None = None
        self._checked_at = -float("inf")
        self._lock = threading.Lock()

    # -- reading: the sign-in flow ---------------------------------------------------------

    def get(self, session: Session, name: str) -> ProviderConfig | None:
        """Provider ``name``, enabled or not (callers check ``enabled``); None when unknown."""
        return self._current(session).get(name)

    def enabled(self, session: Session) -> list[ProviderConfig]:
        """The providers people may sign in with now, oldest first."""
        return [config for config in self._current(session).values() if config.enabled]

    def _current(self, session: Session) -> dict[str, ProviderConfig]:
        now = self._clock()
        with self._lock:
            configs = self._configs
            if configs is not None and now - self._checked_at < self._check_seconds:
                return configs
        generation = repositories.cache_generation(session, repositories.PROVIDERS_GENERATION)
        with self._lock:
            if self._configs is not None and generation == self._generation:
                self._checked_at = now
                return self._configs
        # Read after the generation: a change committed in between is read now and read
        # again at the next check, never missed.
        loaded = {
            row.name: config
            for row in repositories.list_upstream_providers(session)
            if (config := self._opened(row)) is not None
        }
        with self._lock:
            self._configs, self._generation, self._checked_at = loaded, generation, now
        return loaded

    def _opened(self, row: UpstreamProvider) -> ProviderConfig | None:
        try:
            secret = self._secret_box.open(row.client_secret_sealed)
        except SecretBoxError:
            # A key removed from IDENTITY_SECRET_KEY too early: this provider cannot work,
            # the others can, and the sign-in page must still render.
            log.error(
                "provider %s is left out: no configured secret key opens its client secret; "
                "set it again with `identity providers update %s --client-secret ...`",
                row.name,
                row.name,
            )
            return None
        return ProviderConfig(
            name=row.name,
            kind=row.kind,
            issuer=row.issuer,
            client_id=row.client_id,
            client_secret=secret,
            scope=row.scope,
            label=row.label,
            enabled=row.enabled,
            trust_mfa=row.trust_mfa,
        )

    # -- changing: operators ---------------------------------------------------------------

    def add(
        self,
        session: Session,
        *,
        name: str,
        client_id: str,
        client_secret: str,
        preset: str | None = None,
        issuer: str | None = None,
        scope: str | None = None,
        label: str | None = None,
        trust_mfa: bool = False,
        context: audit.RequestContext | None = None,
    ) -> UpstreamProvider:
        """Validate and store a provider (a preset's values where none are given); nothing
        is sent to the upstream. ProviderError when a rule is broken or the name is taken."""
        name = checked_name(name)
        kind = "oidc"
        if preset is not None:
            chosen = PRESETS.get(preset)
            if chosen is None:
                raise ProviderError(f"unknown preset {preset!r}; known: {', '.join(PRESETS)}")
            kind = chosen.kind
            if preset == "microsoft" and issuer is None:
                # Microsoft's multi-tenant "common" issuer is a template ({tenantid}), which no
                # ID token matches exactly: the tenant's own issuer is the one to check.
                raise ProviderError(
                    "the microsoft preset needs --issuer "
                    "https://login.microsoftonline.com/TENANT_ID/v2.0 (your tenant's id)"
                )
            issuer = issuer if issuer is not None else chosen.issuer
            scope = scope if scope is not None else chosen.scope
            label = label if label is not None else chosen.label
        if issuer is None:
            raise ProviderError("an OpenID Connect provider needs --issuer (or a --preset)")
        provider = UpstreamProvider(
            name=name,
            kind=kind,
            issuer=checked_issuer(issuer, self._insecure_http),
            client_id=checked_client_id(client_id),
            client_secret_sealed=self._secret_box.seal(checked_secret(client_secret)),
            scope=checked_scope(DEFAULT_SCOPE if scope is None else scope, kind),
            label=checked_label(
                f"Continue with {name[:1].upper()}{name[1:]}" if label is None else label
            ),
            enabled=True,
            trust_mfa=trust_mfa,
        )
        if not repositories.add_upstream_provider(session, provider):
            raise ProviderError(f"a provider named {name!r} exists already")
        audit.record(
            session,
            "provider.added",
            context=context,
            actor="admin",
            detail={
                "provider": name,
                "kind": kind,
                "issuer": provider.issuer,
                "client_id": provider.client_id,
                "scope": provider.scope,
                "trust_mfa": trust_mfa,
            },
        )
        return provider

    def update(
        self,
        session: Session,
        name: str,
        *,
        issuer: str | None = None,
        client_id: str | None = None,
        client_secret: str | None = None,
        scope: str | None = None,
        label: str | None = None,
        trust_mfa: bool | None = None,
        context: audit.RequestContext | None = None,
    ) -> UpstreamProvider:
        """Change what is given (None: unchanged); LookupError for an unknown name. Audited
        and seen by every instance only when something changed."""
        provider = _existing(session, name)
        wanted: dict[str, object] = {}
        if issuer is not None:
            wanted["issuer"] = checked_issuer(issuer, self._insecure_http)
        if client_id is not None:
            wanted["client_id"] = checked_client_id(client_id)
        if scope is not None:
            wanted["scope"] = checked_scope(scope, provider.kind)
        if label is not None:
            wanted["label"] = checked_label(label)
        if trust_mfa is not None:
            wanted["trust_mfa"] = trust_mfa
        changed = {key: value for key, value in wanted.items() if getattr(provider, key) != value}
        for key, value in changed.items():
            setattr(provider, key, value)
        names = sorted(changed)
        if client_secret is not None:
            # Sealing is randomised, so a new secret cannot be compared: it always counts.
            provider.client_secret_sealed = self._secret_box.seal(checked_secret(client_secret))
            names = sorted([*names, "client_secret"])
        if names:
            repositories.upstream_providers_changed(session)
            audit.record(
                session,
                "provider.updated",
                context=context,
                actor="admin",
                detail={"provider": name, "changed": names, **changed},
            )
        return provider

    def enable(
        self, session: Session, name: str, context: audit.RequestContext | None = None
    ) -> UpstreamProvider:
        """Offer provider ``name`` again; LookupError for an unknown name."""
        return self._set_enabled(session, name, True, context)

    def disable(
        self, session: Session, name: str, context: audit.RequestContext | None = None
    ) -> UpstreamProvider:
        """Stop offering provider ``name`` and refuse its callbacks; its links stay."""
        return self._set_enabled(session, name, False, context)

    def _set_enabled(
        self, session: Session, name: str, enabled: bool, context: audit.RequestContext | None
    ) -> UpstreamProvider:
        provider = _existing(session, name)
        if provider.enabled != enabled:
            provider.enabled = enabled
            repositories.upstream_providers_changed(session)
            kind = "provider.enabled" if enabled else "provider.disabled"
            audit.record(session, kind, context=context, actor="admin", detail={"provider": name})
        return provider

    def remove(
        self, session: Session, name: str, context: audit.RequestContext | None = None
    ) -> int:
        """Delete provider ``name`` and every account's link to it; returns how many links
        went. LookupError for an unknown name."""
        links = repositories.count_links_of_provider(session, name)
        if not repositories.delete_upstream_provider(session, name):
            raise LookupError(f"no provider {name!r}")
        audit.record(
            session,
            "provider.removed",
            context=context,
            actor="admin",
            detail={"provider": name, "links_removed": links},
        )
        return links


def _existing(session: Session, name: str) -> UpstreamProvider:
    provider = repositories.get_upstream_provider(session, name)
    if provider is None:
        raise LookupError(f"no provider {name!r}")
    return provider
