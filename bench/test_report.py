"""Unit tests of the table and the comparison: ``pytest bench/test_report.py``."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from bench.report import Row, format_comparison, format_table


def test_ratio_is_taken_against_the_limit() -> None:
    limit = Row("ceiling: bare JSON", 2, 10_000.0, 1.0, 2.0, 0)
    row = Row("jwks", 2, 8_000.0, 1.5, 3.0, 1).against(limit)
    assert row.ratio == 0.8
    assert "0.80 of ceiling: bare JSON" in format_table([limit, row])


def test_comparison_reports_the_change_per_scenario() -> None:
    old: dict[str, Any] = {"timestamp": "t0", "mode": "embedded"}
    old["scenarios"] = [asdict(Row("jwks", 1, 1000.0, 1.0, 4.0, 0))]
    text = format_comparison(old, [Row("jwks", 2, 1500.0, 1.0, 2.0, 0), Row("x", 2, 1, 1, 1, 0)])
    assert "req/s 1,000 -> 1,500 (+50.0%)" in text
    assert "p99 4.00 -> 2.00 ms (-50.0%)" in text
    assert "[workers 1 -> 2]" in text
    assert "x: not in the old run" in text
