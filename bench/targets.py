"""The targets of issue #7, each checked against one row of the table."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Target:
    """``metric`` (the row's ratio to its limit, or its p99) at least / below ``value``."""

    metric: Literal["ratio", "p99_ms"]
    bound: Literal[">=", "<"]
    value: float

    def describe(self) -> str:
        if self.metric == "ratio":
            return f"ratio {self.bound} {self.value:.2f}"
        return f"p99 {self.bound} {self.value:g} ms"

    def met_by(self, measured: float | None, errors: int) -> bool | None:
        """None when there is nothing to judge; a run with errors never meets a target
        (its figures may be those of cheap refusals)."""
        if measured is None:
            return None
        within = measured >= self.value if self.bound == ">=" else measured < self.value
        return within and errors == 0


REFRESH = Target("ratio", ">=", 0.40)  # of ceiling: sign RS256
USERINFO = Target("ratio", ">=", 0.50)  # of ceiling: bare JSON
LOGIN = Target("ratio", ">=", 0.85)  # of argon2id verifies/s x workers
TOKEN_AT_80_PERCENT = Target("p99_ms", "<", 25.0)
SCALING = Target("ratio", ">=", 1.60)  # N workers over 1 worker
DURING_FLOOD = Target("p99_ms", "<", 50.0)  # userinfo and JWKS beside a login flood
