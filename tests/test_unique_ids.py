"""Token ids from the buffered random source: well formed, never repeated, not shared
with a forked worker."""

from __future__ import annotations

import base64
import os

from identity import unique_ids


def test_ids_are_base64url_of_the_asked_length_and_never_repeat() -> None:
    ids = [unique_ids.token_urlsafe(16) for _ in range(5000)]  # more than one refill
    assert len(set(ids)) == len(ids)
    assert all(len(base64.urlsafe_b64decode(i + "==")) == 16 for i in ids)
    assert all("=" not in i for i in ids)


def test_a_forked_worker_does_not_hand_out_the_parents_next_bytes() -> None:
    unique_ids.token_urlsafe(16)  # the parent's buffer holds bytes not handed out yet
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child reports through the pipe
        os.write(write, unique_ids.token_urlsafe(16).encode())
        os._exit(0)
    os.close(write)
    os.waitpid(child, 0)
    childs = os.read(read, 64).decode()
    os.close(read)
    assert childs and childs != unique_ids.token_urlsafe(16)
