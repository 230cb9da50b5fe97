"""The refusals of the account rules, each a sentence a person can act on."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


class AccountError(Exception):
    """A refusal the user can act on; ``str()`` is a friendly sentence."""

    code = "invalid_request"


class InvalidInput(AccountError):
    """Field errors: ``fields`` maps a field name to its message."""

    def __init__(self, fields: dict[str, str]) -> None:
        super().__init__("; ".join(fields.values()))
        self.fields = fields


class FieldErrors:
    """The field errors of one form or body, gathered so that every field is checked and
    all refusals are told in one answer: a wrong email must not hide a weak password."""

    def __init__(self) -> None:
        self.fields: dict[str, str] = {}

    @contextmanager
    def check(self) -> Iterator[None]:
        """Run one field's check; its InvalidInput is kept instead of ending the form."""
        try:
            yield
        except InvalidInput as error:
            for name, text in error.fields.items():
                self.fields.setdefault(name, text)  # a field's first fault is the one to fix

    def add(self, name: str, text: str) -> None:
        self.fields.setdefault(name, text)

    def raise_any(self) -> None:
        """InvalidInput naming every field refused so far, if any was."""
        if self.fields:
            raise InvalidInput(dict(self.fields))


class InvalidCredentials(AccountError):
    code = "invalid_credentials"

    def __init__(self) -> None:
        super().__init__("That email and password don't match an account.")


class EmailNotVerified(AccountError):
    """The password was right but the address is unverified; ``password_fingerprint`` names
    the password just proven (``passwords.fingerprint``), for the browser that typed it."""

    code = "email_not_verified"

    def __init__(self, email: str, password_fingerprint: str = "") -> None:
        super().__init__("Verify your email address first with the code we emailed you.")
        self.email = email
        self.password_fingerprint = password_fingerprint


class Throttled(AccountError):
    code = "too_many_attempts"

    def __init__(self, retry_after: int) -> None:
        minutes = max(1, (retry_after + 59) // 60)
        super().__init__(f"Too many attempts. Try again in {minutes} minute{'s' * (minutes > 1)}.")
        self.retry_after = retry_after


class InvalidCode(AccountError):
    code = "invalid_code"


class ReauthenticationRequired(AccountError):
    """The change needs a recent sign-in: type the password again (or sign in again)."""

    code = "reauthentication_required"

    def __init__(self) -> None:
        super().__init__("Confirm it's you: enter your password again.")


class InvalidLink(AccountError):
    """The link (its token) is dead; ``fields`` are the faults of the other fields sent with
    it, told too so that the try with a new link does not fail on them."""

    code = "invalid_link"

    def __init__(self, fields: dict[str, str] | None = None) -> None:
        super().__init__("This link is invalid or has expired. Ask for a new one.")
        self.fields = dict(fields or {})
