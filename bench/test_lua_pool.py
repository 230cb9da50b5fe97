"""Unit tests of the refresh-token pool's sizing and files: ``pytest bench/test_lua_pool.py``."""

from __future__ import annotations

from pathlib import Path

from bench.lua import pacing_interval
from bench.lua_pool import pool_size, read_harvest, split, write_pool

TOKEN = "A" * 43


def test_pool_size_covers_the_run_twice_and_never_drops_below_100() -> None:
    assert pool_size(500.0, 5) == 5000
    assert pool_size(1000.0, 5, share=0.15) == 1500
    assert pool_size(3.0, 1) == 100


def test_split_deals_every_token_exactly_once() -> None:
    tokens = [f"t{n}" for n in range(7)]
    parts = split(tokens, 2)
    assert [len(part) for part in parts] == [4, 3]
    assert sorted(token for part in parts for token in part) == sorted(tokens)


def test_written_pool_reads_back_per_thread(tmp_path: Path) -> None:
    tokens = [TOKEN + str(n) for n in range(5)]
    prefix = write_pool(tmp_path, "refresh", tokens, 2)
    assert Path(prefix + "1.txt").read_text().splitlines() == tokens[0::2]
    assert sorted(read_harvest(prefix, 2)) == sorted(tokens)


def test_harvest_reading_drops_a_line_cut_short(tmp_path: Path) -> None:
    (tmp_path / "harvest-1.txt").write_text(f"{TOKEN}\n{TOKEN[:5]}")
    assert read_harvest(str(tmp_path / "harvest-"), 2) == [TOKEN]


def test_pacing_interval_is_per_thread() -> None:
    assert pacing_interval(400.0, 2) == 0.005
