"""The files that build, ship and run identity agree with each other and with its settings:
the Dockerfile, compose.yaml, pyproject.toml, constraints.txt, LICENSE and the ignore files.

There is no Docker engine where the tests run: tests/system/test_wheel.py runs the image's
command line from an installed wheel the way the container would."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from identity.config import Settings, settings_table

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "compose.yaml"
DOCKERFILE = ROOT / "Dockerfile"
PYPROJECT = ROOT / "pyproject.toml"
CONSTRAINTS = ROOT / "constraints.txt"

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


def dockerfile_stages(path: Path = DOCKERFILE) -> list[list[tuple[str, str]]]:
    """Each build stage's (INSTRUCTION, arguments) pairs, from its FROM on; continuation lines
    are joined and comments dropped."""
    stages: list[list[tuple[str, str]]] = []
    pending = ""
    for line in path.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        whole = pending + stripped
        pending = ""
        keyword, _, arguments = whole.partition(" ")
        if keyword.upper() == "FROM" or not stages:
            stages.append([])
        stages[-1].append((keyword.upper(), arguments.strip()))
    return stages


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """The final stage's instructions: what the image is."""
    return dockerfile_stages()[-1]


def dockerfile_environment(instructions: list[tuple[str, str]]) -> dict[str, str]:
    """What the ENV instructions (``KEY=VALUE`` form) set."""
    environment: dict[str, str] = {}
    for keyword, arguments in instructions:
        if keyword == "ENV":
            for word in shlex.split(arguments):
                name, equals, value = word.partition("=")
                assert equals, f"ENV {arguments!r}: write ENV KEY=VALUE"
                environment[name] = value
    return environment


def dockerfile_volumes(instructions: list[tuple[str, str]]) -> list[str]:
    """The folders the VOLUME instructions declare."""
    return [
        volume
        for keyword, arguments in instructions
        if keyword == "VOLUME"
        for volume in command_words(arguments)
    ]


def command_words(arguments: str) -> list[str]:
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
    words = command_words(commands[-1])
    assert words[:2] == ["identity", "serve"]
    assert "--host" in words
    # The container must listen beyond its own loopback to be reachable at all.
    assert words[words.index("--host") + 1] == "0.0.0.0"  # noqa: S104


def test_dockerfile_runs_as_a_non_root_user() -> None:
    users = [args for keyword, args in _dockerfile_instructions() if keyword == "USER"]
    assert users, "the Dockerfile sets no USER"
    user = users[-1].split(":", 1)[0]
    assert user not in {"root", "0"}


# -- the image: dependencies before the source, the wheel, a data volume, a non-root user ----


def _stage_named(name: str) -> list[tuple[str, str]]:
    for stage in dockerfile_stages():
        words = stage[0][1].split()
        if len(words) == 3 and words[1].upper() == "AS" and words[2] == name:
            return stage
    raise AssertionError(f"the Dockerfile has no stage named {name!r}")


def _copies(instructions: list[tuple[str, str]]) -> Iterator[tuple[list[str], str, str | None]]:
    """(sources, destination, --from stage or None) of each COPY."""
    for keyword, arguments in instructions:
        if keyword != "COPY":
            continue
        words = command_words(arguments)
        flags = {w.split("=", 1)[0]: w.partition("=")[2] for w in words if w.startswith("--")}
        paths = [w for w in words if not w.startswith("--")]
        yield paths[:-1], paths[-1], flags.get("--from")


def _final_stage_user() -> str:
    users = [args for keyword, args in _dockerfile_instructions() if keyword == "USER"]
    return users[-1].split(":", 1)[0]


def test_the_image_installs_its_pinned_dependencies_before_it_copies_the_source() -> None:
    instructions = _dockerfile_instructions()
    runs = [i for i, (keyword, args) in enumerate(instructions) if keyword == "RUN"]
    installs = [i for i in runs if "pip install" in instructions[i][1]]
    assert installs, "the image installs nothing"
    dependencies = instructions[installs[0]][1]
    assert re.search(r"-c \S*constraints\.txt", dependencies), "not pinned by constraints.txt"
    copied_before = [
        PurePosixPath(source).name
        for sources, _, stage in _copies(instructions[: installs[0]])
        for source in sources
    ]
    assert copied_before and set(copied_before) <= {"pyproject.toml", "constraints.txt"}
    assert all(stage is None for _, _, stage in _copies(instructions[: installs[0]]))


def test_the_image_installs_the_built_wheel_and_no_checkout() -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    assert not re.search(r"pip install[^\n]*\s-e\s", text), "an editable install needs the checkout"
    wheel_stage = _stage_named("wheel")
    assert any(k == "RUN" and "pip wheel" in a for k, a in wheel_stage)
    final = _dockerfile_instructions()
    assert [stage for _, _, stage in _copies(final) if stage] == ["wheel"]
    # Nothing of the checkout reaches the image but the two dependency files.
    local = {PurePosixPath(s).name for sources, _, st in _copies(final) if not st for s in sources}
    assert local == {"pyproject.toml", "constraints.txt"}
    assert any(k == "RUN" and "pip check" in a for k, a in final)


