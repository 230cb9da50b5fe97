"""The built wheel, installed alone, serves from anywhere: it carries its templates, static
files and migrations, and the image's command line runs from it as the container would.

The wheel is built from what the Dockerfile's wheel stage copies, and installed into a new
virtual environment that borrows this one's dependencies (a .pth file naming its
site-packages; no network, and the checkout's editable finder is never activated there)."""

from __future__ import annotations

import json
import os
import pwd
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import httpx
import jwt as pyjwt
import pytest

from tests.conftest import free_port, stop_process, wait_until_up
from tests.test_compose import (
    DOCKERFILE,
    command_words,
    dockerfile_environment,
    dockerfile_stages,
    dockerfile_volumes,
)

ROOT = Path(__file__).resolve().parents[2]
# Mapped onto subpackages by pyproject.toml's [tool.setuptools.package-dir].
RESOURCES = {"templates": "identity/_templates", "migrations": "identity/_migrations"}


@dataclass(frozen=True)
class Install:
    wheel: Path
    venv: Path
    site_packages: Path

    def bin(self, name: str) -> str:
        return str(self.venv / "bin" / name)


@dataclass(frozen=True)
class Unprivileged:
    """How to start a process as a user with no write access but to its own files."""

    user: pwd.struct_passwd
    prefix: list[str]
    options: dict[str, Any]


def _wheel_stage_copies() -> Iterator[tuple[list[str], str]]:
    stage = next(s for s in dockerfile_stages() if s[0][1].split()[-1] == "wheel")
    for keyword, arguments in stage:
        if keyword == "COPY":
            words = [word for word in command_words(arguments) if not word.startswith("--")]
            yield words[:-1], words[-1]


