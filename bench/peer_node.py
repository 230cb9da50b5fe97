"""``--peer``: node-oidc-provider, installed with npm and run with ``peer_provider.mjs``."""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
from pathlib import Path

from bench.peer_pin import SERVER_CORE, pinned
from bench.procs import Processes, free_port, wait_ready
from bench.provision import Client

PACKAGE = "oidc-provider"
MAJOR = 9
SCRIPT = Path(__file__).resolve().parent / "peer_provider.mjs"
CLIENT_ID = "peer-bench"
# The resources peer_provider.mjs serves: client_credentials tokens for the first are RS256
# JWTs (its default resource), for the second opaque (those are what it introspects).
JWT_RESOURCE = "https://api.example.test/"
OPAQUE_RESOURCE = "https://opaque.example.test/"


def node() -> str:
    found = shutil.which("node")
    if found is None:
        raise RuntimeError("node is missing (Debian package nodejs)")
    return found


def node_version() -> str:
    done = subprocess.run([node(), "--version"], capture_output=True, text=True, check=True)  # noqa: S603
    return done.stdout.strip()


def installed_version(prefix: Path) -> str | None:
    """The version of oidc-provider installed under ``prefix``, if any."""
    manifest = prefix / "node_modules" / PACKAGE / "package.json"
    try:
        version: str = json.loads(manifest.read_text())["version"]
    except (OSError, ValueError, KeyError):
        return None
    return version


def install_command(npm: str, prefix: Path) -> list[str]:
    return [npm, "install", "--prefix", str(prefix), "--no-audit", "--no-fund",
            f"{PACKAGE}@{MAJOR}"]  # fmt: skip


def ensure_provider(prefix: Path) -> tuple[Path, str]:
    """oidc-provider@9 under ``prefix`` (installed with npm unless a 9.x is there already):
    its package folder and version."""
    version = installed_version(prefix)
    if version is None or not version.startswith(f"{MAJOR}."):
        npm = shutil.which("npm")
        if npm is None:
            raise RuntimeError("npm is missing (Debian package npm)")
        prefix.mkdir(parents=True, exist_ok=True)
        print(f"installing {PACKAGE}@{MAJOR} into {prefix} with npm", flush=True)
        subprocess.run(install_command(npm, prefix), check=True)  # noqa: S603
        version = installed_version(prefix)
        if version is None:
            raise RuntimeError(f"npm install {PACKAGE}@{MAJOR} left no {PACKAGE} in {prefix}")
    return prefix / "node_modules" / PACKAGE, version


def peer_client() -> Client:
    return Client(CLIENT_ID, secrets.token_urlsafe(32))


def peer_command(node_path: str, package_dir: Path, port: int) -> list[str]:
    """The peer, on the server core."""
    return pinned([node_path, str(SCRIPT), str(package_dir), str(port)], SERVER_CORE)


def start_peer(
    processes: Processes, package_dir: Path, client: Client, log: Path
) -> tuple[subprocess.Popen[bytes], str]:
    """node-oidc-provider on a free loopback port, pinned; its process and issuer."""
    port = free_port()
    env = {"PEER_CLIENT_ID": client.client_id, "PEER_CLIENT_SECRET": client.client_secret}
    process = processes.start(peer_command(node(), package_dir, port), env=env, log=log)
    base = f"http://127.0.0.1:{port}"
    wait_ready(f"{base}/.well-known/openid-configuration", process, log=log)
    return process, base