def test_the_wheel_stage_copies_every_source_pyproject_builds_from() -> None:
    project = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))
    setuptools = project["tool"]["setuptools"]
    needed = {
        "pyproject.toml",
        project["project"]["readme"],
        *project["project"]["license-files"],
        *{package.split(".")[0] for package in setuptools["packages"]},
        *setuptools["package-dir"].values(),
    }
    copied = {
        PurePosixPath(source).as_posix()
        for sources, _, _ in _copies(_stage_named("wheel"))
        for source in sources
    }
    assert needed <= copied


def test_pyproject_lists_every_package_of_the_checkout() -> None:
    """Packages are listed (templates/ and migrations/ are mapped in), so a new one must be."""
    setuptools = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["tool"]["setuptools"]
    folders = {"identity": ROOT / "identity"} | {
        package: ROOT / folder for package, folder in setuptools["package-dir"].items()
    }
    found = {
        ".".join([package, *path.parent.relative_to(folder).parts])
        for package, folder in folders.items()
        for path in folder.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }
    assert sorted(found - set(setuptools["packages"])) == []


def test_every_file_the_server_writes_by_default_is_in_the_data_volume() -> None:
    instructions = _dockerfile_instructions()
    environment = dockerfile_environment(instructions)
    volumes = [PurePosixPath(v) for v in dockerfile_volumes(instructions)]
    assert volumes, "the image declares no data volume"
    settings = Settings.from_env({k: v for k, v in environment.items() if k in _table_names()})
    database = settings.database_url
    assert database.startswith("sqlite:////"), "the default database must be an absolute path"
    written = [
        PurePosixPath(database.removeprefix("sqlite:///")),
        PurePosixPath(settings.keys_dir),
        PurePosixPath(settings.outbox_dir),
    ]
    for path in written:
        assert any(path.is_relative_to(volume) for volume in volumes), f"{path} is not in a volume"


def test_the_data_volume_is_made_for_the_unprivileged_user_before_it_is_declared() -> None:
    instructions = _dockerfile_instructions()
    user = _final_stage_user()
    assert user.isdigit() and int(user) != 0, "a numeric USER lets runAsNonRoot verify it"
    keywords = [keyword for keyword, _ in instructions]
    for volume in dockerfile_volumes(instructions):
        prepared = [
            i
            for i, (keyword, args) in enumerate(instructions)
            if keyword == "RUN"
            and f"--uid {user}" in args
            and re.search(rf"chown \S+ {volume}\b", args)
        ]
        assert prepared, f"no RUN creates the user {user} and gives it {volume}"
        assert prepared[0] < keywords.index("VOLUME")


def test_the_working_directory_is_not_the_data_volume() -> None:
    """The server must not depend on writing where it starts (the image's / is read-only to it)."""
    instructions = _dockerfile_instructions()
    workdirs = [args for keyword, args in instructions if keyword == "WORKDIR"]
    workdir = PurePosixPath(workdirs[-1] if workdirs else "/")
    for volume in dockerfile_volumes(instructions):
        assert not workdir.is_relative_to(volume)


def test_the_docker_run_line_in_the_header_mounts_the_data_volume() -> None:
    header = DOCKERFILE.read_text(encoding="utf-8").split("\nFROM", 1)[0]
    runs = [line for line in header.splitlines() if "docker run" in line]
    assert runs, "the header documents no docker run"
    for volume in dockerfile_volumes(_dockerfile_instructions()):
        assert re.search(rf"-v \S+:{volume}(\s|$)", runs[0])


def test_compose_mounts_a_named_volume_at_the_image_data_volume(services: dict[str, Any]) -> None:
    mounts = services["identity"].get("volumes") or []
    targets = {str(mount).split(":")[1] for mount in mounts if ":" in str(mount)}
    named = {str(mount).split(":")[0] for mount in mounts if ":" in str(mount)}
    assert set(dockerfile_volumes(_dockerfile_instructions())) <= targets
    document = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert named <= set(document.get("volumes") or {})


def test_compose_keeps_the_signing_keys_in_a_mounted_volume(services: dict[str, Any]) -> None:
    environment = {**dockerfile_environment(_dockerfile_instructions()), **_identity_env(services)}
    keys = PurePosixPath(environment["IDENTITY_KEYS_DIR"])
    mounts = [str(m).split(":")[1] for m in services["identity"]["volumes"] if ":" in str(m)]
    assert any(keys.is_relative_to(target) for target in mounts)


