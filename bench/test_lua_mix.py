"""Unit tests of the mixed load's schedule and rate estimate: ``pytest bench/test_lua_mix.py``."""

from __future__ import annotations

from collections import Counter
from itertools import pairwise

import pytest

from bench.lua_mix import MIX, harmonic_rate, schedule, share


def test_schedule_keeps_the_proportions_exactly_over_one_cycle() -> None:
    cycle = schedule(MIX)
    assert len(cycle) == 20  # 60/20/15/5 reduced by 5
    assert Counter(cycle) == {
        "userinfo": 12,
        "introspection": 4,
        "refresh": 3,
        "client_credentials": 1,
    }


def test_schedule_spreads_each_kind_out() -> None:
    cycle = schedule({"a": 1, "b": 1})
    assert cycle == ["a", "b"]
    refreshes = [i for i, name in enumerate(schedule(MIX)) if name == "refresh"]
    assert min(b - a for a, b in pairwise(refreshes)) >= 5  # never back to back


def test_harmonic_rate_weighs_the_cost_of_each_part() -> None:
    # Half the requests cost 1 ms, half 3 ms: 2 ms on average, 500 a second.
    assert harmonic_rate({"a": 1, "b": 1}, {"a": 1000.0, "b": 1000.0 / 3}) == pytest.approx(500.0)
    assert harmonic_rate({"a": 3}, {"a": 42.0}) == pytest.approx(42.0)


def test_share_of_refresh() -> None:
    assert share("refresh") == 0.15
