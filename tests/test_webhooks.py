"""Webhook endpoints: the management rules (secrets shown once, never described or audited),
the URL and address policy, event patterns, and which audit events become webhook events."""

from __future__ import annotations

import ipaddress
import json
import uuid
from collections.abc import Sequence
from datetime import timedelta

import pytest
import standardwebhooks
from sqlalchemy import select

from identity import audit, repositories, webhook_events, webhooks
from identity.admin_models import WebhookEvent
from identity.audit import RequestContext
from identity.db import Database
from identity.models import AuditEvent, utcnow
from identity.secret_box import SecretBox, new_key
from identity.webhook_events import EndpointPresence, matches, published_type
from tests.conftest import remember_secret

_CLI = RequestContext.command_line()
_PUBLIC = "93.184.215.14"


def public(host: str, port: int) -> Sequence[str]:
    return [_PUBLIC]


@pytest.fixture
def box() -> SecretBox:
    return SecretBox([new_key()])


def add(
    database: Database,
    box: SecretBox,
    url: str = "https://hooks.example.com/in",
    events: Sequence[str] = ("user.*",),
    allow_private: bool = False,
) -> webhooks.NewEndpoint:
    with database.transaction() as session:
        added = webhooks.add_endpoint(
            session,
            box,
            url=url,
            events=events,
            allow_private=allow_private,
            actor="admin",
            context=_CLI,
            resolve=public,
        )
    remember_secret(added.secret)
    return added


# -- adding and describing ---------------------------------------------------------------------


def test_an_added_endpoint_has_a_standard_secret_shown_only_then(
    database: Database, box: SecretBox
) -> None:
    added = add(database, box, events=["user.created user.*", "login.failed"])
    assert added.secret.startswith("whsec_")
    standardwebhooks.Webhook(added.secret)  # a secret the receivers' library takes
    assert added.endpoint.id.startswith("wh_")
    with database.transaction() as session:
        stored = webhooks.get_endpoint(session, added.endpoint.id)
        described = webhooks.describe_endpoint(stored)
        listed = [webhooks.describe_endpoint(e) for e in webhooks.list_endpoints(session)]
        assert box.open(stored.secret_sealed) == added.secret
        assert added.secret not in stored.secret_sealed
    assert described["events"] == ["user.created", "user.*", "login.failed"]
    assert described["url"] == "https://hooks.example.com/in" and described["enabled"]
    assert listed == [described]
    shown = json.dumps(described)
    assert added.secret not in shown and "secret_sealed" not in shown
    assert added.secret.removeprefix("whsec_") not in shown


def test_every_change_is_audited_without_the_secret(database: Database, box: SecretBox) -> None:
    added = add(database, box)
    endpoint_id = added.endpoint.id
    with database.transaction() as session:
        rotated = webhooks.rotate_secret(
            session, box, endpoint_id, overlap=timedelta(hours=1), actor="admin", context=_CLI
        )
        webhooks.set_enabled(session, endpoint_id, False, actor="admin", context=_CLI)
        webhooks.set_enabled(session, endpoint_id, True, actor="admin", context=_CLI)
        webhooks.remove_endpoint(session, endpoint_id, actor="admin", context=_CLI)
    remember_secret(rotated)
    with database.transaction() as session:
        rows = session.scalars(
            select(AuditEvent).where(AuditEvent.subject == endpoint_id).order_by(AuditEvent.id)
        ).all()
        written = json.dumps([audit.as_dict(row) for row in rows])
        assert repositories.count_webhook_events(session) == 0  # none of these is an event
    assert [row.type for row in rows] == [
        "webhook.added",
        "webhook.secret_rotated",
        "webhook.disabled",
        "webhook.enabled",
        "webhook.removed",
    ]
    assert {row.actor for row in rows} == {"admin"}
    assert added.secret not in written and rotated not in written