def test_dockerignore_keeps_local_state_out_and_the_build_inputs_in() -> None:
    patterns = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {"keys", "identity.db*", ".venv", ".git"} <= patterns
    inputs = {
        source
        for stage in dockerfile_stages()
        for sources, _, from_stage in _copies(stage)
        if from_stage is None
        for source in sources
    }
    assert inputs and not inputs & patterns


# -- packaging metadata: license, dependency ranges, constraints, ignored files ---------------


def _project() -> dict[str, Any]:
    return dict(tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"])


def _pins() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in CONSTRAINTS.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, equals, version = line.partition("==")
            assert equals, f"constraints.txt: {line!r} is not NAME==VERSION"
            pins[canonicalize_name(name)] = version
    return pins


def _requirements(extras: tuple[str, ...] = ()) -> list[Requirement]:
    """identity's own requirements, with the listed extras, without identity itself."""
    project = _project()
    found = [Requirement(text) for text in project["dependencies"]]
    for extra in extras:
        for text in project["optional-dependencies"][extra]:
            requirement = Requirement(text)
            if canonicalize_name(requirement.name) == "identity":
                found += _requirements(tuple(requirement.extras))
            else:
                found.append(requirement)
    return found


def test_the_license_file_is_the_apache_license_pyproject_declares() -> None:
    project = _project()
    assert project["license"] == "Apache-2.0"
    assert project["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert text.split()[:4] == ["Apache", "License", "Version", "2.0,"]
    assert "END OF TERMS AND CONDITIONS" in text


def test_every_runtime_dependency_stops_below_its_next_major_release() -> None:
    for requirement in _requirements():
        uppers = [spec for spec in requirement.specifier if spec.operator == "<"]
        assert uppers, f"{requirement} has no upper bound"


def test_constraints_pin_every_requirement_inside_pyprojects_ranges() -> None:
    pins = _pins()
    for requirement in _requirements(("dev",)):
        name = canonicalize_name(requirement.name)
        assert name in pins, f"constraints.txt does not pin {requirement.name}"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"constraints.txt pins {name}=={pins[name]}, outside {requirement}"
        )


def _installed_closure(extras: tuple[str, ...]) -> dict[str, str]:
    """Name and installed version of everything identity[extras] pulls in here."""
    found: dict[str, str] = {}
    visited: set[tuple[str, frozenset[str]]] = set()
    todo: list[tuple[Requirement, frozenset[str]]] = [
        (requirement, frozenset()) for requirement in _requirements(extras)
    ]
    while todo:
        requirement, active = todo.pop()
        environments = [{"extra": extra} for extra in active or {""}]
        if requirement.marker and not any(requirement.marker.evaluate(e) for e in environments):
            continue
        name = canonicalize_name(requirement.name)
        if (name, frozenset(requirement.extras)) in visited:
            continue
        visited.add((name, frozenset(requirement.extras)))
        distribution = metadata.distribution(name)
        found[name] = distribution.version
        todo += [
            (Requirement(text), frozenset(requirement.extras))
            for text in distribution.requires or []
        ]
    return found


def test_constraints_pin_everything_a_dev_install_pulls_in_and_nothing_else() -> None:
    installed = _installed_closure(("dev",))
    pins = _pins()
    assert sorted(set(installed) - set(pins)) == [], "unpinned: regenerate constraints.txt"
    assert sorted(set(pins) - set(installed)) == [], "stale pins: regenerate constraints.txt"


@pytest.mark.skipif(not os.environ.get("CI"), reason="a local venv may run newer releases")
def test_ci_runs_the_pinned_versions() -> None:
    installed = _installed_closure(("dev",))
    assert {n: v for n, v in installed.items() if _pins().get(n) != v} == {}


def test_ci_installs_with_the_constraints() -> None:
    script = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    installs = [line for line in script.splitlines() if re.search(r"\binstall\b.* -e ", line)]
    assert installs and all("-c constraints.txt" in line for line in installs)


def _walkthrough_outputs() -> set[str]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    return set(re.findall(r">\s*([\w.-]+\.json)\b", readme))


@pytest.mark.skipif(
    shutil.which("git") is None or not (ROOT / ".git").exists(), reason="needs the git checkout"
)
def test_gitignore_covers_what_the_readme_walkthrough_and_a_local_server_write() -> None:
    written = {
        *_walkthrough_outputs(),
        "identity.db",
        "identity.db-journal",
        "outbox/1-verify_email.eml",
        "keys/manifest.json",
        "keys/key-1.pem",
    }
    assert {"client.json", "token.json"} <= written
    result = subprocess.run(
        ["git", "check-ignore", "--no-index", "--stdin"],
        cwd=ROOT,
        input="\n".join(sorted(written)),
        capture_output=True,
        text=True,
        check=False,
    )
    assert set(result.stdout.split()) == written
