"""Attachment points and the block device an attached EBS volume becomes.

An attachment point (``/dev/sdf``) is a name given to EC2. On Xen instances the kernel shows it
as ``/dev/xvdf`` (or ``/dev/sdf``); on Nitro instances as an NVMe namespace (``/dev/nvme1n1``)
whose serial number is the volume id without its hyphen, which udev also links from
``/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_vol...``. Every lookup here is made under a
device root and a sysfs root, ``/dev`` and ``/sys`` on a real host, so tests can play udev.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterable
from pathlib import Path

#: The points AWS recommends for EBS data volumes on Linux.
ATTACHMENT_POINTS = tuple(f"/dev/sd{letter}" for letter in "fghijklmnop")
NVME_BY_ID_PREFIX = "nvme-Amazon_Elastic_Block_Store_"


def short_name(device: str) -> str:
    """``/dev/xvdf`` and ``/dev/sdf`` both as ``sdf``: EC2 treats them as one point."""
    name = device.removeprefix("/dev/")
    return "sd" + name.removeprefix("xvd") if name.startswith("xvd") else name


def kernel_names(point: str) -> tuple[str, str]:
    """The names the kernel may give an attachment point on a Xen instance."""
    name = short_name(point)
    return name, "xv" + name.removeprefix("s")


def is_block_device(path: Path) -> bool:
    try:
        return stat.S_ISBLK(path.stat().st_mode)
    except OSError:
        return False


def taken_locally(point: str, device_root: Path) -> Path | None:
    """The device node that occupies ``point`` on this host already, if any."""
    for name in kernel_names(point):
        candidate = device_root / name
        if candidate.exists() or candidate.is_symlink():
            return candidate
    return None


def taken_in_ec2(points_in_use: Iterable[str]) -> set[str]:
    """The short names of the attachment points EC2 shows in use on the instance."""
    return {short_name(point) for point in points_in_use}


def volume_serial(volume_id: str) -> str:
    """The NVMe serial number of an EBS volume: its id without the hyphen."""
    return volume_id.replace("-", "")


def find_volume_device(
    volume_id: str, point: str, device_root: Path, sysfs_root: Path
) -> Path | None:
    """The block device of an attached volume, resolved to its kernel name; None until it shows.

    Looked up by udev's by-id link, then by NVMe serial in sysfs, then by the attachment point's
    own names. A name that exists but is not a block device yet does not count.
    """
    serial = volume_serial(volume_id)
    by_id = device_root / "disk" / "by-id" / f"{NVME_BY_ID_PREFIX}{serial}"
    candidates = [by_id]
    for serial_file in sorted((sysfs_root / "block").glob("nvme*/device/serial")):
        with contextlib.suppress(OSError):
            if serial_file.read_text().strip() == serial:
                candidates.append(device_root / serial_file.parent.parent.name)
    candidates += [device_root / name for name in kernel_names(point)]
    for candidate in candidates:
        if is_block_device(candidate):
            return Path(os.path.realpath(candidate))
    return None


def looked_for(volume_id: str, point: str, device_root: Path) -> str:
    """Where ``find_volume_device`` looks, for an error message."""
    names = ", ".join(str(device_root / name) for name in kernel_names(point))
    serial = volume_serial(volume_id)
    return f"{names}, an NVMe device with serial {serial}, {device_root}/disk/by-id/"
