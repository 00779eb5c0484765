"""Raw disk images built from a root tree without loop devices or mounts: a GPT table written by
sfdisk, and an ext4 filesystem filled by ``mkfs.ext4 -d`` at the partition's offset."""

from __future__ import annotations

import json
import logging
import os
import platform
import re
from pathlib import Path

from aminator_ng.errors import ConfigError
from aminator_ng.run import run

log = logging.getLogger(__name__)

MIB = 1024 * 1024
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(i?B)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "K": 1024, "M": MIB, "G": 1024 * MIB, "T": 1024 * 1024 * MIB}

#: The GPT root partition type of the host's architecture (Discoverable Partitions).
ROOT_PARTITION_TYPES = {
    "x86_64": "4F68BCE3-E8CD-4C9A-B7A5-F1E7F2D4B709",
    "aarch64": "B921B045-1DF0-41C3-AF44-4C6F280D3FAE",
}
LAYOUTS = ("gpt",)
FILESYSTEMS = ("ext4",)


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


def build_disk_image(tree: Path, output: Path, size_bytes: int) -> None:
    """A GPT disk image of ``size_bytes`` at ``output`` whose one partition, typed as the
    architecture's root, holds an ext4 filesystem with the contents of ``tree``."""
    if size_bytes < 64 * MIB:
        raise ConfigError(f"disk size {size_bytes} bytes is too small", hint="use at least 64M")
    size_bytes -= size_bytes % MIB
    with output.open("wb") as disk:
        disk.truncate(size_bytes)
    table = f"label: gpt\nstart=2048, type={root_partition_type()}, name=root\n"
    run(["sfdisk", "--quiet", output], input=table, what=f"partition {output}")
    layout = json.loads(run(["sfdisk", "--json", output]).stdout)["partitiontable"]
    sector = int(layout.get("sectorsize", 512))
    partition = layout["partitions"][0]
    offset = int(partition["start"]) * sector
    length = int(partition["size"]) * sector
    run(
        [
            "mkfs.ext4",
            "-F",
            "-q",
            "-L",
            "root",
            "-d",
            tree,
            "-E",
            f"offset={offset}",
            output,
            f"{length // 1024}k",
        ],
        what=f"make an ext4 filesystem in {output}",
    )
    with output.open("rb+") as disk:
        os.fsync(disk.fileno())
    log.info("built %s: GPT, ext4 root of %d MiB", output, length // MIB)
