"""A form with several wrong fields shows every field's message beside it, in one answer."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from starlette.testclient import TestClient

from identity.config import Settings
from identity.db import Database
from tests.conftest import MailSink
from tests.web_helpers import PASSWORD, Browser, registered

WEAK = "password"


@pytest.fixture
def visitor(
    app_for: Callable[[Settings], TestClient],
    settings_for: Callable[..., Settings],
    mail_sink: MailSink,
) -> Browser:
    return Browser(app_for(settings_for(smtp_url=mail_sink.url)))


def _field_errors(html: str) -> dict[str, str]:
    """Each field's error message, read from the paragraph tied to the field's input."""
    found = re.findall(r'id="([\w-]+)-error"><svg.*?</svg><span>(.*?)</span>', html, re.S)
    return dict(found)


def test_signup_flags_a_bad_email_and_a_weak_password_together(visitor: Browser) -> None:
    page = visitor.signup("not-an-email", WEAK)
    assert page.status_code == 400
    errors = _field_errors(page.text)
    assert set(errors) == {"email", "password"}
    assert "valid email" in errors["email"] and "too common" in errors["password"]
    # Both inputs are marked invalid and described by their messages.
    assert page.text.count('aria-invalid="true"') == 2
    assert 'aria-describedby="password-hint password-error"' in page.text


def test_password_change_flags_a_wrong_current_and_a_weak_new_password(
    visitor: Browser, mail_sink: MailSink, database: Database
) -> None:
    registered(visitor, mail_sink, "change@example.com")
    visitor.login("change@example.com")
    page = visitor.submit(
        "/account", "/account/password", current_password="not-mine-at-all", new_password=WEAK
    )
    assert page.status_code == 400
    assert set(_field_errors(page.text)) == {"current_password", "new_password"}
    assert visitor.login("change@example.com", PASSWORD).status_code == 303  # unchanged


def test_email_change_flags_a_bad_address_and_a_wrong_password(
    visitor: Browser, mail_sink: MailSink
) -> None:
    registered(visitor, mail_sink, "move@example.com")
    visitor.login("move@example.com")
    page = visitor.submit(
        "/account", "/account/email", new_email="no-at-sign", email_password="not-mine-at-all"
    )
    assert page.status_code == 400
    assert set(_field_errors(page.text)) == {"new_email", "email_password"}
    assert 'value="no-at-sign"' in page.text  # what was typed stays in the field
    assert 'name="name" type="text" autocomplete="name" value="Ada"' in page.text  # untouched
