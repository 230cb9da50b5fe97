"""A person's whole journey through the hosted pages, in a real browser, plus a few checks
of the pages' accessibility and security headers."""

from __future__ import annotations

import re
import secrets

from playwright.sync_api import Page, Response, expect

from .conftest import LiveServer, Screenshot, SmtpSink, six_digit_code, text_body

NAME = "Ada Lovelace"
FIRST_PASSWORD = "tidal-orbit-cactus-42"
SECOND_PASSWORD = "amber-quartz-lantern-17"
THIRD_PASSWORD = "mossy-violin-harbor-88"


def new_email() -> str:
    return f"ada+{secrets.token_hex(4)}@example.com"


def log_in(page: Page, server: LiveServer, address: str, password: str) -> None:
    """Fill and send the login form through the password-manager attributes."""
    page.goto(server.url + "/login")
    page.locator("[autocomplete=username]").fill(address)
    page.locator("[autocomplete=current-password]").fill(password)
    page.get_by_role("button", name="Sign in").click()


def expect_login_refused(page: Page) -> None:
    expect(page).to_have_url(re.compile(r"/login$"))
    summary = page.get_by_role("alert")
    expect(summary).to_be_visible()
    expect(summary).to_contain_text("That email and password don't match an account.")


def sign_up_and_verify(page: Page, server: LiveServer, sink: SmtpSink, address: str) -> None:
    """A verified account, made through the pages (for the smaller tests)."""
    page.goto(server.url + "/signup")
    page.get_by_label("Email", exact=True).fill(address)
    page.get_by_label("Your name", exact=True).fill(NAME)
    page.get_by_label("Password", exact=True).fill(FIRST_PASSWORD)
    page.get_by_role("button", name="Create account").click()
    code = six_digit_code(sink.wait_for(address, subject="Confirm your email address")[0])
    page.goto(server.url + "/verify-email?email=" + address.replace("+", "%2B"))
    page.get_by_label("6-digit code", exact=True).fill(code)
    page.get_by_role("button", name="Verify").click()
    # The browser that typed the password is signed in once the mailbox is proven too.
    expect(page).to_have_url(server.url + "/account")


