"""Files written whole: a reader, or a process killed while writing, never sees half a file."""

from __future__ import annotations

import os
from pathlib import Path


def partial_path(destination: Path) -> Path:
    """Where ``destination`` is written until it is complete: a hidden name beside it."""
    return destination.with_name(f".{destination.name}.partial")


def write_whole(destination: Path, data: bytes, *, mode: int = 0o644) -> None:
    """``data`` written to ``destination`` as a synced temporary file renamed into place,
    with ``mode`` whatever the umask. Raises OSError; leaves no temporary file."""
    partial = partial_path(destination)
    try:
        with partial.open("wb") as file:
            os.fchmod(file.fileno(), mode)
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        partial.rename(destination)
    finally:
        partial.unlink(missing_ok=True)


def sync_file(path: Path) -> None:
    """``path``'s data on disk (a directory's: its entries), written without a sync."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
