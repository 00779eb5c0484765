"""Growing a root filesystem into a volume larger than its image: the root partition to the end
of the disk (GPT or MBR; a whole-disk filesystem has none), then the filesystem to the end of
its partition.

ext2/3/4 grow before they are mounted (``resize2fs`` offline, after ``e2fsck``): growing a
mounted one needs CAP_SYS_RESOURCE, which containers often drop. XFS grows only mounted.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from aminator_ng.errors import BakeError, RequestError
from aminator_ng.host.blockdev import Filesystem, probe
from aminator_ng.host.run import run

log = logging.getLogger(__name__)

EXT_FILESYSTEMS = ("ext2", "ext3", "ext4")
#: The host tools growing a root takes.
GROW_TOOLS = ("sfdisk", "e2fsck", "resize2fs", "xfs_growfs")
#: e2fsck's exit status: at most "errors corrected"; 4 and above, errors left or it failed.
E2FSCK_CORRECTED = 1


def check_growable(root: Filesystem) -> None:
    """Refuse a root whose filesystem this module cannot grow, before anything is changed."""
    if root.fstype not in (*EXT_FILESYSTEMS, "xfs"):
        raise RequestError(
            f"cannot grow a {root.fstype} root filesystem ({root.device})",
            hint="--root-volume-size grows ext2/3/4 and XFS roots",
        )


def grow_partition(device: Path, root: Filesystem) -> bool:
    """Grow the root partition of ``device`` to the end of the disk, and tell the kernel.
    Whether it grew: a whole-disk filesystem, or a partition already at the end, does not."""
    if root.device == device:
        return False
    fields = probe(root.device)
    number, start = fields.get("PART_ENTRY_NUMBER"), fields.get("PART_ENTRY_OFFSET")
    if number is None or start is None:
        raise BakeError(f"cannot tell which partition of {device} {root.device} is")
    table = _table(device)
    partitions = table.get("partitions", [])
    after = [p["node"] for p in partitions if int(p["start"]) > int(start)]
    if after:
        raise RequestError(
            f"the root partition {root.device} cannot grow: {', '.join(after)} follow it",
            hint="a base whose root partition is the last on its disk can be given "
            "--root-volume-size",
        )
    if table["label"] == "gpt":
        # The backup table goes to the new end of the disk first, or the partition cannot.
        run(["sfdisk", "--relocate", "gpt-bak-std", device], what=f"move {device}'s backup GPT")
    # ",+": the same start and type, as large as the free space after it allows.
    run(
        ["sfdisk", "--no-reread", "--no-tell-kernel", "-N", number, device],
        input=",+\n",
        what=f"grow partition {number} of {device}",
    )
    run(["partx", "-u", "-n", number, device], what=f"update partition {number} of {device}")
    grown = _sectors(_table(device), device, start) > _sectors(table, device, start)
    if grown:
        log.info("grew partition %s of %s to the end of the disk", number, device)
    return grown


def _table(device: Path) -> dict[str, Any]:
    answer = run(["sfdisk", "--json", device], what=f"read the partition table of {device}")
    return dict(json.loads(answer.stdout)["partitiontable"])


def _sectors(table: dict[str, Any], device: Path, start: str) -> int:
    """The size in sectors of the partition that starts at sector ``start``."""
    found = [p for p in table.get("partitions", []) if int(p["start"]) == int(start)]
    if not found:
        raise BakeError(f"{device} has no partition at sector {start} any more")
    return int(found[0]["size"])


def grow_unmounted_filesystem(root: Filesystem) -> None:
    """Grow an ext2/3/4 root to the end of its partition (or device), before it is mounted."""
    if root.fstype not in EXT_FILESYSTEMS:
        return
    checked = run(["e2fsck", "-f", "-p", root.device], check=False, what=f"check {root.device}")
    if checked.returncode > E2FSCK_CORRECTED:
        raise BakeError(
            f"the root filesystem {root.device} has errors e2fsck did not correct "
            f"(exit {checked.returncode}), so it is not grown",
            hint="see the bake log for e2fsck's report",
        )
    run(["resize2fs", root.device], what=f"grow the filesystem of {root.device}")
    log.info("grew the %s filesystem of %s", root.fstype, root.device)


def grow_mounted_filesystem(root: Filesystem, mount_point: Path) -> None:
    """Grow a root that grows only mounted (XFS) to the end of its partition (or device)."""
    if root.fstype == "xfs":
        run(["xfs_growfs", "-d", mount_point], what=f"grow the filesystem of {root.device}")
        log.info("grew the xfs filesystem of %s", root.device)
