"""Settings: one frozen object, read once from ``IDENTITY_*`` environment variables."""

from __future__ import annotations

import ipaddress
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from identity.config_values import (
    boolean,
    networks,
    non_negative_float,
    one_of,
    optional,
    positive_float,
    positive_int,
    seconds_list,
    whole_number,
    word_list,
)

log = logging.getLogger("identity.config")

_LOOPBACK_HOSTS = {"localhost", "127.0.0.1", "::1", "[::1]"}


class SettingsError(ValueError):
    """An ``IDENTITY_*`` variable holds a value that cannot be used."""


# The databases identity runs on, and the SQLAlchemy URL schemes that reach them.
_DATABASE_SCHEMES = {"sqlite", "sqlite+pysqlite", "postgresql+psycopg"}


def database_url_problem(url: str) -> str | None:
    """Why ``url`` cannot be identity's database, or None. Never repeats the URL: it may
    hold a password."""
    try:
        scheme = make_url(url).drivername
    except ArgumentError:
        return "not a database URL; expected sqlite:///PATH or postgresql+psycopg://USER@HOST/NAME"
    if scheme in _DATABASE_SCHEMES:
        return None
    if scheme.split("+")[0] in {"postgres", "postgresql"}:
        return f"write postgresql+psycopg://... instead of {scheme}:// (identity uses psycopg 3)"
    return (
        f"{scheme} is not supported; identity runs on SQLite (sqlite:///PATH) "
        "and PostgreSQL (postgresql+psycopg://...)"
    )


def _setting(
    default: Any, parse: Callable[[str], Any] = str, doc: str = "", secret: bool = False
) -> Any:
    # A secret setting (a URL that may hold a password) stays out of repr(), hence logs.
    return field(default=default, repr=not secret, metadata={"parse": parse, "doc": doc})


