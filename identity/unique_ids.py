"""Random identifiers (token ids) from a buffer of the operating system's randomness.

``secrets.token_urlsafe`` reads the kernel's random source on every call: a getrandom()
system call per token, during which the event loop lets go of the GIL and the audit writer
thread takes it (2 % of a client_credentials request in the profile, bench/README.md). The
bytes here come from the same source, ``os.urandom``, read 4 KiB at a time; each id takes
its own bytes from the buffer, never shared by two ids, and a forked worker starts with an
empty buffer of its own, so no two processes hand out the same bytes.
"""

from __future__ import annotations

import base64
import os
import threading

_REFILL = 4096


class _Buffered:
    def __init__(self) -> None:
        self._reset()
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self._lock = threading.Lock()  # a lock held by another thread at fork stays held
        self._bytes = b""
        self._at = 0

    def take(self, count: int) -> bytes:
        with self._lock:
            if self._at + count > len(self._bytes):
                self._bytes, self._at = os.urandom(max(_REFILL, count)), 0
            taken = self._bytes[self._at : self._at + count]
            self._at += count
            return taken


_buffer = _Buffered()


def token_urlsafe(count: int) -> str:
    """``count`` random bytes, base64url without padding (as ``secrets.token_urlsafe``)."""
    return base64.urlsafe_b64encode(_buffer.take(count)).rstrip(b"=").decode("ascii")
