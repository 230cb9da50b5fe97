"""``python -m bench``: building blocks, ceilings and identity's endpoints under wrk."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import micro, peer
from bench.peer import PeerOptions
from bench.report import format_comparison, format_table, summarise_logs, write_results
from bench.runner import Options, run
from bench.wrk import ensure_wrk
from identity.config import Settings

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_DATABASE = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--seconds", type=int, help="per wrk run and per building block (5; 10 with --peer)"
    )
    parser.add_argument("--embedded", action="store_true", help="SQLite and no Redis")
    parser.add_argument("--database-url", default=DEFAULT_DATABASE, help="PostgreSQL server")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--compare", type=Path, metavar="OLD.json", help="an earlier result")
    parser.add_argument(
        "--peer",
        action="store_true",
        help="side by side with node-oidc-provider, each server one process pinned to core 0 "
        "(--workers does not apply; --embedded leaves out PostgreSQL + Redis)",
    )
    return parser


def _building_blocks(seconds: int) -> dict[str, Any]:
    settings = Settings.from_env()
    signs = micro.rs256_signs_per_second(seconds)
    verifies, cpu = micro.argon2_verifies(settings, seconds)
    print(f"RS256 signs/s, one core:      {signs:,.0f}")
    print(
        f"argon2id verifies/s, one core: {verifies:,.1f} (m={settings.argon2_memory_kib} KiB, "
        f"t={settings.argon2_time_cost}, p={settings.argon2_parallelism}); "
        f"{cpu * 1000:,.0f} ms of CPU per verify against {1000 / verifies:,.0f} ms of wall time"
        # More CPU than wall time: the lanes ran on threads, one verify kept several cores busy.
        + (" (lanes on threads: more than one core busy)" if cpu * verifies > 1.1 else ""),
        flush=True,
    )
    return {
        "rs256_signs_per_second": signs,
        "argon2id_verifies_per_second": verifies,
        "argon2id_cpu_seconds_per_verify": cpu,
        "argon2": {
            "memory_kib": settings.argon2_memory_kib,
            "time_cost": settings.argon2_time_cost,
            "parallelism": settings.argon2_parallelism,
        },
    }


def _peer(args: argparse.Namespace) -> int:
    # The peer is installed into a temporary folder each run (npm's own cache makes it quick).
    with tempfile.TemporaryDirectory(prefix="identity-peer-npm-") as npm_prefix:
        options = PeerOptions(
            seconds=10 if args.seconds is None else args.seconds,
            database_url=args.database_url,
            redis_url=args.redis_url,
            npm_prefix=Path(npm_prefix),
            embedded_only=args.embedded,
        )
        return peer.main(options, RESULTS)


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.peer:
        if args.compare:
            parser.error("--compare does not apply to --peer")
        return _peer(args)
    if args.seconds is None:
        args.seconds = 5
    old = json.loads(args.compare.read_text()) if args.compare else None
    ensure_wrk()
    started = datetime.now(UTC)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    blocks = _building_blocks(args.seconds)
    logs = RESULTS / f"{stamp}-logs"
    options = Options(
        args.workers, args.seconds, args.embedded, args.database_url, args.redis_url, logs
    )
    rows = run(options, blocks["argon2id_verifies_per_second"])
    print()
    print(format_table(rows))
    meta = {
        "timestamp": started.isoformat(timespec="seconds"),
        "mode": "embedded" if args.embedded else "postgresql+redis",
        "workers": args.workers,
        "seconds": args.seconds,
        "cpu_count": os.cpu_count(),
        "building_blocks": blocks,
    }
    meta["run_seconds"] = round((datetime.now(UTC) - started).total_seconds())
    path = write_results(RESULTS, stamp, meta, rows)
    print(f"\nwritten to {path} in {meta['run_seconds']} s")
    print(summarise_logs(logs))
    if old is not None:
        print()
        print(format_comparison(old, rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
