"""The README's walk-throughs and resource-server snippet work as printed: the text between
its markers runs as it is, only pointed at the test's server."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from identity.db import Database
from tests.conftest import free_port, run_cli, served_environment, stop_process, wait_until_up

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()
# Where the README's reader has the server: the one thing a test must point elsewhere.
README_ADDRESS = "http://localhost:8000"
# Every block of the README between markers, and the test that runs it.
TESTED_BLOCKS = {"walkthrough", "api-walkthrough", "admin-walkthrough", "resource-server"}


def _block(name: str, language: str = "bash") -> str:
    """The text of every ``language`` block between the ``name`` markers, in order."""
    marked = re.search(rf"<!-- {name}:start -->\n(.*?)<!-- {name}:end -->", README, re.DOTALL)
    assert marked, f"README block {name} is missing"
    blocks = re.findall(rf"```{language}\n(.*?)```", marked.group(1), re.DOTALL)
    assert blocks, f"README block {name} has no {language} code"
    return "\n".join(blocks)


def _run_as_printed(script: str, url: str, env: dict[str, str], folder: Path) -> str:
    """Run ``script`` as a reader pastes it, in ``folder``, against the server at ``url``.

    Only the address changes: ``.venv/bin/identity`` is there, as in the reader's checkout."""
    assert README_ADDRESS in script
    venv_bin = folder / ".venv" / "bin"
    venv_bin.mkdir(parents=True)
    (venv_bin / "identity").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m identity "$@"\n')
    (venv_bin / "identity").chmod(0o755)
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script.replace(README_ADDRESS, url)],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_every_marked_block_of_the_readme_is_run_by_a_test() -> None:
    assert set(re.findall(r"<!-- ([\w-]+):start -->", README)) == TESTED_BLOCKS


def test_curl_walkthrough_runs_as_printed(
    served: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    url, env = served
    output = _run_as_printed(_block("walkthrough"), url, env, tmp_path)
    token, introspected, revoked, introspected_again = output.strip().split("\n")
    assert '"access_token"' in token
    assert '"active":true' in introspected
    assert '"aud":"https://billing.example.com"' in introspected
    assert revoked == "{}"
    assert introspected_again == '{"active":false}'


def test_admin_walkthrough_runs_as_printed(
    served: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    url, env = served
    output = _run_as_printed(_block("admin-walkthrough"), url, env, tmp_path)
    role_answer, listed = output.strip().split("\n")
    assert role_answer == "204"
    users = json.loads(listed)["users"]
    assert [user["email"] for user in users] == ["grace@example.com"]
    assert users[0]["email_verified"] is True
    shown = run_cli(env, "users", "roles", "list", "grace@example.com")
    assert shown == {"roles": ["app1:editor"]}


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
    snippet = _block("resource-server", "python").replace(README_ADDRESS, url)
    exec(snippet, namespace)  # noqa: S102
    claims = namespace["validate"](token, "https://api.example.com")
    assert claims["client_id"] == client["client_id"]


def test_resource_server_snippet_checks_a_role_of_a_user_token(
    database: Database,
    database_url: str,
    redis_url: str | None,
    redis_prefix: str,
    tmp_path: Path,
) -> None:
    """A user's token asked with the ``roles`` scope carries the roles the operator gave,
    limited by the client's prefixes, and the README's ``require_role`` reads them."""
    port = free_port()
    env = served_environment(
        database_url, redis_url, f"{redis_prefix}roles:", tmp_path / "keys", port
    )
    env["IDENTITY_PASSWORD_GRANT"] = "on"
    server = subprocess.Popen(
        [sys.executable, "-m", "identity", "serve", "--port", str(port)], env=env
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(url, server)
        app = run_cli(
            env, "clients", "create", "--name", "app1", "--first-party",
            "--grant-type", "password", "--scope", "openid roles",
            "--audience", "https://api.example.com", "--role-prefix", "app1:",
        )  # fmt: skip
        run_cli(env, "users", "create", "--email", "ed@example.com", "--password",
                "correct horse battery staple", "--verified")  # fmt: skip
        for role in ("app1:editor", "app2:viewer"):
            run_cli(env, "users", "roles", "add", "ed@example.com", role)
        answer = httpx.post(
            f"{url}/oauth2/token",
            data={
                "grant_type": "password",
                "username": "ed@example.com",
                "password": "correct horse battery staple",
                "scope": "openid roles",
            },
            auth=(app["client_id"], app["client_secret"]),
        )
        assert answer.status_code == 200, answer.text
        namespace: dict[str, Any] = {}
        exec(_block("resource-server", "python").replace(README_ADDRESS, url), namespace)  # noqa: S102
        claims = namespace["validate"](answer.json()["access_token"], "https://api.example.com")
    finally:
        stop_process(server)
    assert claims["roles"] == ["app1:editor"]  # app2's role is not app1's business
    namespace["require_role"](claims, "app1:editor")
    with pytest.raises(PermissionError):
        namespace["require_role"](claims, "app2:viewer")


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
    # As the README starts it: the issuer follows the port, mail goes to outbox/ here.
    del env["IDENTITY_ISSUER"]
    env["IDENTITY_PASSWORD_GRANT"] = "on"
    server = subprocess.Popen(
        [sys.executable, "-m", "identity", "serve", "--port", str(port)], env=env, cwd=tmp_path
    )
    url = f"http://localhost:{port}"
    try:
        wait_until_up(f"http://127.0.0.1:{port}", server)
        output = _run_as_printed(_block("api-walkthrough"), url, env, tmp_path)
    finally:
        stop_process(server)
    lines = output.strip().split("\n")
    assert lines[0] == '{"status":"check_email"}'
    assert lines[1] == '{"status":"verified"}'
    assert '"email":"ada@example.com"' in lines[2]
    assert '"name":"Ada Lovelace"' in lines[3]
    assert lines[4:] == ["204", "401"]
