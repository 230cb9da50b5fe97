"""``--peer``: the side-by-side table, the targets against node-oidc-provider, the JSON file.

Pure: every figure comes in as a :class:`Cell` (one wrk run of one server), keyed by scenario
and side.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from bench.wrk import WrkResult

PEER = "peer"
SQLITE = "sqlite"
PG = "pg"
IDENTITY_SIDES = (SQLITE, PG)
SIDE_NAMES = {PEER: "peer", SQLITE: "identity SQLite", PG: "identity PG+Redis"}
# The table's order; refresh is measured on identity PG+Redis only.
SCENARIOS = ("client_credentials", "introspection", "jwks", "discovery", "refresh")
# Its ratio is to identity PG+Redis's own client_credentials, not to the peer.
OWN_REFERENCE = {"refresh": ("client_credentials", PG)}

# results[scenario][side]
Results = dict[str, dict[str, "Cell"]]


@dataclass(frozen=True)
class Cell:
    """One measured wrk run of one server."""

    requests_per_second: float
    p50_ms: float
    p99_ms: float
    errors: int  # non-2xx/3xx answers plus socket errors (connect, read, write, timeout)
    requests: int
    connections: int

    @classmethod
    def of(cls, result: WrkResult) -> Cell:
        return cls(
            result.requests_per_second, result.p50_ms, result.p99_ms, result.errors,
            result.requests, result.connections,
        )  # fmt: skip

    @property
    def sound(self) -> bool:
        """Completed requests and no error: its figures may be judged."""
        return self.errors == 0 and self.requests > 0


def reference_of(scenario: str) -> tuple[str, str]:
    """The (scenario, side) an identity cell of ``scenario`` is divided by in the table."""
    return OWN_REFERENCE.get(scenario, (scenario, PEER))


def ratio(results: Results, scenario: str, side: str) -> float | None:
    """req/s of ``side`` over its reference's req/s (see ``reference_of``)."""
    cell = results.get(scenario, {}).get(side)
    ref_scenario, ref_side = reference_of(scenario)
    reference = results.get(ref_scenario, {}).get(ref_side)
    if cell is None or reference is None or reference.requests_per_second <= 0:
        return None
    return cell.requests_per_second / reference.requests_per_second


@dataclass(frozen=True)
class PeerTarget:
    """``scenario`` on each of ``sides`` against the cell ``against`` (scenario, side):
    req/s at least ``factor`` times its req/s, or p99 at most ``factor`` times its p99."""

    scenario: str
    metric: Literal["rps", "p99"]
    against: tuple[str, str]
    factor: float
    label: str
    sides: tuple[str, ...] = IDENTITY_SIDES


TARGETS = (
    PeerTarget(
        "client_credentials", "rps", ("client_credentials", PEER), 1.2,
        "client_credentials req/s >= 1.2 x peer's",
    ),
    PeerTarget(
        "client_credentials", "p99", ("client_credentials", PEER), 1 / 3,
        "client_credentials p99 <= peer's p99 / 3 (both at -c64, each at its own peak)",
    ),
    PeerTarget(
        "introspection", "rps", ("introspection", PEER), 1.0, "introspection req/s >= 1.0 x peer's"
    ),
    PeerTarget("jwks", "rps", ("jwks", PEER), 1.2, "jwks req/s >= 1.2 x peer's jwks"),
    PeerTarget("discovery", "rps", ("jwks", PEER), 1.2, "discovery req/s >= 1.2 x peer's JWKS"),
    PeerTarget(
        "refresh", "rps", ("client_credentials", PG), 0.5,
        "refresh req/s >= 0.5 x identity PG+Redis's own client_credentials", (PG,),
    ),
)  # fmt: skip


@dataclass(frozen=True)
class Verdict:
    label: str
    scenario: str
    side: str
    metric: str
    measured: float | None  # the ratio (rps) or identity's p99 in ms (p99)
    bound: float | None  # the least ratio (rps) or the largest p99 in ms (p99)
    met: bool | None  # None: nothing measured to judge
    why: str | None = None  # why it is not met although the figure would be


