"""The console's webhook pages (``/admin/webhooks``) through HTTP: an endpoint added with its
secret shown once, a refused URL or event explained on the form, deliveries to a real local
receiver listed with their status, redelivery, secret rotation with an overlap, enabling,
disabling, removing after a confirmation; every change audited with the administrator as
actor, and no change without the form's CSRF token."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from html import unescape

import pyotp
import pytest
from sqlalchemy import select
from starlette.testclient import TestClient

from identity import repositories
from identity.admin_models import WebhookDelivery, WebhookEndpoint
from identity.config import Settings
from identity.db import Database
from identity.models import User
from identity.webhook_delivery import WebhookSender
from tests.conftest import remember_secret
from tests.loops import run_in_own_loop
from tests.test_webhook_delivery import Receiver
from tests.web import test_admin_console as console_pages
from tests.web.test_admin_console import ALICE, _accounts, _act, _assert_audited, _events, _notice
from tests.web_helpers import Browser

# The console tests' fixtures: an administrator with an authenticator app, a browser signed in
# as them (to this module's ``http``), and a user to act on.
admin = console_pages.admin
console = console_pages.console
alice = console_pages.alice

_SECRET_FIELD = re.compile(r'id="webhook-secret"[^>]*>([^<]+)</textarea>')
_HOOKS = "/admin/webhooks"
Admin = tuple[User, pyotp.TOTP]


@pytest.fixture
def allow_private() -> bool:
    """IDENTITY_WEBHOOKS_ALLOW_PRIVATE: on, for the receivers on 127.0.0.1 (a test sets it
    off with ``parametrize``)."""
    return True


@pytest.fixture
def http(
    app_for: Callable[[Settings], TestClient],
    settings_for: Callable[..., Settings],
    allow_private: bool,
) -> TestClient:
    """The app (the console fixtures imported above sign in to this one)."""
    return app_for(settings_for(webhooks_allow_private=allow_private, cache_check_seconds=0))


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as running:
        yield running


@pytest.fixture
def sender(http: TestClient, database: Database) -> WebhookSender:
    """A sender of the test's own, driven round by round, with the app's settings and box."""
    settings: Settings = http.app.state.settings  # type: ignore[attr-defined]
    return WebhookSender(database, settings, _accounts(http).secret_box, jitter=lambda: 1.0)


def _shown_secret(page: str) -> str | None:
    match = _SECRET_FIELD.search(page)
    if match is None:
        return None
    remember_secret(match.group(1))
    return match.group(1)


def _add(console: Browser, url: str, events: str = "user.disabled user.enabled") -> tuple[str, str]:
    """Add an endpoint on the console; (its page, its secret as shown that once). The
    events are the ones the tests make after adding it: the fixtures' own (user.created...)
    may be in the outbox already or not, as the endpoints the process saw last decide
    (``webhook_events.PRESENCE``)."""
    made = console.submit(_HOOKS, url=url, events=events)
    assert made.status_code == 303, made.text
    location = made.headers["location"]
    secret = _shown_secret(console.http.get(location).text)
    assert secret is not None and secret.startswith("whsec_")
    return location, secret


def _endpoint(database: Database, endpoint_id: str) -> WebhookEndpoint | None:
    with database.transaction() as session:
        return session.get(WebhookEndpoint, endpoint_id)


def _deliveries(database: Database) -> list[WebhookDelivery]:
    with database.transaction() as session:
        return list(session.scalars(select(WebhookDelivery).order_by(WebhookDelivery.id)))


def _deliver(sender: WebhookSender, database: Database) -> None:
    """Rounds of the test's sender until every event is fanned out and every delivery has
    been attempted and recorded. The app's own sender (started in its lifespan) may take
    some of them meanwhile: the claims keep the two from attempting one twice."""
    deadline = time.monotonic() + 10
    while True:
        sender.dispatch()
        run_in_own_loop(lambda: sender.deliver_due())
        with database.transaction() as session:
            waiting = repositories.has_undispatched_webhook_events(session)
        unsettled = [d for d in _deliveries(database) if d.attempts == 0 or d.claimed_until]
        if not waiting and not unsettled:
            return
        assert time.monotonic() < deadline, f"still waiting: {unsettled}"
        time.sleep(0.05)


def _disable_alice(console: Browser, alice: User) -> None:
    """An event for the endpoints: user.disabled, made on the console's own user page."""
    page = f"/admin/users/{alice.id}"
    _act(console, page, f"{page}/disable")


