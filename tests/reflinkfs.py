"""A root test session's temporary directories on an XFS filesystem of its own.

Every integration test imports a base into a store of its own, and every bake clones a volume
from a snapshot and a snapshot from a volume: on the host's ext4 each is a copy of the image's
data, gigabytes of writes per run. On XFS with reflinks each is a clone (see
docs/performance.md), so the session puts ``--basetemp`` on one: a sparse file, formatted and
loop-mounted for the session, unmounted and removed at its end. A run given ``--basetemp``,
or without root or mkfs.xfs, keeps pytest's own temporary directory.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

#: Apparent size of the filesystem's file; it takes only what the tests write.
SIZE = 64 * 2**30


@contextlib.contextmanager
def fresh_filesystem(kind: str, size: int = SIZE) -> Iterator[Path]:
    """An empty directory on a fresh filesystem of ``kind`` ("xfs": with reflinks; "ext4":
    without, so that every copy is a real one) for the context."""
    scratch = Path(tempfile.mkdtemp(prefix=f"aminator-tests-{kind}-"))
    try:
        image = scratch / f"{kind}.img"
        with image.open("wb") as file:
            file.truncate(size)
        options = ["-m", "reflink=1"] if kind == "xfs" else ["-F"]
        subprocess.run([f"mkfs.{kind}", "-q", *options, str(image)], check=True)
        mount_point = scratch / "mnt"
        mount_point.mkdir()
        subprocess.run(["mount", "-o", "loop", str(image), str(mount_point)], check=True)
        try:
            yield mount_point
        finally:
            # A process still using it was reported by the session's own check already.
            if subprocess.run(["umount", str(mount_point)], check=False).returncode != 0:
                subprocess.run(["umount", "--lazy", str(mount_point)], check=False)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def reflink_filesystem() -> contextlib.AbstractContextManager[Path]:
    return fresh_filesystem("xfs")


def usable() -> bool:
    return shutil.which("mkfs.xfs") is not None