def test_a_rotation_keeps_the_old_secret_for_the_overlap_only(
    database: Database, box: SecretBox
) -> None:
    added = add(database, box)
    now = utcnow()
    with database.transaction() as session:
        webhooks.rotate_secret(
            session,
            box,
            added.endpoint.id,
            overlap=timedelta(hours=24),
            actor="admin",
            context=_CLI,
            now=now,
        )
        endpoint = webhooks.get_endpoint(session, added.endpoint.id)
        assert endpoint.previous_secret_sealed is not None
        assert box.open(endpoint.previous_secret_sealed) == added.secret
        assert endpoint.previous_secret_until == now + timedelta(hours=24)
        newest = webhooks.rotate_secret(
            session, box, added.endpoint.id, overlap=timedelta(0), actor="admin", context=_CLI
        )
        remember_secret(newest)
        assert endpoint.previous_secret_sealed is None and endpoint.previous_secret_until is None
        with pytest.raises(webhooks.WebhookError, match="overlap"):
            webhooks.rotate_secret(
                session, box, added.endpoint.id, overlap=timedelta(days=31), actor="a", context=_CLI
            )


def test_unknown_endpoints_and_deliveries_are_lookup_errors(database: Database) -> None:
    with database.transaction() as session:
        with pytest.raises(LookupError):
            webhooks.get_endpoint(session, "wh_missing")
        with pytest.raises(LookupError):
            webhooks.remove_endpoint(session, "wh_missing", actor="admin", context=_CLI)
        with pytest.raises(LookupError):
            webhooks.recent_deliveries(session, "wh_missing")
        with pytest.raises(LookupError):
            webhooks.redeliver(session, 404, actor="admin", context=_CLI)


def test_an_operator_disabling_an_endpoint_says_so(database: Database, box: SecretBox) -> None:
    added = add(database, box)
    with database.transaction() as session:
        endpoint = webhooks.set_enabled(
            session, added.endpoint.id, False, actor="admin", context=_CLI
        )
        assert webhooks.describe_endpoint(endpoint)["disabled_reason"] == "disabled by an operator"
        endpoint = webhooks.set_enabled(
            session, added.endpoint.id, True, actor="admin", context=_CLI
        )
        assert endpoint.disabled_reason is None


# -- the URL and address policy ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://hooks.example.com/in", "must start with https://"),
        ("ftp://hooks.example.com/in", "must start with https://"),
        ("https:///in", "no host"),
        ("https://user:pass@hooks.example.com/in", "no user name or password"),
        ("https://hooks.example.com/in#part", "no #fragment"),
        ("https://hooks.example.com:99999/in", "port"),
        ("https://hooks.example.com/in put", "spaces"),
        ("https://127.0.0.1/in", "127.0.0.1 is not a public address"),
        ("https://10.1.2.3/in", "not a public address"),
        ("https://192.168.0.10/in", "not a public address"),
        ("https://169.254.169.254/latest/meta-data", "not a public address"),  # cloud metadata
        ("https://100.64.0.1/in", "not a public address"),
        ("https://[::1]/in", "not a public address"),
        ("https://[fd00::1]/in", "not a public address"),
        ("https://[::ffff:127.0.0.1]/in", "not a public address"),
        ("https://0.0.0.0/in", "not a public address"),
    ],
)
def test_urls_that_are_refused_by_default(
    database: Database, box: SecretBox, url: str, why: str
) -> None:
    with pytest.raises(webhooks.WebhookError, match=why.replace(".", r"\.").replace("#", r"\#")):
        add(database, box, url=url)


def test_a_host_that_resolves_to_a_private_address_is_refused(
    database: Database, box: SecretBox
) -> None:
    with database.transaction() as session:
        with pytest.raises(webhooks.WebhookError, match="IDENTITY_WEBHOOKS_ALLOW_PRIVATE"):
            webhooks.add_endpoint(
                session,
                box,
                url="https://intranet.example.com/in",
                events=["*"],
                allow_private=False,
                actor="admin",
                context=_CLI,
                resolve=lambda host, port: [_PUBLIC, "10.0.0.5"],
            )
        with pytest.raises(webhooks.WebhookError, match="does not resolve"):
            webhooks.add_endpoint(
                session,
                box,
                url="https://nowhere.example.com/in",
                events=["*"],
                allow_private=False,
                actor="admin",
                context=_CLI,
                resolve=lambda host, port: [],
            )