def _delivery_ids(page: str) -> list[int]:
    return [int(found) for found in re.findall(r'name="delivery" value="(\d+)"', page)]


# -- adding --------------------------------------------------------------------------------


def test_the_overview_and_navigation_link_the_webhooks_page(
    http: TestClient, console: Browser
) -> None:
    overview = http.get("/admin").text
    assert 'href="/admin/webhooks"' in overview
    page = http.get(_HOOKS)
    assert page.status_code == 200
    assert '<a href="/admin/webhooks" aria-current="page">Webhooks</a>' in page.text
    assert "No endpoint is registered yet." in page.text


def test_a_new_endpoint_shows_its_secret_once_and_is_listed_and_audited(
    http: TestClient,
    database: Database,
    console: Browser,
    admin: Admin,
    receiver: Receiver,
) -> None:
    made = console.submit(_HOOKS, url=receiver.url, events="user.created user.*")
    assert made.status_code == 303
    location = made.headers["location"]
    endpoint_id = location.rsplit("/", 1)[1]
    page = http.get(location)
    secret = _shown_secret(page.text)
    assert secret is not None and secret.startswith("whsec_")
    assert "it will not be shown again" in page.text
    assert _notice(page.text) == f"Added the webhook {receiver.url}"
    reloaded = http.get(location).text
    assert secret not in reloaded and _shown_secret(reloaded) is None
    listed = http.get(_HOOKS).text
    assert receiver.url in listed and "user.created user.*" in listed
    assert f'href="/admin/webhooks/{endpoint_id}"' in listed and "enabled" in listed
    assert secret not in listed
    endpoint = _endpoint(database, endpoint_id)
    assert endpoint is not None and endpoint.events == ["user.created", "user.*"]
    _assert_audited(database, "webhook.added", admin[0], endpoint_id)


@pytest.mark.parametrize("allow_private", [False])
def test_a_refused_url_or_event_is_explained_on_the_form_and_nothing_is_added(
    http: TestClient, database: Database, console: Browser
) -> None:
    plain = console.submit(_HOOKS, url="http://127.0.0.1:9/hook", events="user.*")
    assert plain.status_code == 400
    assert "The URL must start with https://" in unescape(plain.text)
    assert "IDENTITY_WEBHOOKS_ALLOW_PRIVATE=1" in plain.text
    assert 'value="http://127.0.0.1:9/hook"' in plain.text  # kept, to correct
    assert 'value="user.*"' in plain.text
    private = console.submit(_HOOKS, url="https://10.0.0.7/hook", events="user.*")
    assert private.status_code == 400
    assert "10.0.0.7 is not a public address" in private.text
    event = console.submit(_HOOKS, url="https://hooks.example.com/", events="user.nope")
    assert event.status_code == 400
    assert "Unknown event &#39;user.nope&#39;" in event.text
    empty = console.submit(_HOOKS, url=" ", events="")
    assert empty.status_code == 400
    assert "Give the URL the events are sent to." in empty.text
    assert "Name the events to send" in empty.text
    with database.transaction() as session:
        assert session.scalars(select(WebhookEndpoint)).all() == []
    assert _events(database, "webhook.added") == []


# -- deliveries ----------------------------------------------------------------------------


def test_a_delivery_is_listed_with_its_status_answer_and_time(
    http: TestClient,
    database: Database,
    console: Browser,
    alice: User,
    receiver: Receiver,
    sender: WebhookSender,
) -> None:
    location, secret = _add(console, receiver.url)
    with Receiver(statuses=[503]) as failing:
        failing_location, _ = _add(console, failing.url, "user.disabled")
        _disable_alice(console, alice)
        _deliver(sender, database)
    message = receiver.verified(secret)
    assert message["type"] == "user.disabled"
    assert message["data"] == {"id": str(alice.id), "email": ALICE}
    page = http.get(location).text
    assert "user.disabled" in page and "delivered" in page
    assert "HTTP 204" in page and re.search(r"\d+ ms", page)
    failed = http.get(failing_location).text
    assert "pending" in failed and "HTTP 503" in failed
    assert "Failing since" in failed
    assert re.search(r'data-label="Failing since"><time', http.get(_HOOKS).text)


