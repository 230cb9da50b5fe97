"""Settings come from IDENTITY_* variables, once, with safe defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from identity.config import Settings, SettingsError, settings_table

README = Path(__file__).resolve().parent.parent / "README.md"


def test_defaults_run_on_embedded_parts() -> None:
    settings = Settings.from_env({})
    assert settings.issuer == "http://127.0.0.1:8000"
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