def _copy_build_context(destination: Path) -> None:
    """Copy what the Dockerfile's wheel stage copies, with COPY's rules for folders."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for sources, target in _wheel_stage_copies():
        into = destination / target
        for source in sources:
            path = ROOT / source
            if path.is_dir():
                shutil.copytree(path, into, ignore=ignore, dirs_exist_ok=True)
            elif target.endswith("/") or len(sources) > 1:
                into.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, into / path.name)
            else:
                shutil.copy2(path, into)


def _must(command: list[str]) -> str:
    """Run ``command``; its output, or a failure that shows what it printed."""
    result = subprocess.run(command, capture_output=True, text=True, check=False, timeout=180)
    if result.returncode != 0:
        pytest.fail(f"{' '.join(command)} exited with {result.returncode}:\n{result.stderr}")
    return result.stdout.strip()


def _runs(command: list[str], **options: Any) -> bool:
    try:
        result = subprocess.run(command, capture_output=True, check=False, **options)
    except PermissionError:  # the interpreter, or a folder above it, is closed to the user
        return False
    return result.returncode == 0


def _unprivileged(python: str) -> Unprivileged | None:
    """nobody, able to run ``python``; None if that cannot be arranged here."""
    user = pwd.getpwnam("nobody")
    options = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
    if _runs([python, "-c", "pass"], **options):
        return Unprivileged(user, [], options)
    # The interpreter lives where nobody may not look (pyenv under /root, mode 700). Let
    # nobody read and search everything, as a container's user reads the whole image, while
    # writes are still checked against nobody: what this test is about.
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return None
    prefix = [
        setpriv,
        f"--reuid={user.pw_uid}",
        f"--regid={user.pw_gid}",
        "--clear-groups",
        "--inh-caps=+dac_read_search",
        "--ambient-caps=+dac_read_search",
        "--",
    ]
    return Unprivileged(user, prefix, {}) if _runs([*prefix, python, "-c", "pass"]) else None


@pytest.fixture(scope="module")
def installed() -> Iterator[Install]:
    # Not pytest's tmp_path: that is private to this user, and the install must be readable
    # (and not writable) by the unprivileged user.
    top = Path(tempfile.mkdtemp(prefix="identity-wheel-"))
    top.chmod(0o755)
    try:
        build = top / "build"
        _copy_build_context(build)
        wheels = top / "wheels"
        _must([sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(wheels), str(build)])
        (wheel,) = wheels.glob("identity-*.whl")
        venv = top / "venv"
        interpreter = str(getattr(sys, "_base_executable", sys.executable))
        _must([interpreter, "-m", "venv", "--without-pip", str(venv)])
        python = str(venv / "bin" / "python")
        site_packages = Path(
            _must([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"])
        )
        pip = [sys.executable, "-m", "pip", "--python", python]
        _must([*pip, "install", "--no-deps", str(wheel)])
        # Only after the install, so pip never sees (or touches) the suite's editable identity.
        (site_packages / "zz_test_dependencies.pth").write_text(
            sysconfig.get_paths()["purelib"] + "\n", encoding="utf-8"
        )
        yield Install(wheel, venv, site_packages)
    finally:
        shutil.rmtree(top, ignore_errors=True)


def _environment(install: Install, **settings: str) -> dict[str, str]:
    """This process's environment without identity's settings or a path to the checkout."""
    dropped = {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP"}
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("IDENTITY_") and key not in dropped
    }
    env["PATH"] = f"{install.venv / 'bin'}:/usr/local/bin:/usr/bin:/bin"
    return {**env, **settings}


def _serve(
    command: list[str], cwd: Path, env: dict[str, str], url: str, log: Path, **extra: Any
) -> subprocess.Popen[bytes]:
    with log.open("wb") as output:
        process = subprocess.Popen(
            command, cwd=cwd, env=env, stdout=output, stderr=subprocess.STDOUT, **extra
        )
    try:
        wait_until_up(url, process)
    except RuntimeError as error:
        stop_process(process)
        pytest.fail(f"{error}:\n{log.read_text(encoding='utf-8', errors='replace')[-3000:]}")
    return process


def test_the_wheel_carries_every_module_template_and_migration_and_the_license(
    installed: Install,
) -> None:
    with zipfile.ZipFile(installed.wheel) as wheel:
        names = set(wheel.namelist())
        metadata = next(wheel.read(n).decode() for n in names if n.endswith(".dist-info/METADATA"))
    expected = {
        f"identity/{path.relative_to(ROOT / 'identity').as_posix()}"
        for path in (ROOT / "identity").rglob("*.py")
    }
    for folder, package in RESOURCES.items():
        expected |= {
            f"{package}/{path.relative_to(ROOT / folder).as_posix()}"
            for path in (ROOT / folder).rglob("*")
            if path.is_file() and "__pycache__" not in path.parts
        }
    assert sorted(expected - names) == []
    assert any(re.fullmatch(r"identity-[^/]+\.dist-info/licenses/LICENSE", n) for n in names)
    assert "License-Expression: Apache-2.0" in metadata
    assert "License-File: LICENSE" in metadata


def test_the_installed_identity_is_the_wheel_not_the_checkout(
    installed: Install, tmp_path: Path
) -> None:
    found = subprocess.run(
        [
            installed.bin("python"),
            "-c",
            "import json, identity, identity.db, identity.rendering as r; "
            "print(json.dumps([identity.__file__, str(r.TEMPLATES_DIR), "
            "str(identity.db.MIGRATIONS_DIR)]))",
        ],
        cwd=tmp_path,
        env=_environment(installed),
        capture_output=True,
        text=True,
        check=True,
    )
    package, templates, migrations = (Path(p) for p in json.loads(found.stdout))
    assert package.is_relative_to(installed.site_packages)
    assert templates == installed.site_packages / "identity" / "_templates"
    assert migrations == installed.site_packages / "identity" / "_migrations"


def test_the_wheel_serves_discovery_jwks_a_token_and_the_signup_page(
    installed: Install, tmp_path: Path
) -> None:
    folder = tmp_path / "empty"
    folder.mkdir()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = _environment(
        installed,
        IDENTITY_ISSUER=url,
        IDENTITY_DATABASE_URL=f"sqlite:///{folder / 'identity.db'}",
        IDENTITY_KEYS_DIR=str(folder / "keys"),
        IDENTITY_OUTBOX_DIR=str(folder / "outbox"),
        IDENTITY_LOG_LEVEL="warning",
    )
    command = [installed.bin("identity"), "serve", "--host", "127.0.0.1", "--port", str(port)]
    process = _serve(command, folder, env, url, tmp_path / "serve.log")
    try:
        discovery = httpx.get(f"{url}/.well-known/openid-configuration").json()
        assert discovery["issuer"] == url
        jwks = httpx.get(discovery["jwks_uri"]).json()
        assert jwks["keys"] and {key["alg"] for key in jwks["keys"]} == {"RS256"}

        created = subprocess.run(
            [installed.bin("identity"), "clients", "create", "--name", "svc", "--json"],
            cwd=folder,
            env=env,
            capture_output=True,
            check=True,
            timeout=60,
        )
        client = json.loads(created.stdout)
        response = httpx.post(
            discovery["token_endpoint"],
            data={"grant_type": "client_credentials"},
            auth=(client["client_id"], client["client_secret"]),
        )
        assert response.status_code == 200, response.text
        token = response.json()["access_token"]
        kid = pyjwt.get_unverified_header(token)["kid"]
        key = next(pyjwt.PyJWK(k) for k in jwks["keys"] if k["kid"] == kid)
        claims = pyjwt.decode(
            token, key.key, algorithms=["RS256"], audience=client["client_id"], issuer=url
        )
        assert claims["client_id"] == client["client_id"]

        signup = httpx.get(f"{url}/signup")
        assert signup.status_code == 200
        stylesheets = re.findall(r'<link[^>]*href="(/static/[^"]+\.css)"', signup.text)
        assert stylesheets
        for stylesheet in stylesheets:
            served = httpx.get(url + stylesheet)
            assert served.status_code == 200
            assert served.headers["content-type"].startswith("text/css")
    finally:
        stop_process(process)
    assert {path.name for path in folder.iterdir()} <= {
        "identity.db",
        "identity.db-journal",
        "identity.db-wal",
        "identity.db-shm",
        "keys",
        "outbox",
    }


def _image_command_line() -> tuple[list[str], list[str]]:
    """The final stage's ENTRYPOINT + CMD, and its HEALTHCHECK command."""
    final = dockerfile_stages()[-1]
    entrypoint = [command_words(a) for k, a in final if k == "ENTRYPOINT"]
    cmd = [command_words(a) for k, a in final if k == "CMD"]
    health = [a for k, a in final if k == "HEALTHCHECK"]
    assert cmd or entrypoint, f"{DOCKERFILE} has no CMD or ENTRYPOINT"
    healthcheck = command_words(health[-1].split(" CMD ", 1)[1]) if health else []
    return (entrypoint[-1] if entrypoint else []) + (cmd[-1] if cmd else []), healthcheck


