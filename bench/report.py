"""The results table, its JSON file, and the comparison with an earlier run."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.wrk import WrkResult


@dataclass(frozen=True)
class Row:
    scenario: str
    workers: int
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    errors: int
    limit: str | None = None  # the scenario whose req/s bounds this one
    ratio: float | None = None  # req/s divided by the limit's req/s

    @classmethod
    def of(cls, scenario: str, workers: int, result: WrkResult) -> Row:
        return cls(
            scenario,
            workers,
            result.requests_per_second,
            result.p50_ms,
            result.p99_ms,
            result.errors,
        )

    def against(self, limit: Row) -> Row:
        ratio = self.requests_per_second / limit.requests_per_second
        return Row(**{**asdict(self), "limit": limit.scenario, "ratio": ratio})


_HEADER = ("scenario", "workers", "req/s", "p50 ms", "p99 ms", "errors", "ratio to limit")


def _cells(row: Row) -> tuple[str, ...]:
    ratio = "-" if row.ratio is None else f"{row.ratio:.2f} of {row.limit}"
    return (
        row.scenario,
        str(row.workers),
        f"{row.requests_per_second:,.0f}",
        f"{row.p50_ms:.2f}",
        f"{row.p99_ms:.2f}",
        str(row.errors),
        ratio,
    )


def format_table(rows: list[Row]) -> str:
    lines = [_HEADER, *(_cells(row) for row in rows)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(_HEADER))]
    lines.insert(1, tuple("-" * width for width in widths))
    text = [
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True))
        for line in lines
    ]
    return "\n".join(line.rstrip() for line in text)


def write_results(folder: Path, stamp: str, meta: dict[str, Any], rows: list[Row]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{stamp}.json"
    path.write_text(json.dumps({**meta, "scenarios": [asdict(r) for r in rows]}, indent=2) + "\n")
    return path


def _change(old: float, new: float) -> str:
    return "n/a" if old == 0 else f"{(new - old) / old * 100:+.1f}%"


def format_comparison(old: dict[str, Any], rows: list[Row]) -> str:
    """Per scenario (matched by name): old and new req/s and p99, and the change."""
    before = {r["scenario"]: r for r in old.get("scenarios", [])}
    lines = [f"compared with {old.get('timestamp', '?')} ({old.get('mode', '?')}):"]
    for row in rows:
        previous = before.get(row.scenario)
        if previous is None:
            lines.append(f"  {row.scenario}: not in the old run")
            continue
        rps, p99 = previous["requests_per_second"], previous["p99_ms"]
        workers = (
            ""
            if previous["workers"] == row.workers
            else (f" [workers {previous['workers']} -> {row.workers}]")
        )
        lines.append(
            f"  {row.scenario}: req/s {rps:,.0f} -> {row.requests_per_second:,.0f} "
            f"({_change(rps, row.requests_per_second)}), p99 {p99:.2f} -> {row.p99_ms:.2f} ms "
            f"({_change(p99, row.p99_ms)}){workers}"
        )
    return "\n".join(lines)
