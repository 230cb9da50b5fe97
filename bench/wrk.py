"""wrk: install it when missing, run it (alone or several at once), parse its report."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}
_DURATION = r"([0-9.]+)(us|ms|s|m|h)"
_RPS = re.compile(r"^Requests/sec:\s+([0-9.]+)", re.MULTILINE)
_PERCENTILE = r"^\s+{}%\s+" + _DURATION
_SOCKET = re.compile(
    r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", re.MULTILINE
)
_NON_2XX = re.compile(r"Non-2xx or 3xx responses: (\d+)")
_REQUESTS = re.compile(r"^\s+(\d+) requests in", re.MULTILINE)
_CONNECTIONS = re.compile(r"^\s+\d+ threads and (\d+) connections", re.MULTILINE)
# What the bench's Lua ``done()`` functions print, e.g. "bench pool_exhausted: 0".
_COUNTER = re.compile(r"^bench ([a-z_]+): (\d+)$", re.MULTILINE)
# wrk only stops at the end of -d; this is how long past it we wait before calling it hung.
_GRACE_SECONDS = 60


class WrkError(RuntimeError):
    """wrk could not be installed, or its output could not be read."""


@dataclass(frozen=True)
class WrkResult:
    requests: int
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    socket_errors: int
    connections: int = 0
    counters: dict[str, int] = field(default_factory=dict)  # from the script's done()

    @property
    def errors(self) -> int:
        return self.non_2xx + self.socket_errors

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "errors": self.errors}


@dataclass(frozen=True)
class WrkJob:
    """One wrk invocation. ``timeout_seconds`` is wrk's own per-request timeout (its default
    of 2 s would count every slow argon2 login as a socket error)."""

    url: str
    seconds: int
    script: Path | None = None
    threads: int = 2
    connections: int = 32
    timeout_seconds: int | None = None

    def command(self) -> list[str]:
        command = [ensure_wrk(), f"-t{self.threads}", f"-c{self.connections}"]
        command += [f"-d{self.seconds}s", "--latency"]
        if self.timeout_seconds is not None:
            command.append(f"--timeout={self.timeout_seconds}s")
        if self.script is not None:
            command += ["-s", str(self.script)]
        return [*command, self.url]


def _percentile_ms(output: str, percentile: int) -> float:
    match = re.search(_PERCENTILE.format(percentile), output, re.MULTILINE)
    if match is None:
        raise WrkError(f"no {percentile}% line in wrk output (was --latency given?)")
    return float(match[1]) * _UNITS_MS[match[2]]


def parse_wrk_output(output: str) -> WrkResult:
    """Read requests/s, p50, p99, error counts and the script's counters from the text
    ``wrk --latency`` prints."""
    rps = _RPS.search(output)
    requests = _REQUESTS.search(output)
    if rps is None or requests is None:
        raise WrkError(f"no Requests/sec line in wrk output:\n{output}")
    socket = _SOCKET.search(output)
    non_2xx = _NON_2XX.search(output)
    connections = _CONNECTIONS.search(output)
    return WrkResult(
        requests=int(requests[1]),
        requests_per_second=float(rps[1]),
        p50_ms=_percentile_ms(output, 50),
        p99_ms=_percentile_ms(output, 99),
        non_2xx=int(non_2xx[1]) if non_2xx else 0,
        socket_errors=sum(int(n) for n in socket.groups()) if socket else 0,
        connections=int(connections[1]) if connections else 0,
        counters={name: int(value) for name, value in _COUNTER.findall(output)},
    )


def ensure_wrk() -> str:
    """The path of wrk, installing the Debian package first when it is missing."""
    found = shutil.which("wrk")
    if found:
        return found
    apt = shutil.which("apt-get")
    if apt is None:
        raise WrkError("wrk is missing and there is no apt-get to install it")
    install = [apt, "install", "-y", "wrk"]
    if subprocess.run(install, check=False).returncode != 0:  # noqa: S603
        subprocess.run([apt, "update"], check=True)  # noqa: S603
        subprocess.run(install, check=True)  # noqa: S603
    found = shutil.which("wrk")
    if not found:
        raise WrkError("wrk is still missing after apt-get install wrk")
    return found


def start_wrk(job: WrkJob) -> subprocess.Popen[str]:
    return subprocess.Popen(  # noqa: S603
        job.command(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def finish_wrk(process: subprocess.Popen[str], timeout: float) -> WrkResult:
    """Wait for a started wrk and parse its report; kill it (by its PID) if it hangs."""
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    if process.returncode != 0:
        raise WrkError(f"wrk failed ({process.returncode}): {stderr.strip()}")
    return parse_wrk_output(stdout)


def run_wrk(job: WrkJob) -> WrkResult:
    return finish_wrk(start_wrk(job), job.seconds + _GRACE_SECONDS)


def run_beside(
    background: WrkJob, measured: list[WrkJob], lead_seconds: float
) -> tuple[WrkResult, list[WrkResult]]:
    """Start ``background`` (a load that must already be in full swing), wait
    ``lead_seconds``, then run ``measured`` all at once; every result once all have ended."""
    processes: list[subprocess.Popen[str]] = []
    try:
        processes.append(start_wrk(background))
        time.sleep(lead_seconds)
        processes += [start_wrk(job) for job in measured]
        jobs = [background, *measured]
        results = [
            finish_wrk(process, job.seconds + _GRACE_SECONDS)
            for process, job in zip(processes, jobs, strict=True)
        ]
        return results[0], results[1:]
    finally:
        for process in processes:  # survivors only when an earlier one failed
            if process.poll() is None:
                process.kill()
                process.wait()