@dataclass(frozen=True)
class Settings:
    """Every knob of identity; the README's settings table is generated from these docs."""

    issuer: str = _setting(
        "http://localhost:8000",
        doc="Public base URL; the `iss` of every token. Unset, `identity serve` uses "
        "`http://localhost:PORT` (on a loopback or wildcard `--host`)",
    )
    database_url: str = _setting(
        "sqlite:///./identity.db",
        doc="SQLAlchemy URL: `sqlite:///...` or `postgresql+psycopg://...`",
        secret=True,
    )
    redis_url: str | None = _setting(
        None,
        optional,
        doc="Redis URL; unset means in-process limiters and a database-only denylist",
        secret=True,
    )
    redis_prefix: str = _setting("identity:", doc="Prefix of every Redis key this server writes")
    keys_dir: Path = _setting(Path("keys"), Path, doc="Folder of the signing keys and manifest")
    secret_key: str | None = _setting(
        None,
        optional,
        doc="Keys that encrypt secrets at rest (TOTP seeds), comma-separated, the first "
        "encrypting; unset: `secret.keys` in the keys folder, made on first start "
        '(see "Multi-factor authentication and passkeys")',
        secret=True,
    )
    keys_reload_seconds: float = _setting(
        10.0, non_negative_float, doc="How often a running server looks for key changes"
    )
    insecure_http: bool = _setting(
        False,
        boolean,
        doc="Allow a non-loopback `http://` issuer, and `http://` upstream providers "
        "(development only)",
    )
    access_token_ttl: int = _setting(600, positive_int, doc="Access token lifetime, seconds")
    id_token_ttl: int = _setting(600, positive_int, doc="ID token lifetime, seconds")
    authorization_code_ttl: int = _setting(
        60, positive_int, doc="Authorization code lifetime, seconds (60 at most)"
    )
    refresh_token_idle_ttl: int = _setting(
        1209600, positive_int, doc="A refresh token dies after this long unused, seconds"
    )
    refresh_token_absolute_ttl: int = _setting(
        7776000, positive_int, doc="A refresh-token family dies this long after login, seconds"
    )
    refresh_grace_seconds: int = _setting(
        0,
        whole_number,
        doc="A client retrying a refresh within this many seconds gets the same successor",
    )
    password_grant: bool = _setting(
        False, boolean, doc="Allow the password grant (only for --first-party clients)"
    )
    device_code_ttl: int = _setting(600, positive_int, doc="Device code lifetime, seconds")
    device_poll_interval: int = _setting(
        5, positive_int, doc="Seconds a device must wait between polls"
    )
    cors_origins: tuple[str, ...] = _setting(
        (), word_list, doc="Origins allowed to call token, JWKS and userinfo from a browser"
    )
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = _setting(
        (), networks, doc="CIDRs of reverse proxies whose `X-Forwarded-For` is believed"
    )
    max_body_bytes: int = _setting(65536, positive_int, doc="Largest request body accepted, bytes")
    # Few: every thread contends for the GIL with the event loop. Measured on 2 cores, one
    # worker, client_credentials at 16 connections: 10 threads gave 740-860 req/s with a
    # p99 of 88 ms, 3-4 threads 740-960 req/s with a p99 of 22-35 ms.
    db_pool_size: int = _setting(
        4, positive_int, doc="Request threads, and database connections for them, per worker"
    )
    # One: argon2 already spreads a hash over IDENTITY_ARGON2_PARALLELISM threads, so a
    # second one per worker only adds contention (measured: same logins/s, twice the p99 of
    # userinfo during a login flood).
    password_threads: int = _setting(
        1,
        positive_int,
        doc="Threads per worker that hash or verify passwords, apart from all other requests",
    )
    cache_check_seconds: float = _setting(
        1.0,
        non_negative_float,
        doc="How often a worker asks whether cached clients and users changed (0: always)",
    )
    migrate_on_start: bool = _setting(
        True, boolean, doc="`identity serve` runs `alembic upgrade head` before it listens"
    )
    log_level: str = _setting(
        "info",
        one_of("debug", "info", "warning", "error"),
        doc="Log level: debug, info, warning, error",
    )
    log_format: str = _setting(
        "auto",
        one_of("auto", "json", "text"),
        doc="`json` (one object a line), `text` (for a terminal), or `auto`: text when "
        "stderr is a terminal, else json",
    )
    metrics_token: str | None = _setting(
        None,
        optional,
        doc="Bearer token `/metrics` requires; unset: only loopback clients may scrape",
        secret=True,
    )
    smtp_url: str | None = _setting(
        None,
        optional,
        doc="`smtp://user:pass@host:587` (STARTTLS) or `smtps://...:465`; unset: mail goes to "
        "the outbox folder",
        secret=True,
    )
    mail_from: str = _setting("identity <no-reply@localhost>", doc="From: of every mail")
    outbox_dir: Path = _setting(
        Path("outbox"), Path, doc="Where mail is written as `.eml` files when no SMTP is set"
    )
    argon2_time_cost: int = _setting(3, positive_int, doc="argon2id passes")
    argon2_memory_kib: int = _setting(65536, positive_int, doc="argon2id memory, KiB")
    argon2_parallelism: int = _setting(4, positive_int, doc="argon2id lanes")
    session_idle_seconds: int = _setting(
        7200, positive_int, doc="A browser session ends after this long unused"
    )
    session_max_seconds: int = _setting(
        86400, positive_int, doc="A browser session ends this long after login, used or not"
    )
    rate_limits: tuple[str, ...] = _setting(
        (),
        word_list,
        doc="Overrides of named limits, e.g. `login.account=10/300 signup.ip=20/3600` "
        "(attempts/seconds)",
    )
    webhooks_allow_private: bool = _setting(
        False,
        boolean,
        doc="Let webhook endpoints be `http://` URLs and loopback or private addresses "
        "(development and tests only)",
    )
    # About a day in all (23 h 42 min): a receiver down for a night still gets everything,
    # and the first retry comes within a minute, for a receiver that was only redeploying.
    webhooks_retry_seconds: tuple[int, ...] = _setting(
        (30, 120, 600, 1800, 3600, 7200, 14400, 28800, 28800),
        seconds_list,
        doc="Waits between the attempts of a webhook delivery, seconds (each ±20%); after "
        "the last one the delivery has failed",
    )
    # Five days, as the large senders do: a receiver down over a long weekend is not
    # switched off, one that is gone for good stops costing attempts.
    webhooks_disable_after_seconds: int = _setting(
        432000,
        positive_int,
        doc="A webhook endpoint whose every attempt failed for this long is disabled",
    )
    webhooks_timeout_seconds: float = _setting(
        10.0,
        positive_float,
        doc="How long a webhook receiver may take to answer, seconds",
    )

    def __post_init__(self) -> None:
        database_problem = database_url_problem(self.database_url)
        if database_problem is not None:
            raise SettingsError(f"IDENTITY_DATABASE_URL: {database_problem}")
        scheme = urlsplit(self.issuer).scheme
        if scheme not in {"http", "https"} or not urlsplit(self.issuer).hostname:
            raise SettingsError(f"IDENTITY_ISSUER must be an http(s) URL, got {self.issuer!r}")
        if self.issuer.endswith("/") or "?" in self.issuer or "#" in self.issuer:
            raise SettingsError("IDENTITY_ISSUER must have no trailing slash, query or fragment")
        if scheme == "http" and not self.issuer_is_loopback and not self.insecure_http:
            raise SettingsError(
                "IDENTITY_ISSUER is plain http on a non-loopback host; "
                "use https, or set IDENTITY_INSECURE_HTTP=1 for development"
            )
        if self.authorization_code_ttl > 60:
            raise SettingsError("IDENTITY_AUTHORIZATION_CODE_TTL may be 60 seconds at most")
        if self.refresh_grace_seconds < 0 or self.refresh_grace_seconds > 60:
            raise SettingsError("IDENTITY_REFRESH_GRACE_SECONDS must be between 0 and 60")
        if "*" in self.cors_origins:
            raise SettingsError("IDENTITY_CORS_ORIGINS lists exact origins; '*' is refused")

    @property
    def issuer_is_loopback(self) -> bool:
        return (urlsplit(self.issuer).hostname or "") in _LOOPBACK_HOSTS

    @property
    def is_https(self) -> bool:
        return self.issuer.startswith("https://")

    @property
    def max_token_ttl(self) -> int:
        """Longest life of anything signed with a key: what a retired key must outlive."""
        return max(self.access_token_ttl, self.id_token_ttl)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Read every ``IDENTITY_<NAME>`` variable; ``overrides`` win (tests use them)."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for item in fields(cls):
            variable = "IDENTITY_" + item.name.upper()
            if variable not in environ:
                continue
            raw = environ[variable]
            try:
                values[item.name] = item.metadata["parse"](raw)
            except ValueError as error:
                # The value itself only when it is no secret (a URL may hold a password).
                shown = "" if not item.repr else f", not {raw!r}"
                raise SettingsError(f"{variable}: {error}{shown}") from None
        values.update(overrides)
        return cls(**values)

    def log_unsafe_defaults(self) -> None:
        """Say once, at start, which settings must change before production."""
        if not self.is_https:
            log.warning("IDENTITY_ISSUER is %s: use an https issuer in production", self.issuer)
        if self.database_url.startswith("sqlite"):
            log.warning("IDENTITY_DATABASE_URL is SQLite: use PostgreSQL in production")
        if self.redis_url is None:
            log.warning("IDENTITY_REDIS_URL is unset: limiters are per process, not shared")
        if self.issuer_host_is_address:
            log.warning(
                "IDENTITY_ISSUER is on an IP address (%s): browsers refuse passkeys there, so "
                "the passkey buttons are hidden; use a host name (http://localhost:PORT for "
                "development)",
                self.issuer,
            )

    @property
    def issuer_host_is_address(self) -> bool:
        """True when the issuer's host is an IP literal, where browsers refuse WebAuthn."""
        try:
            ipaddress.ip_address((urlsplit(self.issuer).hostname or "").strip("[]"))
        except ValueError:
            return False
        return True


