"""The identity command: --json output, one-line errors, non-zero exits."""

from __future__ import annotations

import json

import pytest

from identity.protocol.clients import new_client_id
from tests.conftest import run_main as _run


def test_clients_create_prints_the_secret_once(
    env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = _run(capsys, "clients", "create", "--name", "svc", "--scope", "read", "--json")
    created = json.loads(out)
    assert code == 0 and len(created["client_secret"]) >= 43
    code, out, _ = _run(capsys, "clients", "show", created["client_id"], "--json")
    shown = json.loads(out)
    assert code == 0 and shown["scope"] == "read"
    assert "client_secret" not in shown and created["client_secret"] not in out
    code, out, _ = _run(capsys, "clients", "list", "--json")
    assert [c["client_id"] for c in json.loads(out)] == [created["client_id"]]


def test_clients_delete_removes_the_client(env: None, capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = _run(capsys, "clients", "create", "--name", "svc", "--json")
    client_id = json.loads(out)["client_id"]
    assert _run(capsys, "clients", "delete", client_id, "--json")[0] == 0
    code, _, err = _run(capsys, "clients", "show", client_id)
    assert code == 2 and err.startswith("identity: error:") and err.count("\n") == 1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--redirect-uri", "javascript:alert(1)"], "forbidden"),
        (["--redirect-uri", "data:text/html,x"], "forbidden"),
        (["--redirect-uri", "https://app.example.com/cb#frag"], "fragment"),
        (["--redirect-uri", "http://app.example.com/cb"], "plain http"),
        (["--public", "--grant-type", "client_credentials"], "public client"),
        (["--grant-type", "password"], "first-party"),
        (["--scope", 'bad"scope'], "scope"),
        (["--audience", "not a uri"], "audience"),
    ],
)
def test_bad_client_definitions_are_refused_with_one_line(
    env: None, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code, out, err = _run(capsys, "clients", "create", "--name", "x", *argv)
    assert code == 2 and out == ""
    assert message in err and err.count("\n") == 1


def test_loopback_http_and_private_use_redirects_are_accepted(
    env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = _run(
        capsys,
        "clients",
        "create",
        "--name",
        "native",
        "--public",
        "--redirect-uri",
        "http://127.0.0.1/callback",
        "--redirect-uri",
        "com.example.app:/callback",
        "--json",
    )
    assert code == 0 and json.loads(out)["client_secret"] is None


def test_keys_list_and_rotate(env: None, capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = _run(capsys, "keys", "list", "--json")
    before = {k["state"]: k["kid"] for k in json.loads(out)}
    code, out, _ = _run(capsys, "keys", "rotate", "--json")
    assert code == 0 and json.loads(out)["kid"] == before["next"]
    _, out, _ = _run(capsys, "keys", "list", "--json")
    states = {k["kid"]: k["state"] for k in json.loads(out)}
    assert states[before["active"]] == "retired" and states[before["next"]] == "active"


def test_keys_retire_refuses_a_key_that_may_still_verify(
    env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    _, out, _ = _run(capsys, "keys", "list", "--json")
    active = next(k["kid"] for k in json.loads(out) if k["state"] == "active")
    _run(capsys, "keys", "rotate")
    code, _, err = _run(capsys, "keys", "retire", "--kid", active)
    assert code == 2 and "--force" in err


@pytest.mark.parametrize("form", ["separate", "joined"])
def test_keys_retire_takes_a_kid_that_starts_with_a_dash(
    env: None, capsys: pytest.CaptureFixture[str], form: str
) -> None:
    # Thumbprints are base64url: one key in 64 has a kid that looks like an option.
    kid = "-BlWXOzZjLL8BaDeDHOECE8Ko_ozYAzQenrTdMPUx5w"
    words = ["--kid", kid] if form == "separate" else [f"--kid={kid}"]
    code, _, err = _run(capsys, "keys", "retire", *words)
    assert code == 2 and kid in err  # an unknown key, named: not an argparse usage error
    assert "expected one argument" not in err


def test_bad_setting_is_a_one_line_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("IDENTITY_ACCESS_TOKEN_TTL", "soon")
    code, _, err = _run(capsys, "clients", "list")
    assert code == 2 and "IDENTITY_ACCESS_TOKEN_TTL" in err and err.count("\n") == 1


def test_unknown_option_is_one_line_and_exits_non_zero(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = _run(capsys, "clients", "create", "--name", "x", "--nmae", "y")
    assert code == 2 and out == "" and err.count("\n") == 1
    assert "unrecognized arguments: --nmae" in err and "--help" in err


def test_client_ids_never_start_with_a_dash_so_the_cli_can_take_them() -> None:
    ids = [new_client_id() for _ in range(2000)]  # ~31 would start with "-" by chance
    assert not [i for i in ids if i.startswith("-")]
    assert len(set(ids)) == len(ids) and all(len(i) == 24 for i in ids)
