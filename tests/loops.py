"""Running a coroutine from a test."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run_in_own_loop(scenario: Callable[[], Coroutine[Any, Any, T]], timeout: float = 60) -> T:
    """asyncio.run in a thread of its own: Playwright's sync API leaves a loop running in
    the main thread when browser tests ran earlier in the same session."""
    results: list[T] = []
    failures: list[BaseException] = []

    def target() -> None:
        try:
            results.append(asyncio.run(scenario()))
        except BaseException as error:  # handed to the test thread below
            failures.append(error)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join(timeout=timeout)
    if failures:
        raise failures[0]
    if not results:
        raise TimeoutError(f"the scenario did not finish within {timeout} s")
    return results[0]