def _is_loopback(host: str) -> bool:
    host = host.strip("[]")
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _reaches_loopback(host: str) -> bool:
    """A server listening on ``host`` answers on the loopback interface."""
    return _is_loopback(host) or host.strip("[]") in {"0.0.0.0", "::", ""}  # noqa: S104


def serving_issuer(host: str, port: int) -> str:
    """The issuer of ``identity serve --host HOST --port PORT`` when IDENTITY_ISSUER is unset.

    On a loopback or wildcard host it is ``localhost``: a name, not an address, because
    browsers accept passkeys for ``localhost`` and never for an IP address."""
    if _reaches_loopback(host):
        return f"http://localhost:{port}"
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


def issuer_mismatch(issuer: str, host: str, port: int) -> str | None:
    """Why a loopback ``issuer`` is not where ``identity serve --host --port`` answers, or
    None. A non-loopback issuer is a proxy's public URL, which this cannot check."""
    parts = urlsplit(issuer)
    if not _is_loopback(parts.hostname or ""):
        return None
    issuer_port = parts.port or (443 if parts.scheme == "https" else 80)
    if issuer_port == port and _reaches_loopback(host):
        return None
    return (
        f"IDENTITY_ISSUER is {issuer} but identity listens on {host}:{port}: discovery, "
        f"tokens and mail links point to {issuer}. Right behind a proxy there; otherwise "
        f"unset IDENTITY_ISSUER (identity then uses {serving_issuer(host, port)})"
    )


def settings_table() -> list[tuple[str, str, str]]:
    """(variable, default, meaning) for each setting, for the README and the CLI."""
    rows = []
    for item in fields(Settings):
        default = item.default
        shown = "unset" if default in (None, ()) else str(default)
        rows.append(("IDENTITY_" + item.name.upper(), shown, item.metadata["doc"]))
    return rows
