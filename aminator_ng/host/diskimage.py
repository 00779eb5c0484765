"""Raw disk images built from a root tree.

Two layouts: ``gpt``, one partition at sector 2048 typed as the architecture's root partition
(written by sfdisk), and ``whole``, a filesystem spanning the whole disk with no partition table.
Two filesystems: ``ext4``, filled by ``mkfs.ext4 -d`` (at the partition's offset) without loop
devices or mounts, and ``xfs``, which Debian 12's mkfs.xfs cannot fill from a directory: it is
made on a loop device of the disk (or of its partition), mounted, and the tree copied in with
``cp -a``. Both are labelled ``root``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import re
import tempfile
from contextlib import ExitStack
from pathlib import Path

from aminator_ng.errors import ConfigError
from aminator_ng.host.blockdev import loop_device, partition_nodes
from aminator_ng.host.mount import mounted
from aminator_ng.host.run import run

log = logging.getLogger(__name__)

MIB = 1024 * 1024
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(i?B)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "K": 1024, "M": MIB, "G": 1024 * MIB, "T": 1024 * 1024 * MIB}

#: The GPT root partition type of the host's architecture (Discoverable Partitions).
ROOT_PARTITION_TYPES = {
    "x86_64": "4F68BCE3-E8CD-4C9A-B7A5-F1E7F2D4B709",
    "aarch64": "B921B045-1DF0-41C3-AF44-4C6F280D3FAE",
}
LAYOUTS = ("gpt", "whole")
FILESYSTEMS = ("ext4", "xfs")
#: The smallest disk each filesystem is made on. mkfs.xfs (xfsprogs 5.19 and later) refuses a
#: filesystem under 300 MiB; a GPT disk spends 2 MiB more (the first MiB, and the aligned-away tail
#: that holds the backup table).
MIN_FILESYSTEM_BYTES = {"ext4": 64 * MIB, "xfs": 300 * MIB}
LAYOUT_OVERHEAD_BYTES = {"gpt": 2 * MIB, "whole": 0}
#: The first sector of the root partition of the ``gpt`` layout.
GPT_FIRST_SECTOR = 2048
LABEL = "root"


def parse_size(text: str) -> int:
    """``2G``, ``1536M``, ``1GiB`` or plain bytes, in bytes."""
    match = _SIZE.match(text)
    if not match:
        raise ConfigError(f"bad size {text!r}", hint="write sizes like 2G or 1536M")
    return int(float(match.group(1)) * _UNITS[match.group(2).upper()])


def root_partition_type() -> str:
    machine = platform.machine()
    try:
        return ROOT_PARTITION_TYPES[machine]
    except KeyError:
        raise ConfigError(f"no GPT root partition type known for architecture {machine}") from None


def _check_choice(layout: str, filesystem: str) -> None:
    if layout not in LAYOUTS:
        raise ConfigError(
            f"unknown disk layout {layout!r}", hint=f"use one of {', '.join(LAYOUTS)}"
        )
    if filesystem not in FILESYSTEMS:
        raise ConfigError(
            f"unknown filesystem {filesystem!r}", hint=f"use one of {', '.join(FILESYSTEMS)}"
        )


def minimum_disk_bytes(layout: str, filesystem: str) -> int:
    """The smallest disk a layout and filesystem fit on."""
    _check_choice(layout, filesystem)
    if filesystem == "ext4":  # ext4 fits in far less; 64 MiB keeps a base image sensible
        return MIN_FILESYSTEM_BYTES["ext4"]
    return MIN_FILESYSTEM_BYTES[filesystem] + LAYOUT_OVERHEAD_BYTES[layout]


def check_disk_size(size_bytes: int, layout: str = "gpt", filesystem: str = "ext4") -> int:
    """The disk size rounded down to whole MiB, or a ConfigError when the layout and filesystem
    do not fit (or the host has no GPT root type). ``base create`` calls it before it bootstraps
    anything."""
    minimum = minimum_disk_bytes(layout, filesystem)
    if layout == "gpt":
        root_partition_type()  # an architecture without one fails here, not after a bootstrap
    if size_bytes < minimum:
        raise ConfigError(
            f"a disk of {size_bytes / MIB:g} MiB is too small for {layout} and {filesystem}",
            hint=f"use at least {minimum // MIB}M",
        )
    return size_bytes - size_bytes % MIB


def required_tools(layout: str, filesystem: str) -> tuple[str, ...]:
    """The tools ``build_disk_image`` runs for a layout and filesystem."""
    _check_choice(layout, filesystem)
    tools: list[str] = ["sfdisk"] if layout == "gpt" else []
    if filesystem == "ext4":
        tools.append("mkfs.ext4")
    else:
        tools += ["losetup", "blkid", "mkfs.xfs", "mount", "umount", "findmnt", "cp", "sync"]
        if layout == "gpt":
            tools.append("partx")
    return tuple(tools)


def _partition(output: Path) -> tuple[int, int]:
    """Write the GPT table of the ``gpt`` layout; the root partition's offset and length."""
    table = f"label: gpt\nstart={GPT_FIRST_SECTOR}, type={root_partition_type()}, name={LABEL}\n"
    run(["sfdisk", "--quiet", output], input=table, what=f"partition {output}")
    layout = json.loads(run(["sfdisk", "--json", output]).stdout)["partitiontable"]
    sector = int(layout.get("sectorsize", 512))
    partition = layout["partitions"][0]
    return int(partition["start"]) * sector, int(partition["size"]) * sector


