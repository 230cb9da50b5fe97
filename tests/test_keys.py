"""Signing keys: first start, rotation, retirement, reload, JWKS contents."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from identity.config import Settings
from identity.keys import KeyStore, KeyStoreError

PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"}


class Clock:
    def __init__(self, now: float = 2_000_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _store(directory: Path, clock: Clock | None = None) -> KeyStore:
    return KeyStore(directory, max_token_ttl=600, reload_seconds=0, clock=clock or Clock())


def test_first_start_makes_one_active_and_one_next_key_in_private_files(tmp_path: Path) -> None:
    store = _store(tmp_path / "keys")
    assert store.ensure() is True
    assert store.ensure() is False
    states = sorted(r.state for r in store.records())
    assert states == ["active", "next"]
    for record in store.records():
        mode = stat.S_IMODE((tmp_path / "keys" / f"{record.kid}.pem").stat().st_mode)
        assert mode == 0o600
    assert stat.S_IMODE((tmp_path / "keys").stat().st_mode) == 0o700


@pytest.mark.system
def test_four_workers_starting_at_once_make_exactly_one_key_set(tmp_path: Path) -> None:
    directory = tmp_path / "keys"
    script = (
        "import sys; from identity.keys import KeyStore; "
        "print(KeyStore(sys.argv[1], max_token_ttl=600).ensure())"
    )
    workers = [
        subprocess.Popen([sys.executable, "-c", script, str(directory)], stdout=subprocess.PIPE)
        for _ in range(4)
    ]
    created = [w.communicate(timeout=60)[0].decode().strip() for w in workers]
    assert sorted(created) == ["False", "False", "False", "True"]
    assert len(list(directory.glob("*.pem"))) == 2
    manifest = json.loads((directory / "manifest.json").read_text())
    assert sorted(k["state"] for k in manifest["keys"]) == ["active", "next"]


def test_jwks_publishes_public_members_only(tmp_path: Path) -> None:
    store = _store(tmp_path)
    store.ensure()
    keys = json.loads(store.ring().jwks_body)["keys"]
    assert len(keys) == 2
    for key in keys:
        assert key["kty"] == "RSA" and key["alg"] == "RS256" and key["use"] == "sig"
        assert not PRIVATE_MEMBERS.intersection(key)


def test_rotation_signs_with_the_key_that_was_already_published(tmp_path: Path) -> None:
    store = _store(tmp_path)
    store.ensure()
    before = store.ring()
    next_kid = next(r.kid for r in store.records() if r.state == "next")
    promoted = store.rotate()
    after = store.ring()
    assert promoted.kid == next_kid
    assert after.signing_kid == next_kid != before.signing_kid
    published = {k["kid"] for k in after.jwks["keys"]}
    # old (retired), current, and a fresh next key
    assert before.signing_kid in published and next_kid in published and len(published) == 3


def test_retired_key_leaves_jwks_only_after_its_last_token_expired(tmp_path: Path) -> None:
    clock = Clock()
    store = _store(tmp_path, clock)
    store.ensure()
    old_kid = store.ring().signing_kid
    store.rotate()
    # 600 s tokens + 0 s reload + 60 s leeway: published through second 660 after retiring
    clock.now += 659
    assert old_kid in {k["kid"] for k in store.ring().jwks["keys"]}
    clock.now += 2
    assert old_kid not in {k["kid"] for k in store.ring().jwks["keys"]}


def test_retire_deletes_only_keys_past_their_grace(tmp_path: Path) -> None:
    clock = Clock()
    store = _store(tmp_path, clock)
    store.ensure()
    old_kid = store.ring().signing_kid
    store.rotate()
    assert store.retire() == []
    with pytest.raises(KeyStoreError, match="live tokens"):
        store.retire(old_kid)
    clock.now += 661
    assert store.retire() == [old_kid]
    assert not (tmp_path / f"{old_kid}.pem").exists()
    assert old_kid not in {r.kid for r in store.records()}


def test_forced_retire_drops_a_compromised_key_at_once(tmp_path: Path) -> None:
    store = _store(tmp_path)
    store.ensure()
    old_kid = store.ring().signing_kid
    store.rotate()
    assert store.retire(old_kid, force=True) == [old_kid]
    assert old_kid not in {k["kid"] for k in store.ring().jwks["keys"]}


def test_active_key_cannot_be_retired(tmp_path: Path) -> None:
    store = _store(tmp_path)
    store.ensure()
    with pytest.raises(KeyStoreError, match="active"):
        store.retire(store.ring().signing_kid, force=True)


def test_running_server_picks_up_a_rotation_and_old_tokens_stay_valid(
    tmp_path: Path,
    settings_for: Callable[..., Settings],
    app_for: Callable[[Settings], TestClient],
    make_client: Callable[..., tuple[str, str | None]],
) -> None:
    settings = settings_for(keys_dir=tmp_path / "keys", keys_reload_seconds=0.0)
    http = app_for(settings)
    client = make_client()

    def token() -> str:
        response = http.post(
            "/oauth2/token", data={"grant_type": "client_credentials"}, auth=client
        )  # type: ignore[arg-type]
        return str(response.json()["access_token"])

    import jwt as pyjwt

    old = token()
    old_kid = pyjwt.get_unverified_header(old)["kid"]
    # Another process (the CLI) rotates the shared folder.
    KeyStore(tmp_path / "keys", max_token_ttl=600).rotate()
    new = token()
    new_kid = pyjwt.get_unverified_header(new)["kid"]
    assert new_kid != old_kid
    jwks_kids = {k["kid"] for k in http.get("/.well-known/jwks.json").json()["keys"]}
    assert {old_kid, new_kid} <= jwks_kids
    for value in (old, new):
        body = http.post("/oauth2/introspect", data={"token": value}, auth=client).json()  # type: ignore[arg-type]
        assert body["active"] is True


def test_a_broken_key_folder_keeps_the_running_key_set(tmp_path: Path) -> None:
    store = _store(tmp_path)
    store.ensure()
    kid = store.ring().signing_kid
    (tmp_path / "manifest.json").write_text("{ not json")
    assert store.ring().signing_kid == kid


def test_a_complete_key_set_is_read_without_taking_the_lock(tmp_path: Path) -> None:
    # A mounted secret is read-only: reading must not need the lock file the writers use.
    _store(tmp_path).ensure()
    (tmp_path / ".lock").unlink()
    store = _store(tmp_path)
    assert store.ensure() is False
    assert store.ring().signing_kid
    assert not (tmp_path / ".lock").exists()


def test_a_keys_dir_that_is_a_file_is_named_in_the_error(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text("not a folder")
    for operation in (_store(path).ensure, _store(path).rotate):
        with pytest.raises(KeyStoreError, match=f"{path} .*is a file, not a folder"):
            operation()


def test_a_key_file_missing_at_start_is_one_error_naming_the_folder(tmp_path: Path) -> None:
    store = _store(tmp_path)
    store.ensure()
    (tmp_path / f"{store.ring().signing_kid}.pem").unlink()
    with pytest.raises(KeyStoreError, match=f"keys in {tmp_path} cannot be loaded"):
        _store(tmp_path).ring()
