"""wrk: install it when missing, run it, and parse its ``--latency`` report."""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import asdict, dataclass
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

    @property
    def errors(self) -> int:
        return self.non_2xx + self.socket_errors

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "errors": self.errors}


def _percentile_ms(output: str, percentile: int) -> float:
    match = re.search(_PERCENTILE.format(percentile), output, re.MULTILINE)
    if match is None:
        raise WrkError(f"no {percentile}% line in wrk output (was --latency given?)")
    return float(match[1]) * _UNITS_MS[match[2]]


def parse_wrk_output(output: str) -> WrkResult:
    """Read requests/s, p50, p99 and error counts from the text ``wrk --latency`` prints."""
    rps = _RPS.search(output)
    requests = _REQUESTS.search(output)
    if rps is None or requests is None:
        raise WrkError(f"no Requests/sec line in wrk output:\n{output}")
    socket = _SOCKET.search(output)
    non_2xx = _NON_2XX.search(output)
    return WrkResult(
        requests=int(requests[1]),
        requests_per_second=float(rps[1]),
        p50_ms=_percentile_ms(output, 50),
        p99_ms=_percentile_ms(output, 99),
        non_2xx=int(non_2xx[1]) if non_2xx else 0,
        socket_errors=sum(int(n) for n in socket.groups()) if socket else 0,
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


def run_wrk(
    url: str, seconds: int, *, script: Path | None = None, threads: int = 2, connections: int = 32
) -> WrkResult:
    command = [ensure_wrk(), f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency"]
    if script is not None:
        command += ["-s", str(script)]
    done = subprocess.run(  # noqa: S603
        [*command, url], capture_output=True, text=True, check=False, timeout=seconds + 60
    )
    if done.returncode != 0:
        raise WrkError(f"wrk failed ({done.returncode}): {done.stderr.strip()}")
    return parse_wrk_output(done.stdout)
