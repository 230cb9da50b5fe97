"""``--peer``: CPU pinning. Each server on core 0, wrk with PostgreSQL and Redis on core 1.

PostgreSQL and Redis are system services the bench never stops: it only moves the already
running processes (the postmaster, its backends, redis-server, every thread of each) to the
load core for the run and gives them back their previous affinity afterwards.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from bench.wrk import WrkJob

SERVER_CORE = 0  # the measured server (identity or the peer): one process
LOAD_CORE = 1  # wrk, PostgreSQL and Redis
SERVICES = ("postgres", "redis-server")  # process names, as `pgrep -x` matches them
_AFFINITY_LIST = re.compile(r"affinity list:\s*([0-9,\-]+)\s*$")


def taskset() -> str:
    found = shutil.which("taskset")
    if found is None:
        raise RuntimeError("taskset is missing (Debian package util-linux)")
    return found


def pinned(command: Sequence[str], core: int) -> list[str]:
    """``command`` run on ``core`` only (taskset execs it: the PID stays the command's)."""
    return [taskset(), "-c", str(core), *command]


@dataclass(frozen=True)
class PinnedWrkJob(WrkJob):
    """A wrk run on one core."""

    core: int = LOAD_CORE

    def command(self) -> list[str]:
        return pinned(super().command(), self.core)


def parse_affinity(output: str) -> str:
    """The CPU list of ``taskset -c -p PID``'s answer, e.g. ``0,1`` or ``0-1``."""
    match = _AFFINITY_LIST.search(output.strip())
    if match is None:
        raise ValueError(f"not an affinity list: {output!r}")
    return match[1]


def affinity_command(pid: int, cpus: str) -> list[str]:
    """Set the affinity of every thread (``-a``) of ``pid`` to ``cpus``."""
    return [taskset(), "-a", "-p", "-c", cpus, str(pid)]


def pids_of(name: str) -> list[int]:
    done = subprocess.run(  # noqa: S603
        ["pgrep", "-x", name],  # noqa: S607
        capture_output=True,
        text=True,
        check=False,
    )
    return [int(pid) for pid in done.stdout.split()]


def affinity_of(pid: int) -> str | None:
    """None when the process is gone (a backend may end at any time)."""
    done = subprocess.run(  # noqa: S603
        [taskset(), "-c", "-p", str(pid)], capture_output=True, text=True, check=False
    )
    return parse_affinity(done.stdout) if done.returncode == 0 else None


def set_affinity(pid: int, cpus: str) -> bool:
    done = subprocess.run(affinity_command(pid, cpus), capture_output=True, check=False)  # noqa: S603
    return done.returncode == 0


def parent_of(pid: int) -> int | None:
    """The parent PID, from /proc (None when the process is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # "pid (comm) state ppid ...": comm may hold spaces and parentheses, so cut at the last ")".
    return int(stat.rsplit(")", 1)[1].split()[1])


def root_of(pids: Sequence[int]) -> int | None:
    """The process of ``pids`` whose parent is not one of them: the postmaster."""
    among = set(pids)
    roots = [pid for pid in pids if parent_of(pid) not in among]
    return roots[0] if len(roots) == 1 else None


@dataclass
class Pinning:
    """What was moved, and where each process was before."""

    core: int
    before: dict[str, dict[int, str]] = field(default_factory=dict)  # name -> pid -> cpus
    moved: list[str] = field(default_factory=list)  # one line per service, for the report

    def fallback(self, name: str) -> str | None:
        """The affinity a process of ``name`` started during the run gets back: its root's
        (the postmaster's, which the new backend inherited core 1 from), else the first one
        seen."""
        saved = self.before.get(name, {})
        root = root_of(list(saved))
        if root is not None:
            return saved[root]
        return next(iter(saved.values()), None)


def pin_services(pinning: Pinning, names: Sequence[str] = SERVICES) -> None:
    """Move every process of ``names`` to ``pinning.core``, recording first where each was
    (filled in as it goes, so a failure halfway still restores what was moved)."""
    core = pinning.core
    for name in names:
        saved = pinning.before.setdefault(name, {})
        for pid in pids_of(name):
            cpus = affinity_of(pid)
            if cpus is not None:
                saved[pid] = cpus
        # Every affinity is read before any is changed: the fallback needs the root's.
        moved = [pid for pid in saved if set_affinity(pid, str(core))]
        previous = " and ".join(sorted(set(saved.values()))) or "-"
        pinning.moved.append(
            f"{name}: {len(moved)} of {len(saved)} processes moved to core {core} "
            f"(were on {previous})"
        )


def restore_services(pinning: Pinning) -> list[str]:
    """Every process of the pinned services back where it was; a process started during the
    run (a PostgreSQL backend) gets its root's previous affinity. Problems, one a line."""
    problems: list[str] = []
    for name, saved in pinning.before.items():
        fallback = pinning.fallback(name)
        for pid in pids_of(name):
            cpus = saved.get(pid, fallback)
            if cpus is not None and not set_affinity(pid, cpus) and pid in saved:
                problems.append(f"{name} {pid}: could not restore its affinity {cpus}")
    return problems


@contextmanager
def services_on_core(core: int = LOAD_CORE) -> Iterator[Pinning]:
    """PostgreSQL and Redis on ``core`` for the duration; their affinity restored after, also
    on failure."""
    pinning = Pinning(core)
    try:
        pin_services(pinning)
        yield pinning
    finally:
        for problem in restore_services(pinning):
            print(f"WARNING: {problem}", flush=True)
