"""The parsers of ``IDENTITY_*`` values: each turns the raw text of one variable into the
setting's type, or raises ValueError with what it expected (``Settings.from_env`` names the
variable). No knowledge of any one setting lives here."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable


def boolean(raw: str) -> bool:
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError("expected on/off, true/false, yes/no or 1/0")


def whole_number(raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise ValueError("expected a whole number") from None


def positive_int(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value <= 0:
        raise ValueError("expected a whole number above 0")
    return value


def non_negative_float(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value >= 0:  # also refuses nan
        raise ValueError("expected a number of seconds, 0 or more")
    return value


def seconds_list(raw: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in word_list(raw))
    except ValueError:
        values = ()
    if not values or min(values) <= 0:
        raise ValueError("expected whole numbers of seconds above 0, separated by spaces")
    return values


def positive_float(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        value = 0.0
    if not value > 0 or value == float("inf"):  # also refuses nan
        raise ValueError("expected a number of seconds above 0")
    return value


def word_list(raw: str) -> tuple[str, ...]:
    return tuple(part for part in raw.replace(",", " ").split() if part)


def networks(raw: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(part, strict=False) for part in word_list(raw))


def optional(raw: str) -> str | None:
    return raw.strip() or None


def one_of(*choices: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip().lower()
        if value not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}")
        return value

    return parse