def test_redelivering_sends_the_event_again_with_the_same_webhook_id(
    http: TestClient,
    database: Database,
    console: Browser,
    admin: Admin,
    alice: User,
    receiver: Receiver,
    sender: WebhookSender,
) -> None:
    location, secret = _add(console, receiver.url)
    endpoint_id = location.rsplit("/", 1)[1]
    _disable_alice(console, alice)
    _deliver(sender, database)
    (first,) = _delivery_ids(http.get(location).text)
    landed = _act(console, location, f"{location}/redeliver", delivery=str(first))
    assert _notice(landed.text) == "Queued the event for delivery again"
    assert len(_delivery_ids(landed.text)) == 2
    _deliver(sender, database)
    assert len(receiver.requests) == 2
    ids = [headers["webhook-id"] for _, headers, _ in receiver.requests]
    assert ids[0] == ids[1]
    assert receiver.verified(secret, 0) == receiver.verified(secret, 1)
    assert [d.status for d in _deliveries(database)] == ["delivered", "delivered"]
    _assert_audited(database, "webhook.redelivered", admin[0], endpoint_id)


def test_redelivery_of_an_unknown_or_foreign_delivery_or_to_a_disabled_endpoint_is_refused(
    http: TestClient,
    database: Database,
    console: Browser,
    alice: User,
    receiver: Receiver,
    sender: WebhookSender,
) -> None:
    location, _ = _add(console, receiver.url)
    other, _ = _add(console, receiver.url, "user.disabled")
    _disable_alice(console, alice)
    _deliver(sender, database)
    (theirs,) = _delivery_ids(http.get(other).text)
    for value in ("", "x", "-1", str(2**70), str(theirs)):
        refused = console.submit(location, f"{location}/redeliver", delivery=value)
        assert refused.status_code == 400, value
        assert "That delivery is not in this endpoint" in unescape(refused.text)
    (mine,) = _delivery_ids(http.get(location).text)
    _act(console, location, f"{location}/disable")
    disabled = console.submit(location, f"{location}/redeliver", delivery=str(mine))
    assert disabled.status_code == 400
    assert "is disabled: enable it first" in disabled.text
    assert len(_deliveries(database)) == 2  # nothing was added


# -- the secret, the switch, removal -----------------------------------------------------------


def test_rotating_shows_the_new_secret_once_and_the_old_one_signs_during_the_overlap(
    http: TestClient,
    database: Database,
    console: Browser,
    admin: Admin,
    alice: User,
    receiver: Receiver,
    sender: WebhookSender,
) -> None:
    location, old = _add(console, receiver.url)
    endpoint_id = location.rsplit("/", 1)[1]
    rotated = _act(console, location, f"{location}/rotate-secret", overlap="3600")
    assert _notice(rotated.text) == "Rotated the signing secret"
    new = _shown_secret(rotated.text)
    assert new is not None and new != old
    assert "Old secret signs too until" in rotated.text
    assert _shown_secret(http.get(location).text) is None
    _disable_alice(console, alice)
    _deliver(sender, database)
    assert receiver.verified(new) == receiver.verified(old)  # each secret's signature
    row = _events(database, "webhook.secret_rotated")[-1]
    assert (row.actor, row.subject) == (str(admin[0].id), endpoint_id)
    assert row.detail["overlap_seconds"] == 3600
    again = _act(console, location, f"{location}/rotate-secret", overlap="0")
    assert _shown_secret(again.text) not in (None, new)
    assert "Old secret signs too until" not in again.text
    endpoint = _endpoint(database, endpoint_id)
    assert endpoint is not None and endpoint.previous_secret_sealed is None
    bad = console.submit(location, f"{location}/rotate-secret", overlap="forever")
    assert bad.status_code == 400 and "Choose how long the old secret signs too." in bad.text


