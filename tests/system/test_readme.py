"""The README's walk-through and resource-server snippet work as printed."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from identity.db import Database
from tests.conftest import free_port, run_cli, served_environment, stop_process, wait_until_up

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def _block(name: str) -> str:
    match = re.search(
        rf"<!-- {name}:start -->\n```\w+\n(.*?)```\n<!-- {name}:end -->", README, re.DOTALL
    )
    assert match, f"README block {name} is missing"
    return match.group(1)


def test_curl_walkthrough_runs_as_printed(
    served: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    url, env = served
    # Only the server's address and the venv's path differ from what a reader types.
    script = _block("walkthrough").replace("http://127.0.0.1:8000", url)
    script = script.replace(".venv/bin/identity", f"{sys.executable} -m identity")
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    token, introspected, revoked, introspected_again = result.stdout.strip().split("\n")
    assert '"access_token"' in token
    assert '"active":true' in introspected
    assert '"aud":"https://billing.example.com"' in introspected
    assert revoked == "{}"
    assert introspected_again == '{"active":false}'


def test_resource_server_snippet_validates_a_real_token(
    served: tuple[str, dict[str, str]],
) -> None:
    url, env = served
    client = run_cli(
        env, "clients", "create", "--name", "svc", "--audience", "https://api.example.com"
    )
    token = httpx.post(
        f"{url}/oauth2/token",
        data={"grant_type": "client_credentials"},
        auth=(client["client_id"], client["client_secret"]),
    ).json()["access_token"]
    namespace: dict[str, Any] = {}
    exec(_block("resource-server").replace("http://127.0.0.1:8000", url), namespace)  # noqa: S102
    claims = namespace["validate"](token, "https://api.example.com")
    assert claims["client_id"] == client["client_id"]


def test_api_walkthrough_runs_as_printed(
    database: Database,
    database_url: str,
    redis_url: str | None,
    redis_prefix: str,
    tmp_path: Path,
) -> None:
    port = free_port()
    env = served_environment(
        database_url, redis_url, f"{redis_prefix}api:", tmp_path / "keys", port
    )
    env["IDENTITY_PASSWORD_GRANT"] = "on"
    server = subprocess.Popen(
        [sys.executable, "-m", "identity", "serve", "--port", str(port)], env=env, cwd=tmp_path
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(url, server)
        script = _block("api-walkthrough").replace("http://127.0.0.1:8000", url)
        script = script.replace(".venv/bin/identity", f"{sys.executable} -m identity")
        # The verification mail is sent by the server's background sender: give it a moment.
        script = script.replace("# Verify with", "sleep 2\n# Verify with", 1)
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        stop_process(server)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().split("\n")
    assert lines[0] == '{"status":"check_email"}'
    assert lines[1] == '{"status":"verified"}'
    assert '"email":"ada@example.com"' in lines[2]
    assert '"name":"Ada Lovelace"' in lines[3]
    assert lines[4:] == ["204", "401"]
