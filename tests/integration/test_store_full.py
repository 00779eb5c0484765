"""A local store whose filesystem is full still lists and removes images, and refuses a bake it
cannot hold, saying how much is needed and free."""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import Workspace, assert_one_error_line

pytestmark = pytest.mark.privileged


@pytest.fixture
def small_store(tmp_path: Path) -> Iterator[Workspace]:
    """A workspace whose AMINATOR_HOME is a 48 MiB filesystem of its own."""
    space = Workspace(tmp_path)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=48m,mode=0700", "tmpfs", str(space.home)], check=True
    )
    try:
        yield space
    finally:
        subprocess.run(["umount", str(space.home)], check=True)


def small_disk(path: Path, content: Path) -> Path:
    """A raw disk holding an 8 MiB ext4 filesystem with 3 MiB of data."""
    content.mkdir()
    (content / "data").write_bytes(os.urandom(3 << 20))
    with path.open("wb") as file:
        file.truncate(8 << 20)
    subprocess.run(
        ["mkfs.ext4", "-q", "-F", "-d", str(content), str(path)], check=True, capture_output=True
    )
    return path


def fill(directory: Path, leave: int = 0) -> None:
    """Write until the filesystem has only ``leave`` bytes (about) left."""
    with (directory / "filler").open("ab") as file:
        with contextlib.suppress(OSError):
            while os.statvfs(directory).f_bavail * os.statvfs(directory).f_frsize > leave:
                file.write(b"\0" * min(1 << 20, max(4096, leave // 4 or 1 << 20)))
                file.flush()
        with contextlib.suppress(OSError):
            os.fsync(file.fileno())
    if not leave:
        with pytest.raises(OSError) as raised:
            (directory / "probe").write_bytes(b"\0" * (1 << 20))
        assert raised.value.errno == errno.ENOSPC
        (directory / "probe").unlink(missing_ok=True)


def test_a_full_store_still_lists_and_removes_images(
    small_store: Workspace, tmp_path: Path, debs: dict[str, Path]
) -> None:
    disk = small_disk(tmp_path / "small.raw", tmp_path / "content")
    for name in ("small-1", "small-2"):
        imported = small_store.aminate("base", "import", name, str(disk))
        assert imported.returncode == 0, imported.stderr
    fill(small_store.home)

    listed = small_store.aminate("images", "--output", "json")
    assert listed.returncode == 0, listed.stderr
    [first, second] = listed.json()

    # Room for the bake's record, not for its volume and snapshot.
    (small_store.home / "filler").unlink()
    fill(small_store.home, leave=2 << 20)
    refused = small_store.aminate("-b", "small-1", str(debs["hello"]))
    line = assert_one_error_line(refused, 2, "GiB free", "needs about", str(small_store.home))
    assert "a volume and a snapshot" in line
    assert small_store.leftovers()["volume files"] == []
    assert small_store.leftovers()["bake records"] == []

    fill(small_store.home)
    removed = small_store.aminate("images", "rm", first["image_id"], "--output", "json")
    assert removed.returncode == 0, removed.stderr
    assert removed.json()["freed_bytes"] > 0
    assert [i["image_id"] for i in small_store.images()] == [second["image_id"]]
    checked = small_store.aminate("store", "check")
    assert checked.returncode == 0, checked.stderr