def test_allowing_private_addresses_allows_http_and_loopback(
    database: Database, box: SecretBox
) -> None:
    added = add(database, box, url="http://127.0.0.1:8999/hook", allow_private=True)
    assert added.endpoint.url == "http://127.0.0.1:8999/hook"
    add(database, box, url="https://localhost/hook", allow_private=True)


def test_public_addresses_are_public_and_others_are_not() -> None:
    def check(text: str) -> bool:
        return webhooks.is_public(ipaddress.ip_address(text))

    assert check(_PUBLIC) and check("2606:4700::1111")
    for private in ("127.0.0.1", "10.0.0.1", "172.16.5.4", "169.254.1.1", "224.0.0.1", "::1"):
        assert not check(private), private


# -- event patterns ----------------------------------------------------------------------------


def test_event_patterns_are_known_types_families_or_everything() -> None:
    accepted = webhooks.checked_events(
        ["user.created, user.*", "mfa.added client.secret_rotated", "*", "user.created"]
    )
    assert accepted == ["user.created", "user.*", "mfa.added", "client.secret_rotated", "*"]
    for wrong in ("user.exploded", "token.issued", "webhook.added", "audit.*", "user", "User.*"):
        with pytest.raises(webhooks.WebhookError, match="unknown event"):
            webhooks.checked_events([wrong])
    with pytest.raises(webhooks.WebhookError, match="name the events"):
        webhooks.checked_events(["  "])


def test_patterns_match_exactly_by_family_or_all() -> None:
    assert matches(["user.*"], "user.created")
    assert not matches(["user.*"], "users.created")
    assert matches(["login.failed"], "login.failed") and not matches(["login.failed"], "login")
    assert matches(["*"], "client.deleted")
    assert not matches([], "user.created")


def test_audit_types_are_published_under_their_event_names() -> None:
    assert published_type("email.verified") == "user.verified"
    assert published_type("signup") == "user.created"
    assert published_type("federation.signed_in") == "login.succeeded"
    assert published_type("mfa.recovery_code_used") == "mfa.recovery_code_used"
    assert published_type("client.auth_failed") == "client.auth_failed"
    for private in ("token.issued", "webhook.added", "signup.duplicate", "session.revoked"):
        assert published_type(private) is None


# -- the outbox writer -------------------------------------------------------------------------


def _record(database: Database, type: str, subject: str | None = None) -> None:
    with database.transaction() as session:
        audit.record(session, type, context=_CLI, subject=subject)


def _events(database: Database) -> list[WebhookEvent]:
    with database.transaction() as session:
        return list(session.scalars(select(WebhookEvent).order_by(WebhookEvent.id)))


def test_events_are_written_only_while_an_endpoint_is_enabled(
    database: Database, box: SecretBox
) -> None:
    webhook_events.PRESENCE.forget()
    _record(database, "login.succeeded", str(uuid.uuid4()))
    assert _events(database) == []
    added = add(database, box)
    _record(database, "login.succeeded", str(uuid.uuid4()))
    _record(database, "token.issued")  # never an event
    assert [e.type for e in _events(database)] == ["login.succeeded"]
    with database.transaction() as session:
        webhooks.set_enabled(session, added.endpoint.id, False, actor="admin", context=_CLI)
    _record(database, "login.failed")
    assert len(_events(database)) == 1


def test_an_event_has_a_message_id_and_the_users_current_email(
    database: Database, box: SecretBox
) -> None:
    add(database, box)
    subject = str(uuid.uuid4())  # no such user: the email is unknown, not an error
    _record(database, "user.disabled", subject)
    (event,) = _events(database)
    assert event.message_id.startswith("msg_") and len(event.message_id) <= 40
    assert event.data == {"id": subject, "email": None}
    assert not event.dispatched


def test_the_presence_of_endpoints_is_asked_again_only_after_its_interval(
    database: Database, box: SecretBox
) -> None:
    now = [0.0]
    presence = EndpointPresence(check_seconds=5.0, clock=lambda: now[0])
    with database.transaction() as session:
        assert not presence.any_enabled(session)
    add(database, box)  # another process, as far as this cache knows
    with database.transaction() as session:
        assert not presence.any_enabled(session)
        now[0] = 5.0
        assert presence.any_enabled(session)