def test_person_signs_up_verifies_logs_in_changes_and_resets_password(
    page: Page,
    live_server: LiveServer,
    smtp_sink: SmtpSink,
    screenshot: Screenshot,
    page_problems: list[str],
) -> None:
    address = new_email()

    # 1. Sign up.
    page.goto(live_server.url + "/signup")
    expect(page.get_by_role("heading", name="Create your account")).to_be_visible()
    page.get_by_label("Email", exact=True).fill(address)
    page.get_by_label("Your name", exact=True).fill(NAME)
    page.get_by_label("Password", exact=True).fill(FIRST_PASSWORD)
    screenshot(page, "signup-filled")
    page.get_by_role("button", name="Create account").click()

    expect(page).to_have_url(re.compile(r"/signup/check-email\?email="))
    expect(page.get_by_role("heading", name="Check your email")).to_be_visible()
    expect(page.get_by_text(address)).to_be_visible()
    screenshot(page, "check-email")

    # 2. The code arrives by mail.
    verification = smtp_sink.wait_for(address, subject="Confirm your email address")
    assert len(verification) == 1
    # Anyone can have this mail sent to any address: it carries no name they typed.
    assert NAME not in text_body(verification[0])
    code = six_digit_code(verification[0])

    # 3. Verify with the code: the check-email page leads there.
    page.get_by_role("link", name="Enter the code").click()
    expect(page).to_have_url(re.compile(r"/verify-email\?email="))
    expect(page.get_by_role("heading", name="Verify your email")).to_be_visible()
    email_field = page.get_by_label("Email", exact=True)
    if not email_field.input_value():
        email_field.fill(address)
    expect(email_field).to_have_value(address)
    page.get_by_label("6-digit code", exact=True).fill(code)
    screenshot(page, "verify-filled")
    page.get_by_role("button", name="Verify").click()
    # This browser typed the password: with the mailbox proven too, it is signed in.
    expect(page).to_have_url(live_server.url + "/account")
    expect(page.get_by_role("status")).to_contain_text("Your email address is verified")
    screenshot(page, "verified")

    # 4. Log in again, through the fields a password manager would fill.
    page.goto(live_server.url + "/login?email=" + address.replace("+", "%2B"))
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    page.locator("[autocomplete=username]").fill(address)
    page.locator("[autocomplete=current-password]").fill(FIRST_PASSWORD)
    screenshot(page, "login-filled")
    page.get_by_role("button", name="Sign in").click()

    # 5. The account page shows who is signed in.
    expect(page).to_have_url(live_server.url + "/account")
    expect(page.get_by_role("heading", name="Your account")).to_be_visible()
    profile = page.get_by_role("region", name="Profile")
    expect(profile).to_contain_text(NAME)
    expect(profile).to_contain_text(address)
    expect(profile).to_contain_text("verified")
    expect(page.get_by_role("region", name="Where you're signed in")).to_contain_text(
        "This browser"
    )
    screenshot(page, "account")

    # 6. Change the password on the account page.
    password_panel = page.get_by_role("region", name="Password")
    password_panel.get_by_label("Current password", exact=True).fill(FIRST_PASSWORD)
    password_panel.get_by_label("New password", exact=True).fill(SECOND_PASSWORD)
    password_panel.get_by_role("button", name="Change password").click()
    expect(page).to_have_url(live_server.url + "/account")
    expect(page.get_by_role("status")).to_contain_text("Your password is changed.")
    screenshot(page, "password-changed")
    smtp_sink.wait_for(address, subject="Your password was changed")

    # 7. Log out: the nav link, then the confirmation page's button.
    page.get_by_role("navigation", name="Account").get_by_role("link", name="Sign out").click()
    expect(page).to_have_url(live_server.url + "/logout")
    expect(page.get_by_role("heading", name="Sign out?")).to_be_visible()
    screenshot(page, "logout-confirm")
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="You're signed out")).to_be_visible()
    screenshot(page, "logged-out")
    page.goto(live_server.url + "/account")
    expect(page).to_have_url(re.compile(r"/login\?next=/account$"))

    # The first password died with the change.
    log_in(page, live_server, address, FIRST_PASSWORD)
    expect_login_refused(page)
    screenshot(page, "login-old-password-refused")

    # 8. Forgot the password: the login page links to the form.
    page.get_by_role("link", name="Forgot password?").click()
    expect(page).to_have_url(live_server.url + "/forgot-password")
    expect(page.get_by_role("heading", name="Reset your password")).to_be_visible()
    page.get_by_label("Email", exact=True).fill(address)
    screenshot(page, "forgot-password-filled")
    page.get_by_role("button", name="Send reset link").click()
    expect(page).to_have_url(re.compile(r"/forgot-password/check-email\?email="))
    expect(page.get_by_role("heading", name="Check your email")).to_be_visible()
    screenshot(page, "forgot-password-check-email")

    # 9. Follow the link of the reset mail; it points at the issuer, nowhere else.
    reset_mail = smtp_sink.wait_for(address, subject="Reset your password")
    assert len(reset_mail) == 1
    found = re.search(r"https?://\S+/reset-password\?token=\S+", text_body(reset_mail[0]))
    assert found is not None, "no reset link in the mail"
    link = found[0]
    assert link.startswith(live_server.url + "/reset-password?token="), link
    page.goto(link)
    expect(page.get_by_role("heading", name="Choose a new password")).to_be_visible()
    screenshot(page, "reset-password")

    # 10. Choose a new password.
    page.get_by_label("New password", exact=True).fill(THIRD_PASSWORD)
    page.get_by_role("button", name="Set new password").click()
    expect(page.get_by_role("heading", name="Password changed")).to_be_visible()
    screenshot(page, "reset-done")

    # The link is single-use.
    page.goto(link)
    expect(page.get_by_role("heading", name="This link doesn't work")).to_be_visible()

    # 11. Neither earlier password works any more; the new one does.
    for old in (FIRST_PASSWORD, SECOND_PASSWORD):
        log_in(page, live_server, address, old)
        expect_login_refused(page)
    screenshot(page, "login-refused")

    log_in(page, live_server, address, THIRD_PASSWORD)
    expect(page).to_have_url(live_server.url + "/account")
    expect(page.get_by_role("region", name="Profile")).to_contain_text(address)
    screenshot(page, "account-after-reset")

    assert page_problems == []


