"""Unit tests of the targets and their column: ``pytest bench/test_targets.py``."""

from __future__ import annotations

from bench import targets
from bench.report import Row, format_table


def test_ratio_target_is_met_at_or_above_its_value() -> None:
    sign = Row("ceiling: sign RS256", 2, 1000.0, 1.0, 2.0, 0)
    row = Row("refresh", 2, 400.0, 5.0, 20.0, 0).against(sign).judged(targets.REFRESH)
    assert row.met is True
    assert "ratio >= 0.40: yes" in format_table([row])


def test_p99_target_is_met_strictly_below_its_value() -> None:
    row = Row("jwks during login flood", 2, 900.0, 3.0, 50.0, 0).judged(targets.DURING_FLOOD)
    assert row.met is False
    assert "p99 < 50 ms: NO" in format_table([row])


def test_a_run_with_errors_never_meets_its_target() -> None:
    row = Row("userinfo", 2, 9000.0, 1.0, 2.0, 3).against_rate("bare", 10000.0)
    assert row.judged(targets.USERINFO).met is False


def test_notes_are_printed_under_the_table() -> None:
    row = Row("refresh", 2, 1.0, 1.0, 1.0, 0).noted("pool of 10").noted("ran out 0 times")
    assert format_table([row]).endswith("* refresh: pool of 10; ran out 0 times")


def test_a_run_without_requests_never_meets_a_p99_target() -> None:
    row = Row("jwks during login flood", 2, 0.0, 0.0, 0.0, 0).judged(targets.DURING_FLOOD)
    assert row.met is False
