"""What people type, cleaned once: email addresses and display names."""

from __future__ import annotations

import unicodedata

from email_validator import EmailNotValidError, validate_email

from identity.accounts.errors import InvalidInput


def normalise_email(raw: str) -> str:
    """Trimmed, NFKC, lower-cased and syntactically valid, or InvalidInput."""
    value = unicodedata.normalize("NFKC", raw.strip()).lower()
    if not value or len(value) > 320:
        raise InvalidInput({"email": "Enter a valid email address."})
    try:
        checked = validate_email(value, check_deliverability=False)
    except EmailNotValidError:
        raise InvalidInput({"email": "Enter a valid email address."}) from None
    return str(checked.normalized).lower()


def clean_name(raw: str) -> str:
    name = unicodedata.normalize("NFKC", raw).strip()
    if not name or len(name) > 200 or any(unicodedata.category(c) == "Cc" for c in name):
        raise InvalidInput({"name": "Enter your name (up to 200 characters)."})
    return name
