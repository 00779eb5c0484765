"""Host-wide locks between bakes: an exclusive ``flock`` on a file that exists only while held.

The file is removed on release, so no lock file outlives its bake. A process that opened the file
just before the holder removed it would lock an orphaned inode; it notices (the path no longer
names what it locked) and tries again with the new file. The file holds the holder's pid, for
the operator who wonders who has it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from aminator_ng.errors import ConflictError


class LockHeldError(ConflictError):
    """Another process holds the lock (raised only when not waiting for it)."""


def _holder(path: Path) -> str:
    with contextlib.suppress(OSError, ValueError):
        return f"pid {int(path.read_text().strip())}"
    return "another process"


@contextlib.contextmanager
def file_lock(path: Path, *, wait: bool = True) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` for the context.

    With ``wait`` False, raise LockHeldError at once when another process holds it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            raise LockHeldError(f"{path} is held by {_holder(path)}") from None
        try:
            current = path.stat().st_ino
        except FileNotFoundError:
            current = None
        if current == os.fstat(fd).st_ino:
            break
        os.close(fd)  # the holder before us removed it: lock the file that is there now
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        # Removed while still locked, so that no one can lock this inode after us.
        path.unlink(missing_ok=True)
        os.close(fd)