def test_wrong_password_shows_an_error_summary_tied_to_the_page(
    page: Page, live_server: LiveServer, smtp_sink: SmtpSink, screenshot: Screenshot
) -> None:
    address = new_email()
    sign_up_and_verify(page, live_server, smtp_sink, address)

    log_in(page, live_server, address, "not-the-right-password-at-all")

    summary = page.get_by_role("alert")
    expect(summary).to_be_visible()
    expect(summary).to_have_attribute("aria-labelledby", "error-summary-title")
    expect(summary).to_have_accessible_name("That email and password don't match an account.")
    expect(summary).to_be_in_viewport()
    # The summary belongs to the login form, which keeps the address but never the password.
    expect(page.locator("form[action='/login']").get_by_role("alert")).to_have_count(1)
    expect(page.get_by_label("Email", exact=True)).to_have_value(address)
    expect(page.get_by_label("Password", exact=True)).to_have_value("")
    expect(page).to_have_title(re.compile(r"^Sign in"))
    screenshot(page, "wrong-password")


def test_pages_forbid_framing_and_inline_scripts(
    page: Page, live_server: LiveServer, page_problems: list[str]
) -> None:
    for path in ("/login", "/signup", "/forgot-password", "/verify-email", "/nowhere"):
        response = page.goto(live_server.url + path)
        assert isinstance(response, Response)
        headers = response.headers
        policy = headers.get("content-security-policy", "")
        directives = {
            part.split()[0]: part.split()[1:] for part in policy.split(";") if part.strip()
        }
        assert directives.get("frame-ancestors") == ["'none'"], (path, policy)
        script_sources = directives.get("script-src", directives.get("default-src"))
        assert script_sources is not None, (path, policy)
        assert "'unsafe-inline'" not in script_sources, (path, policy)
        assert "'unsafe-eval'" not in script_sources, (path, policy)
        assert headers.get("x-frame-options") == "DENY", path
        assert headers.get("x-content-type-options") == "nosniff", path
        assert headers.get("cache-control") == "no-store" or path == "/nowhere", path
        # Nothing on the page relies on inline script (it would be blocked anyway).
        assert page.locator("script:not([src])").count() == 0, path
        assert page.locator("[onclick], [onload], [onsubmit]").count() == 0, path
    assert page_problems == []


def test_login_form_works_with_the_keyboard_alone(
    page: Page, live_server: LiveServer, smtp_sink: SmtpSink, screenshot: Screenshot
) -> None:
    address = new_email()
    sign_up_and_verify(page, live_server, smtp_sink, address)
    page.goto(live_server.url + "/login")

    def focused() -> str:
        return str(
            page.evaluate(
                "() => { const e = document.activeElement;"
                " return e.name || e.getAttribute('href') || e.textContent.trim(); }"
            )
        )

    page.get_by_label("Email", exact=True).focus()
    assert focused() == "email"
    page.keyboard.type(address)
    page.keyboard.press("Tab")
    assert focused() == "password"
    page.keyboard.type(FIRST_PASSWORD)
    page.keyboard.press("Tab")
    assert focused() == "/forgot-password"
    page.keyboard.press("Tab")
    expect(page.get_by_role("button", name="Sign in")).to_be_focused()
    screenshot(page, "submit-focused")
    page.keyboard.press("Enter")
    expect(page).to_have_url(live_server.url + "/account")
