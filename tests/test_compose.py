"""compose.yaml and the Dockerfile agree with each other and with identity's settings."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from identity.config import Settings, settings_table

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "compose.yaml"
DOCKERFILE = ROOT / "Dockerfile"

# Added to Settings by the mail outbox feature; drop each name once settings_table() has it.
PLANNED = {"IDENTITY_SMTP_URL", "IDENTITY_MAIL_FROM"}


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    document = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    return document["services"]


def _environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment, written as a mapping or as a list of KEY=VALUE."""
    raw = service.get("environment") or {}
    if isinstance(raw, dict):
        return {key: "" if value is None else str(value) for key, value in raw.items()}
    pairs = (item.split("=", 1) for item in raw)
    return {pair[0]: pair[1] if len(pair) == 2 else "" for pair in pairs}


def _identity_env(services: dict[str, Any]) -> dict[str, str]:
    return _environment(services["identity"])


def _table_names() -> set[str]:
    return {row[0] for row in settings_table()}


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        whole = pending + stripped
        pending = ""
        keyword, _, arguments = whole.partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
    return instructions


def _command_words(arguments: str) -> list[str]:
    if arguments.startswith("["):
        return [str(word) for word in json.loads(arguments)]
    return shlex.split(arguments)


def test_compose_defines_postgres_redis_mailpit_and_identity(services: dict[str, Any]) -> None:
    assert {"postgres", "redis", "mailpit", "identity"} <= set(services)


def test_identity_builds_from_the_dockerfile_at_the_repo_root(services: dict[str, Any]) -> None:
    build = services["identity"]["build"]
    if isinstance(build, str):
        build = {"context": build}
    context = (ROOT / build.get("context", ".")).resolve()
    dockerfile = context / build.get("dockerfile", "Dockerfile")
    assert context == ROOT
    assert dockerfile == DOCKERFILE
    assert dockerfile.is_file()


def test_planned_settings_are_only_the_mail_settings() -> None:
    assert PLANNED - _table_names() <= {"IDENTITY_SMTP_URL", "IDENTITY_MAIL_FROM"}


def test_every_identity_variable_in_compose_names_a_setting(services: dict[str, Any]) -> None:
    known = _table_names() | PLANNED
    variables = {name for name in _identity_env(services) if name.startswith("IDENTITY_")}
    assert variables, "the identity service sets no IDENTITY_* variables"
    assert variables - known == set()


def test_settings_accept_the_identity_environment_and_reach_postgres_and_redis(
    services: dict[str, Any],
) -> None:
    table = _table_names()
    env = {name: value for name, value in _identity_env(services).items() if name in table}

    settings = Settings.from_env(env)

    database = urlsplit(settings.database_url)
    assert database.scheme.startswith("postgresql")
    assert database.hostname == "postgres"
    assert settings.redis_url is not None
    redis_url = urlsplit(settings.redis_url)
    assert redis_url.scheme == "redis"
    assert redis_url.hostname == "redis"


def test_identity_waits_for_healthy_postgres_and_redis(services: dict[str, Any]) -> None:
    depends_on = services["identity"]["depends_on"]
    assert isinstance(depends_on, dict), "depends_on needs conditions, so it must be a mapping"
    for name in ("postgres", "redis"):
        assert depends_on[name]["condition"] == "service_healthy"
        assert "healthcheck" in services[name]


def test_database_credentials_match_the_postgres_service(services: dict[str, Any]) -> None:
    postgres = _environment(services["postgres"])
    database = urlsplit(_identity_env(services)["IDENTITY_DATABASE_URL"])
    assert database.username == postgres["POSTGRES_USER"]
    assert database.password == postgres["POSTGRES_PASSWORD"]
    assert database.path.lstrip("/") == postgres["POSTGRES_DB"]


def test_smtp_url_points_at_mailpit_on_port_1025(services: dict[str, Any]) -> None:
    smtp = urlsplit(_identity_env(services)["IDENTITY_SMTP_URL"])
    assert smtp.hostname == "mailpit"
    assert smtp.port == 1025


def test_dockerfile_serves_on_all_interfaces() -> None:
    commands = [args for keyword, args in _dockerfile_instructions() if keyword == "CMD"]
    assert commands, "the Dockerfile has no CMD"
    words = _command_words(commands[-1])
    assert words[:2] == ["identity", "serve"]
    assert "--host" in words
    # The container must listen beyond its own loopback to be reachable at all.
    assert words[words.index("--host") + 1] == "0.0.0.0"  # noqa: S104


def test_dockerfile_runs_as_a_non_root_user() -> None:
    users = [args for keyword, args in _dockerfile_instructions() if keyword == "USER"]
    assert users, "the Dockerfile sets no USER"
    user = users[-1].split(":", 1)[0]
    assert user not in {"root", "0"}