def judge(target: PeerTarget, results: Results, side: str) -> Verdict:
    cell = results.get(target.scenario, {}).get(side)
    reference = results.get(target.against[0], {}).get(target.against[1])
    base = Verdict(target.label, target.scenario, side, target.metric, None, None, None)
    if cell is None or reference is None or reference.requests == 0:
        return base
    if target.metric == "rps":
        measured = cell.requests_per_second / reference.requests_per_second
        bound, within = target.factor, measured >= target.factor
    else:
        measured, bound = cell.p99_ms, reference.p99_ms * target.factor
        within = measured <= bound
    why = None
    if not cell.sound:  # a row with errors never meets its target
        why = f"{cell.errors} errors" if cell.errors else "no request completed"
    met = within and why is None
    return Verdict(target.label, target.scenario, side, target.metric, measured, bound, met, why)


def verdicts(results: Results) -> list[Verdict]:
    return [judge(target, results, side) for target in TARGETS for side in target.sides]


def _rps(cell: Cell | None) -> str:
    return "-" if cell is None else f"{cell.requests_per_second:,.0f}"


def _p99(cell: Cell | None) -> str:
    return "-" if cell is None else f"{cell.p99_ms:.2f}"


def _errors(cell: Cell | None) -> str:
    return "-" if cell is None else str(cell.errors)


def _ratio(results: Results, scenario: str, side: str) -> str:
    value = ratio(results, scenario, side)
    if value is None:
        return "-"
    return f"{value:.2f}" + ("*" if scenario in OWN_REFERENCE else "")


_HEADER = (
    "scenario",
    "peer req/s", "p99 ms", "err",
    "SQLite req/s", "p99 ms", "err", "ratio",
    "PG+Redis req/s", "p99 ms", "err", "ratio",
)  # fmt: skip


def table_lines(results: Results) -> list[tuple[str, ...]]:
    lines: list[tuple[str, ...]] = []
    for scenario in SCENARIOS:
        sides = results.get(scenario)
        if not sides:
            continue
        peer, sqlite, pg = sides.get(PEER), sides.get(SQLITE), sides.get(PG)
        lines.append(
            (
                scenario,
                _rps(peer), _p99(peer), _errors(peer),
                _rps(sqlite), _p99(sqlite), _errors(sqlite), _ratio(results, scenario, SQLITE),
                _rps(pg), _p99(pg), _errors(pg), _ratio(results, scenario, PG),
            )
        )  # fmt: skip
    return lines


def format_table(results: Results) -> str:
    lines = [_HEADER, *table_lines(results)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(_HEADER))]
    lines.insert(1, tuple("-" * width for width in widths))
    text = [
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in lines
    ]
    notes = ["ratio: identity's req/s over the peer's in the same scenario"]
    if any(scenario in results for scenario in OWN_REFERENCE):
        notes.append("* refresh: over identity PG+Redis's own client_credentials req/s")
    return "\n".join([*text, "", *notes])


def _verdict_cell(verdict: Verdict) -> str:
    name = SIDE_NAMES[verdict.side]
    if verdict.met is None or verdict.measured is None or verdict.bound is None:
        return f"{name}: not measured"
    if verdict.metric == "rps":
        figure = f"{verdict.measured:.2f}x"
    else:
        figure = f"{verdict.measured:.2f} ms (bound {verdict.bound:.2f} ms)"
    answer = "yes" if verdict.met else "NO"
    return f"{name}: {figure} {answer}" + (f" ({verdict.why})" if verdict.why else "")


def format_targets(found: list[Verdict]) -> str:
    lines = ["targets (a row with errors never meets its target):"]
    for target in TARGETS:
        lines.append(f"  {target.label}:")
        lines += [f"    {_verdict_cell(v)}" for v in found if v.label == target.label]
    return "\n".join(lines)


def peer_warnings(results: Results) -> list[str]:
    """The peer's own errors: its req/s counts completed requests only, and a request that
    timed out (wrk's 2 s) has no latency in its p99."""
    return [
        f"the peer's {scenario} run had {sides[PEER].errors} errors"
        for scenario, sides in results.items()
        if PEER in sides and sides[PEER].errors
    ]


def write_results(
    folder: Path, stamp: str, meta: dict[str, Any], results: Results, notes: dict[str, str]
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{stamp}-peer.json"
    data = {
        **meta,
        "scenarios": {
            scenario: {
                **{side: asdict(cell) for side, cell in sides.items()},
                "ratio": {side: ratio(results, scenario, side) for side in IDENTITY_SIDES},
                "ratio_to": " ".join(reversed(reference_of(scenario))),
                **({"note": notes[scenario]} if scenario in notes else {}),
            }
            for scenario, sides in results.items()
        },
        "targets": [asdict(v) for v in verdicts(results)],
    }
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path
