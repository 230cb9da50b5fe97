"""Settings come from IDENTITY_* variables, once, with safe defaults."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from identity.config import (
    Settings,
    SettingsError,
    issuer_mismatch,
    serving_issuer,
    settings_table,
)

README = Path(__file__).resolve().parent.parent / "README.md"


def test_defaults_run_on_embedded_parts() -> None:
    settings = Settings.from_env({})
    assert settings.issuer == "http://localhost:8000"
    assert settings.database_url == "sqlite:///./identity.db"
    assert settings.redis_url is None and settings.insecure_http is False


def test_values_are_parsed_from_the_environment() -> None:
    settings = Settings.from_env(
        {
            "IDENTITY_ISSUER": "https://id.example.com",
            "IDENTITY_ACCESS_TOKEN_TTL": "120",
            "IDENTITY_CORS_ORIGINS": "https://a.example.com, https://b.example.com",
            "IDENTITY_TRUSTED_PROXIES": "10.0.0.0/8",
            "IDENTITY_INSECURE_HTTP": "off",
        }
    )
    assert settings.access_token_ttl == 120
    assert settings.cors_origins == ("https://a.example.com", "https://b.example.com")
    assert str(settings.trusted_proxies[0]) == "10.0.0.0/8"


def test_plain_http_issuer_off_loopback_needs_insecure_http() -> None:
    with pytest.raises(SettingsError, match="INSECURE_HTTP"):
        Settings.from_env({"IDENTITY_ISSUER": "http://id.example.com"})
    settings = Settings.from_env(
        {"IDENTITY_ISSUER": "http://id.example.com", "IDENTITY_INSECURE_HTTP": "1"}
    )
    assert settings.insecure_http is True


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("IDENTITY_ACCESS_TOKEN_TTL", "-5"),
        ("IDENTITY_ACCESS_TOKEN_TTL", "ten"),
        ("IDENTITY_INSECURE_HTTP", "maybe"),
        ("IDENTITY_TRUSTED_PROXIES", "not-a-network"),
        ("IDENTITY_CORS_ORIGINS", "*"),
        ("IDENTITY_ISSUER", "https://id.example.com/"),
        ("IDENTITY_ISSUER", "ftp://id.example.com"),
    ],
)
def test_bad_values_name_the_variable(name: str, value: str) -> None:
    with pytest.raises(SettingsError):
        Settings.from_env({name: value})


def test_every_setting_is_documented_in_the_readme() -> None:
    readme = README.read_text()
    for variable, _default, _meaning in settings_table():
        assert f"`{variable}`" in readme, variable


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("notaurl", "IDENTITY_DATABASE_URL: not a database URL"),
        ("postgres://identity:hunter22@db/identity", "write postgresql+psycopg://"),
        ("postgresql://identity:hunter22@db/identity", "write postgresql+psycopg://"),
        ("postgresql+asyncpg://identity:hunter22@db/identity", "write postgresql+psycopg://"),
        (
            "mysql://identity:hunter22@db/identity",
            "mysql is not supported; identity runs on SQLite",
        ),
    ],
)
def test_a_database_url_identity_cannot_use_is_refused_without_repeating_it(
    url: str, message: str
) -> None:
    with pytest.raises(SettingsError, match=re.escape(message)) as refused:
        Settings.from_env({"IDENTITY_DATABASE_URL": url})
    assert "hunter22" not in str(refused.value)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("IDENTITY_ACCESS_TOKEN_TTL", "abc", "expected a whole number above 0, not 'abc'"),
        ("IDENTITY_LOG_LEVEL", "verbose", "expected one of debug, info, warning, error"),
        ("IDENTITY_KEYS_RELOAD_SECONDS", "soon", "expected a number of seconds"),
        ("IDENTITY_REFRESH_GRACE_SECONDS", "1.5", "expected a whole number, not '1.5'"),
    ],
)
def test_a_bad_value_is_one_sentence_naming_the_setting(
    name: str, value: str, message: str
) -> None:
    with pytest.raises(SettingsError) as refused:
        Settings.from_env({name: value})
    assert str(refused.value).startswith(f"{name}: ") and message in str(refused.value)
    assert "\n" not in str(refused.value)


def test_a_secret_setting_is_not_repeated_in_its_error() -> None:
    with pytest.raises(SettingsError) as refused:
        Settings.from_env({"IDENTITY_DATABASE_URL": "postgres://u:hunter22@db/x"})
    assert "hunter22" not in str(refused.value)


@pytest.mark.parametrize(
    ("host", "port", "issuer"),
    [
        ("127.0.0.1", 8014, "http://localhost:8014"),
        ("localhost", 8000, "http://localhost:8000"),
        ("::1", 9000, "http://localhost:9000"),
        ("0.0.0.0", 8000, "http://localhost:8000"),  # noqa: S104
        ("192.0.2.7", 8000, "http://192.0.2.7:8000"),
        ("2001:db8::7", 8000, "http://[2001:db8::7]:8000"),
    ],
)
def test_the_served_issuer_follows_host_and_port(host: str, port: int, issuer: str) -> None:
    assert serving_issuer(host, port) == issuer


def test_a_loopback_issuer_elsewhere_than_the_server_is_named() -> None:
    warning = issuer_mismatch("http://127.0.0.1:8000", "127.0.0.1", 8014)
    assert warning is not None
    assert "http://127.0.0.1:8000" in warning and "127.0.0.1:8014" in warning
    assert issuer_mismatch("http://localhost:8014", "127.0.0.1", 8014) is None
    assert issuer_mismatch("http://127.0.0.1:8000", "0.0.0.0", 8000) is None  # noqa: S104
    assert issuer_mismatch("https://id.example.com", "127.0.0.1", 8014) is None  # a proxy
