"""The results table, its JSON file, and the comparison with an earlier run."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from bench.targets import Target
from bench.wrk import WrkResult


@dataclass(frozen=True)
class Row:
    scenario: str
    workers: int
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    errors: int
    limit: str | None = None  # what bounds this scenario's req/s
    ratio: float | None = None  # req/s divided by the limit's req/s
    connections: int = 0  # wrk -c; the p99 of 4 connections and of 32 are not alike
    target: str | None = None  # e.g. "ratio >= 0.40"
    met: bool | None = None
    note: str | None = None  # printed under the table

    @classmethod
    def of(cls, scenario: str, workers: int, result: WrkResult) -> Row:
        return cls(
            scenario,
            workers,
            result.requests_per_second,
            result.p50_ms,
            result.p99_ms,
            result.errors,
            connections=result.connections,
            # wrk then prints 0 for every latency: say so rather than let it pass for fast.
            note=None if result.requests else "NO request completed within the run",
        )

    def against(self, limit: Row) -> Row:
        return self.against_rate(limit.scenario, limit.requests_per_second)

    def against_rate(self, name: str, requests_per_second: float) -> Row:
        """The ratio to a limit that is not a row of its own (e.g. argon2id x workers)."""
        ratio = self.requests_per_second / requests_per_second
        return replace(self, limit=name, ratio=ratio)

    def judged(self, target: Target) -> Row:
        measured = self.ratio if target.metric == "ratio" else self.p99_ms
        met = target.met_by(measured, self.errors) and self.requests_per_second > 0
        return replace(self, target=target.describe(), met=met)

    def noted(self, note: str) -> Row:
        return replace(self, note=note if self.note is None else f"{self.note}; {note}")


_HEADER = (
    "scenario", "workers", "conns", "req/s", "p50 ms", "p99 ms", "errors", "ratio to limit",
    "target",
)  # fmt: skip


def _cells(row: Row) -> tuple[str, ...]:
    ratio = "-" if row.ratio is None else f"{row.ratio:.2f} of {row.limit}"
    target = "-" if row.target is None else f"{row.target}: {'yes' if row.met else 'NO'}"
    return (
        row.scenario,
        str(row.workers),
        str(row.connections or "-"),
        f"{row.requests_per_second:,.0f}",
        f"{row.p50_ms:.2f}",
        f"{row.p99_ms:.2f}",
        str(row.errors),
        ratio,
        target,
    )


def format_table(rows: list[Row]) -> str:
    lines = [_HEADER, *(_cells(row) for row in rows)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(_HEADER))]
    lines.insert(1, tuple("-" * width for width in widths))
    text = [
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True))
        for line in lines
    ]
    notes = [f"* {row.scenario}: {row.note}" for row in rows if row.note]
    return "\n".join([*(line.rstrip() for line in text), *(["", *notes] if notes else [])])


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


def _log_message(line: str) -> str:
    """``LEVEL message`` of a JSON log line (identity's format), else the line itself."""
    try:
        record = json.loads(line)
    except ValueError:
        return line.strip()
    if not isinstance(record, dict):
        return line.strip()
    return f"{record.get('level', '?')} {record.get('message', line.strip())}"


def summarise_logs(folder: Path, shown: int = 6) -> str:
    """Per server log: how many lines (every server logs at warning, so each is worth a
    look) and its most frequent distinct messages."""
    if not folder.is_dir():
        return "no server logs kept"
    lines = [f"server logs kept in {folder}:"]
    for log in sorted(folder.glob("*.log")):
        counts: dict[str, int] = {}
        for line in log.read_text(errors="replace").splitlines():
            if line.strip():
                message = _log_message(line)[:160]
                counts[message] = counts.get(message, 0) + 1
        lines.append(f"  {log.name}: {sum(counts.values())} lines")
        ranked = sorted(counts.items(), key=lambda item: -item[1])
        lines += [f"    {count} x {message}" for message, count in ranked[:shown]]
    return "\n".join(lines)
