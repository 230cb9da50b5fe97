"""Child processes: a free loopback port, start, wait until it answers, stop by PID."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

STOP_GRACE_SECONDS = 10.0
REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class Processes:
    """Every process the bench started, so ``stop_all`` can end each one by its PID."""

    def __init__(self) -> None:
        self._started: list[subprocess.Popen[bytes]] = []

    def start(
        self, command: Sequence[str], env: Mapping[str, str] | None = None, log: Path | None = None
    ) -> subprocess.Popen[bytes]:
        output = open(log, "wb") if log is not None else subprocess.DEVNULL  # noqa: SIM115
        try:
            process = subprocess.Popen(  # noqa: S603
                list(command),
                env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
                cwd=REPO,
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        finally:
            if log is not None and not isinstance(output, int):
                output.close()
        self._started.append(process)
        return process

    def stop(self, process: subprocess.Popen[bytes]) -> None:
        """SIGTERM, then SIGKILL when it is still running after the grace period."""
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(STOP_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process in self._started:
            self._started.remove(process)

    def stop_all(self) -> None:
        for process in reversed(list(self._started)):
            self.stop(process)


def python_command(*args: str) -> list[str]:
    return [sys.executable, *args]


def wait_ready(
    url: str, process: subprocess.Popen[bytes], timeout: float = 60.0, log: Path | None = None
) -> None:
    """Poll ``url`` until it answers 2xx; RuntimeError (with the log's tail) if the process
    exits or time runs out."""
    try:
        _poll(url, process, timeout)
    except RuntimeError as error:
        tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
        raise RuntimeError(f"{error}\n{tail}") from None


def _poll(url: str, process: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url}: the server exited with status {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310
                if 200 <= response.status < 300:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f}s")


def copy_logs(logs: list[Path], destination: Path | None, name: Callable[[Path], str]) -> None:
    """Copy ``logs`` into ``destination`` (made if needed) as ``name(log)``: the servers'
    logs outlive the temporary folder, as they are where a 500 shows up."""
    if destination is None or not logs:
        return
    destination.mkdir(parents=True, exist_ok=True)
    for log in logs:
        shutil.copy(log, destination / name(log))
