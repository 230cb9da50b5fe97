"""The refusals of the account rules, each a sentence a person can act on."""

from __future__ import annotations


class AccountError(Exception):
    """A refusal the user can act on; ``str()`` is a friendly sentence."""

    code = "invalid_request"


class InvalidInput(AccountError):
    """Field errors: ``fields`` maps a field name to its message."""

    def __init__(self, fields: dict[str, str]) -> None:
        super().__init__("; ".join(fields.values()))
        self.fields = fields


class InvalidCredentials(AccountError):
    code = "invalid_credentials"

    def __init__(self) -> None:
        super().__init__("That email and password don't match an account.")


class EmailNotVerified(AccountError):
    code = "email_not_verified"

    def __init__(self, email: str) -> None:
        super().__init__("Verify your email address first with the code we emailed you.")
        self.email = email


class Throttled(AccountError):
    code = "too_many_attempts"

    def __init__(self, retry_after: int) -> None:
        minutes = max(1, (retry_after + 59) // 60)
        super().__init__(f"Too many attempts. Try again in {minutes} minute{'s' * (minutes > 1)}.")
        self.retry_after = retry_after


class InvalidCode(AccountError):
    code = "invalid_code"


class InvalidLink(AccountError):
    code = "invalid_link"

    def __init__(self) -> None:
        super().__init__("This link is invalid or has expired. Ask for a new one.")