def _on_port(words: list[str], port: int) -> list[str]:
    """The command line, listening on ``port`` of the loopback interface only."""
    words = list(words)
    for option, value in (("--port", str(port)), ("--host", "127.0.0.1")):
        if option in words:
            words[words.index(option) + 1] = value
    return words


def test_the_image_command_serves_as_an_unprivileged_user_from_a_read_only_folder(
    installed: Install,
) -> None:
    """What `docker run` does: the image's command, its ENV with the data volume mapped onto a
    folder, as a user that can write only there (nobody, when the tests run as root)."""
    final = dockerfile_stages()[-1]
    (volume,) = dockerfile_volumes(final)
    command, healthcheck = _image_command_line()
    assert "8000" in command, "the test moves the image's port 8000 to a free one"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    top = Path(tempfile.mkdtemp(prefix="identity-container-"))
    try:
        top.chmod(0o755)
        data = top / "data"  # the volume: writable by the user
        data.mkdir(mode=0o700)
        workdir = top / "workdir"  # the working directory: not writable by the user
        workdir.mkdir()
        prefix: list[str] = []
        options: dict[str, Any] = {}
        owner = os.geteuid()
        if owner == 0:
            user = _unprivileged(installed.bin("python"))
            if user is None:
                pytest.skip("cannot run the venv's interpreter as nobody here")
            prefix, options = user.prefix, user.options
            os.chown(data, user.user.pw_uid, user.user.pw_gid)
            owner = user.user.pw_uid
        else:
            workdir.chmod(0o555)  # this user's own folder: take the write permission away
        env = _environment(
            installed,
            **{
                name: value.replace(volume, str(data))
                for name, value in dockerfile_environment(final).items()
            },
        )
        log = top / "serve.log"
        process = _serve([*prefix, *_on_port(command, port)], workdir, env, url, log, **options)
        try:
            assert httpx.get(f"{url}/healthz").status_code == 200
            assert httpx.get(f"{url}/.well-known/jwks.json").json()["keys"]
            if healthcheck:
                probe = [word.replace(":8000/", f":{port}/") for word in healthcheck]
                checked = subprocess.run(
                    probe, cwd=workdir, env=env, capture_output=True, check=False, timeout=30
                )
                assert checked.returncode == 0, checked.stderr
        finally:
            stop_process(process)
        assert list(workdir.iterdir()) == []
        assert (data / "keys").is_dir()
        assert (data / "keys").stat().st_uid == owner, "the server did not run as the user"
        written = {PurePosixPath(p.relative_to(data)).parts[0] for p in data.iterdir()}
        assert "keys" in written
        assert any(name.startswith("identity.db") for name in written), written
    finally:
        shutil.rmtree(top, ignore_errors=True)
