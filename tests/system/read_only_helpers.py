"""Run a command with one folder truly read-only, as a mounted Kubernetes secret is.

Tests run as root here, and root ignores file modes: a chmod would not stop a single write.
As root, the command runs in a private mount namespace where the folder is bind-mounted
read-only (writes fail with EROFS, exactly as on a read-only secret mount); as anyone else,
taking the write bits away is enough (EACCES)."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest

_MOUNT_THEN_RUN = 'mount --bind -o ro "$0" "$0" && exec "$@"'


def _namespace_works() -> bool:
    unshare = shutil.which("unshare")
    if unshare is None:
        return False
    probe = subprocess.run(
        [unshare, "--mount", "--propagation", "private", "sh", "-c", _MOUNT_THEN_RUN, "/", "true"],
        capture_output=True,
        timeout=30,
    )
    return probe.returncode == 0


@contextmanager
def read_only(folder: Path) -> Iterator[list[str]]:
    """Within the block, prefix a command with the returned words to run it with ``folder``
    read-only; skips the test where neither way is available."""
    if os.geteuid() != 0:
        mode = stat.S_IMODE(folder.stat().st_mode)
        folder.chmod(mode & ~0o222)
        try:
            yield []
        finally:
            folder.chmod(mode)
        return
    if not _namespace_works():
        pytest.skip("root without mount namespaces: nothing here makes a folder read-only")
    yield ["unshare", "--mount", "--propagation", "private", "sh", "-c", _MOUNT_THEN_RUN]
    # (the namespace, and the mount, end with the command)


def read_only_command(prefix: Sequence[str], folder: Path, argv: Sequence[str]) -> list[str]:
    """``argv`` run with ``folder`` read-only, for the ``prefix`` that ``read_only`` gave."""
    return [*prefix, str(folder), *argv] if prefix else list(argv)