def _make_ext4(tree: Path, output: Path, offset: int, length: int) -> None:
    argv: list[str | Path] = ["mkfs.ext4", "-F", "-q", "-L", LABEL, "-d", tree]
    if offset:
        argv += ["-E", f"offset={offset}"]
    run([*argv, output, f"{length // 1024}k"], what=f"make an ext4 filesystem in {output}")


def _remove_empty_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # still mounted after a failed unmount: keep it
        path.rmdir()


def _make_xfs(tree: Path, output: Path) -> None:
    """An XFS filesystem on the disk's root partition (or the whole disk), holding ``tree``.

    Made with mkfs.xfs's defaults, which need Linux 5.10 or later to mount (bigtime, inobtcount).
    The engine mounts XFS roots with ``nouuid`` so that copies of one image mount side by side.
    """
    with ExitStack() as stack:
        device = stack.enter_context(loop_device(output))
        parts = stack.enter_context(partition_nodes(device))
        target = parts[0] if parts else device
        run(["mkfs.xfs", "-q", "-L", LABEL, target], what=f"make an xfs filesystem on {target}")
        mount_point = Path(tempfile.mkdtemp(prefix=f".{output.name}-", dir=output.parent))
        stack.callback(_remove_empty_dir, mount_point)
        stack.enter_context(mounted(target, mount_point, fstype="xfs"))
        # Ownership, modes, times, hard links, xattrs (ACLs, capabilities), device nodes, holes.
        run(
            ["cp", "-a", "--sparse=always", f"{tree}/.", mount_point],
            what=f"copy {tree} into the xfs filesystem",
        )
        run(["sync", "-f", mount_point], what=f"sync {mount_point}")


def build_disk_image(
    tree: Path, output: Path, size_bytes: int, *, layout: str = "gpt", filesystem: str = "ext4"
) -> None:
    """A disk image of ``size_bytes`` (rounded down to whole MiB) at ``output`` whose root
    filesystem, labelled ``root``, holds the contents of ``tree``.

    ``layout`` is ``gpt`` (one partition at sector 2048 typed as the architecture's root) or
    ``whole`` (no partition table); ``filesystem`` is ``ext4`` or ``xfs``.
    """
    size_bytes = check_disk_size(size_bytes, layout, filesystem)
    with output.open("wb") as disk:
        disk.truncate(size_bytes)
    offset, length = _partition(output) if layout == "gpt" else (0, size_bytes)
    if filesystem == "ext4":
        _make_ext4(tree, output, offset, length)
    else:
        _make_xfs(tree, output)
    with output.open("rb+") as disk:
        os.fsync(disk.fileno())
    log.info("built %s: %s, %s root of %d MiB", output, layout, filesystem, length // MIB)
