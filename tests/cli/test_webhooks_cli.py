"""identity webhooks add|list|show|remove|rotate-secret|enable|disable|deliveries|redeliver:
what operators type and see (the secret once, never again), one-line errors, and an event of
another command (``identity users create``) reaching a receiver, signed."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from identity.config import Settings
from identity.db import Database
from identity.secret_box import SecretBox
from identity.webhook_delivery import WebhookSender
from tests.conftest import remember_secret
from tests.conftest import run_main as _run
from tests.loops import run_in_own_loop
from tests.test_webhook_delivery import Receiver
from tests.web_helpers import PASSWORD


@pytest.fixture
def operator(env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """An operator's shell on a development machine: private receivers allowed."""
    monkeypatch.setenv("IDENTITY_WEBHOOKS_ALLOW_PRIVATE", "1")


@pytest.fixture
def receiver() -> Any:
    with Receiver() as running:
        yield running


def _json(capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
    code, out, err = _run(capsys, "webhooks", *argv, "--json")
    assert code == 0, err
    return json.loads(out)


def _add(capsys: pytest.CaptureFixture[str], url: str, events: str = "user.*") -> dict[str, Any]:
    added = dict(_json(capsys, "add", "--url", url, "--events", events))
    remember_secret(added["secret"])
    return added


def _error(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    code, out, err = _run(capsys, "webhooks", *argv)
    assert code == 2 and out == ""
    assert err.startswith("identity: error: ") and err.count("\n") == 1, err
    return err


def test_add_prints_the_secret_once_and_nothing_shows_it_again(
    operator: None, capsys: pytest.CaptureFixture[str], receiver: Receiver
) -> None:
    added = _add(capsys, receiver.url, "user.created user.*")
    assert set(added) == {"id", "url", "events", "secret"}
    assert added["secret"].startswith("whsec_") and added["events"] == ["user.created", "user.*"]
    listed = _json(capsys, "list")
    shown = _json(capsys, "show", added["id"])
    code, text, _ = _run(capsys, "webhooks", "list")
    assert code == 0 and added["id"] in text
    assert [row["id"] for row in listed] == [added["id"]] and shown["url"] == receiver.url
    for output in (json.dumps(listed), json.dumps(shown), text):
        assert added["secret"] not in output


def test_add_in_text_says_the_secret_is_shown_once(
    operator: None, capsys: pytest.CaptureFixture[str], receiver: Receiver
) -> None:
    code, out, _ = _run(capsys, "webhooks", "add", "--url", receiver.url, "--events", "*")
    secret = out.split("secret: ")[1].split()[0]
    remember_secret(secret)
    assert code == 0 and secret.startswith("whsec_") and "shown once" in out


def test_rotate_disable_enable_and_remove(
    operator: None, capsys: pytest.CaptureFixture[str], receiver: Receiver
) -> None:
    added = _add(capsys, receiver.url)
    rotated = _json(capsys, "rotate-secret", added["id"], "--overlap", "2h")
    remember_secret(rotated["secret"])
    assert rotated["secret"] != added["secret"] and rotated["previous_secret_until"]
    at_once = _json(capsys, "rotate-secret", added["id"], "--overlap", "0")
    remember_secret(at_once["secret"])
    assert at_once["previous_secret_until"] is None
    disabled = _json(capsys, "disable", added["id"])
    assert not disabled["enabled"] and disabled["disabled_reason"] == "disabled by an operator"
    assert _json(capsys, "enable", added["id"])["enabled"]
    assert _json(capsys, "remove", added["id"]) == {"removed": added["id"]}
    assert _json(capsys, "list") == []


def test_mistakes_are_one_line_errors(
    env: None, capsys: pytest.CaptureFixture[str], receiver: Receiver
) -> None:
    # Without IDENTITY_WEBHOOKS_ALLOW_PRIVATE: the local receiver is refused.
    assert "IDENTITY_WEBHOOKS_ALLOW_PRIVATE" in _error(
        capsys, "add", "--url", receiver.url, "--events", "*"
    )
    assert "not a public address" in _error(
        capsys, "add", "--url", "https://127.0.0.1/hook", "--events", "*"
    )
    assert "unknown event 'user.exploded'" in _error(
        capsys, "add", "--url", "https://127.0.0.1/hook", "--events", "user.exploded"
    )
    assert "no webhook endpoint 'wh_nope'" in _error(capsys, "show", "wh_nope")
    assert "no webhook endpoint" in _error(capsys, "rotate-secret", "wh_nope")
    assert "--overlap" in _error(capsys, "rotate-secret", "wh_nope", "--overlap", "soon")
    assert "no webhook delivery 7" in _error(capsys, "redeliver", "7")


def test_a_user_created_on_the_command_line_reaches_the_receiver(
    operator: None,
    capsys: pytest.CaptureFixture[str],
    receiver: Receiver,
    database: Database,
    settings_for: Any,
) -> None:
    added = _add(capsys, receiver.url)
    code, out, err = _run(
        capsys, "users", "create", "--email", "kim@example.com", "--name", "Kim",
        "--password", PASSWORD, "--verified", "--json",
    )  # fmt: skip
    assert code == 0, err
    user_id = json.loads(out)["id"]
    # The running server's sender, with the key the commands used.
    settings: Settings = settings_for(webhooks_allow_private=True)
    box = SecretBox.from_sources(None, Path(os.environ["IDENTITY_KEYS_DIR"]))
    sender = WebhookSender(database, settings, box)
    sender.dispatch()
    assert run_in_own_loop(lambda: sender.deliver_due()) == 1
    message = receiver.verified(added["secret"])
    assert message["type"] == "user.created"
    assert message["data"] == {"id": user_id, "email": "kim@example.com"}
    deliveries = _json(capsys, "deliveries", added["id"])
    assert [(d["event_type"], d["status"], d["last_status_code"]) for d in deliveries] == [
        ("user.created", "delivered", 204)
    ]
    assert _json(capsys, "redeliver", str(deliveries[0]["id"])) == {
        "redelivered": deliveries[0]["id"]
    }
    sender.dispatch()
    assert run_in_own_loop(lambda: sender.deliver_due()) == 1
    assert receiver.verified(added["secret"]) == message