def test_disabling_stops_sending_and_enabling_starts_again(
    http: TestClient,
    database: Database,
    console: Browser,
    admin: Admin,
    alice: User,
    receiver: Receiver,
    sender: WebhookSender,
) -> None:
    location, _ = _add(console, receiver.url)
    endpoint_id = location.rsplit("/", 1)[1]
    disabled = _act(console, location, f"{location}/disable")
    assert _notice(disabled.text) == f"Disabled the webhook {receiver.url}"
    assert "disabled by an operator" in disabled.text
    assert f'action="/admin/webhooks/{endpoint_id}/enable"' in disabled.text
    _assert_audited(database, "webhook.disabled", admin[0], endpoint_id)
    _disable_alice(console, alice)
    _deliver(sender, database)
    assert receiver.requests == [] and _deliveries(database) == []
    enabled = _act(console, location, f"{location}/enable")
    assert _notice(enabled.text) == f"Enabled the webhook {receiver.url}"
    _assert_audited(database, "webhook.enabled", admin[0], endpoint_id)
    page = f"/admin/users/{alice.id}"
    _act(console, page, f"{page}/enable")  # user.enabled: sent, the endpoint is on again
    _deliver(sender, database)
    assert [request[0] for request in receiver.requests] == ["/hook"]


def test_removing_asks_first_then_removes_and_audits(
    http: TestClient, database: Database, console: Browser, admin: Admin, receiver: Receiver
) -> None:
    location, _ = _add(console, receiver.url)
    endpoint_id = location.rsplit("/", 1)[1]
    confirm = http.get(f"{location}/remove")
    assert confirm.status_code == 200
    assert f"Remove the webhook {receiver.url}?" in confirm.text
    assert _endpoint(database, endpoint_id) is not None  # the GET changed nothing
    landed = _act(console, f"{location}/remove", f"{location}/remove")
    assert _notice(landed.text) == f"Removed the webhook {receiver.url}"
    assert _endpoint(database, endpoint_id) is None
    _assert_audited(database, "webhook.removed", admin[0], endpoint_id)
    assert http.get(location).status_code == 404
    gone = http.post(f"{location}/disable", data={"csrf_token": _csrf(http)})
    assert gone.status_code == 404


def _csrf(http: TestClient) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', http.get(_HOOKS).text)
    assert match is not None
    return match.group(1)


def test_a_form_without_the_right_csrf_token_changes_nothing(
    http: TestClient, database: Database, console: Browser, receiver: Receiver
) -> None:
    location, _ = _add(console, receiver.url)
    endpoint_id = location.rsplit("/", 1)[1]
    for token in ("", "forged"):
        added = http.post(_HOOKS, data={"csrf_token": token, "url": receiver.url, "events": "*"})
        assert added.status_code == 403 and "This form expired" in added.text
        for action in ("disable", "remove", "rotate-secret"):
            response = http.post(f"{location}/{action}", data={"csrf_token": token})
            assert response.status_code == 403, action
    endpoint = _endpoint(database, endpoint_id)
    assert endpoint is not None and endpoint.enabled
    assert len(_events(database, "webhook.added")) == 1
    assert _events(database, "webhook.disabled") == []
    assert _events(database, "webhook.secret_rotated") == []


def test_only_administrators_reach_the_webhook_pages(
    http: TestClient, database: Database, alice: User
) -> None:
    anonymous = http.get(_HOOKS, follow_redirects=False)
    assert anonymous.status_code == 303
    assert anonymous.headers["location"] == "/login?next=%2Fadmin%2Fwebhooks"
    assert Browser(http).login(ALICE).headers["location"] == "/account"
    for path in (_HOOKS, f"{_HOOKS}/wh_0123"):
        refused = http.get(path, follow_redirects=False)
        assert refused.status_code == 403 and "This page is for administrators" in refused.text


def test_an_unknown_endpoint_is_a_friendly_404(http: TestClient, console: Browser) -> None:
    missing = http.get(f"{_HOOKS}/wh_missing")
    assert missing.status_code == 404 and "There is no such webhook endpoint." in missing.text
    assert http.get(f"{_HOOKS}/wh_missing/remove").status_code == 404
    for action in ("redeliver", "rotate-secret", "enable", "disable", "remove"):
        response = http.post(f"{_HOOKS}/wh_missing/{action}", data={"csrf_token": _csrf(http)})
        assert response.status_code == 404, action
