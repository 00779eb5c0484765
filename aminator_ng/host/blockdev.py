"""Block devices: loop devices over image files, their partitions, and the root filesystem on them.

No udev is assumed: partitions are found through sysfs, created with ``partx`` when the kernel did
not scan the table itself, and filesystems are probed with ``blkid -p``.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from aminator_ng.errors import BakeError, CleanupError, CommandError, HostError, RequestError
from aminator_ng.host import syscalls
from aminator_ng.host.run import run

log = logging.getLogger(__name__)

SYSFS_BLOCK = Path("/sys/class/block")
DEV = Path("/dev")
LOOP_CONTROL = Path("/dev/loop-control")
#: How long a loop device may take to detach once its last user closed it.
AUTOCLEAR_TIMEOUT_S = 10.0
#: How long a filesystem may take to let go of its device after the unmount.
RELEASE_TIMEOUT_S = 10.0

#: GPT partition types of a root filesystem (the Discoverable Partitions Specification).
GPT_ROOT_TYPES = {
    "4f68bce3-e8cd-4c9a-b7a5-f1e7f2d4b709": "x86-64",
    "b921b045-1df0-41c3-af44-4c6f280d3fae": "arm64",
    "44479540-f297-41b2-9af7-d131d5f0458a": "x86",
    "69dad710-2ce4-4e3c-b16c-21a1d49abed3": "arm",
}
LINUX_FILESYSTEMS = {"ext2", "ext3", "ext4", "xfs", "btrfs"}


@dataclass(frozen=True)
class Filesystem:
    """A filesystem found on a device or partition."""

    device: Path
    fstype: str
    size_bytes: int
    uuid: str = ""
    part_type: str = ""


def probe(device: Path) -> dict[str, str]:
    """What ``blkid -p`` (low-level, no cache) says of a device or image file; {} if nothing."""
    result = run(["blkid", "-p", "-o", "export", device], check=False)
    if result.returncode == 2:  # nothing recognised
        return {}
    if result.returncode != 0:
        raise BakeError(f"cannot probe {device}: {result.stderr.strip() or 'blkid failed'}")
    fields: dict[str, str] = {}
    for line in result.stdout.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            fields[key] = value
    return fields


def _sysfs_size(name: str) -> int:
    return int((SYSFS_BLOCK / name / "size").read_text()) * 512


def partitions(device: Path) -> list[Path]:
    """The partition nodes of a device, from sysfs (``loop0p1``, ``nvme0n1p1``, ``xvdf1`` alike)."""
    entry = SYSFS_BLOCK / device.name
    found = sorted(
        (child.name for child in entry.iterdir() if (child / "partition").exists()),
        key=lambda name: int((SYSFS_BLOCK / name / "partition").read_text()),
    )
    return [DEV / name for name in found]


def _wait_for_nodes(nodes: list[Path], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not all(node.exists() for node in nodes):
        if time.monotonic() > deadline:
            missing = ", ".join(str(n) for n in nodes if not n.exists())
            raise BakeError(f"partition device nodes did not appear: {missing}")
        time.sleep(0.05)


@contextlib.contextmanager
def partition_nodes(device: Path) -> Iterator[list[Path]]:
    """Make sure the kernel knows the device's partitions, as its table has them now, for as long
    as the context lasts.

    A kernel without partition-table parsers shows none: ``partx -a`` adds them. Partitions may
    also be stale, left by an earlier user of the same loop device who detached it without
    removing them: ``partx -u`` brings them in line with the table. Either way ``partx -d``
    removes them at the end. A device without a partition table is used whole.
    """
    if "PTTYPE" not in probe(device):
        yield []
        return
    update = "-u" if partitions(device) else "-a"
    run(["partx", update, device], what=f"read the partition table of {device}")
    try:
        found = partitions(device)
        _wait_for_nodes(found)
        yield found
    finally:
        run(["partx", "-d", device], what=f"remove partitions of {device}", check=False)


def find_root_filesystem(device: Path, parts: list[Path]) -> Filesystem:
    """The root filesystem: the GPT root-typed partition, else the largest Linux filesystem among
    the partitions, else the whole device."""
    candidates: list[Filesystem] = []
    for part in parts:
        fields = probe(part)
        if fields.get("TYPE") in LINUX_FILESYSTEMS:
            candidates.append(
                Filesystem(
                    part,
                    fields["TYPE"],
                    _sysfs_size(part.name),
                    fields.get("UUID", ""),
                    fields.get("PART_ENTRY_TYPE", "").lower(),
                )
            )
    rooted = [fs for fs in candidates if fs.part_type in GPT_ROOT_TYPES]
    if rooted:
        return rooted[0]
    if candidates:
        return max(candidates, key=lambda fs: fs.size_bytes)
    whole = probe(device)
    if whole.get("TYPE") in LINUX_FILESYSTEMS:
        return Filesystem(device, whole["TYPE"], _sysfs_size(device.name), whole.get("UUID", ""))
    raise RequestError(
        f"no Linux root filesystem found on {device}",
        hint="the base image needs an ext4, xfs or btrfs root, whole-disk or in a partition",
    )


def _configure_loop(image: Path, read_only: bool) -> tuple[int, Path]:
    """A free loop device set up over ``image`` with autoclear, and the descriptor that holds it."""
    access = os.O_RDONLY if read_only else os.O_RDWR
    flags = syscalls.LO_FLAGS_AUTOCLEAR | syscalls.LO_FLAGS_PARTSCAN
    if read_only:
        flags |= syscalls.LO_FLAGS_READ_ONLY
    backing = os.open(image, access | os.O_CLOEXEC)
    try:
        control = os.open(LOOP_CONTROL, os.O_RDWR | os.O_CLOEXEC)
        try:
            while True:
                device = DEV / f"loop{fcntl.ioctl(control, syscalls.LOOP_CTL_GET_FREE)}"
                fd = os.open(device, access | os.O_CLOEXEC)
                config = syscalls.LoopConfig(fd=backing)
                config.info.lo_flags = flags
                name = os.fsencode(image)[: syscalls.LO_NAME_SIZE - 1]
                ctypes.memmove(config.info.lo_file_name, name, len(name))
                try:
                    fcntl.ioctl(fd, syscalls.LOOP_CONFIGURE, config)
                    return fd, device
                except OSError as error:
                    os.close(fd)
                    if error.errno == errno.EBUSY:  # another process took it first
                        continue
                    if error.errno in (errno.EINVAL, errno.ENOTTY):
                        raise HostError(
                            "this kernel cannot configure loop devices (LOOP_CONFIGURE)",
                            hint="bake on Linux 5.8 or later",
                        ) from error
                    raise
        finally:
            os.close(control)
    except OSError as error:
        raise BakeError(f"attach {image} to a loop device: {error.strerror}") from error
    finally:
        os.close(backing)


@contextlib.contextmanager
def loop_device(image: Path, *, read_only: bool = False) -> Iterator[Path]:
    """A loop device over an image file for the context.

    It is set up with autoclear: the kernel detaches it when its last user closes it. This
    context holds one descriptor until it ends; a mount of the device (or of a partition) holds
    it too. So a loop device outlives neither the engine, whose descriptor the kernel closes
    when it dies, nor the mounts of a bake's namespace. On leaving, the descriptor is closed and
    the detach waited for.
    """
    fd, device = _configure_loop(image, read_only)
    log.debug("attached %s to %s", image, device)
    try:
        yield device
    finally:
        if partitions(device):  # never leave partitions for the device's next user
            run(["partx", "-d", device], what=f"remove partitions of {device}", check=False)
        os.close(fd)
        _wait_for_autoclear(device, image)


def wait_until_released(device: Path, timeout_s: float = RELEASE_TIMEOUT_S) -> None:
    """Until no filesystem holds ``device`` any more (an exclusive open succeeds).

    An unmount can return while a copy of the mount in a namespace that is just ending (a
    command's in the image) still holds the filesystem for a moment; the device is not to be
    snapshotted or detached before the filesystem is shut down.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            fd = os.open(device, os.O_RDONLY | os.O_EXCL | os.O_CLOEXEC)
        except OSError as error:
            if error.errno != errno.EBUSY:
                raise
            if time.monotonic() > deadline:
                raise CleanupError(
                    f"{device} is still in use {timeout_s:g} s after its unmount",
                    hint=f"find who holds it with: fuser -vm {device}",
                ) from error
            time.sleep(0.02)
            continue
        os.close(fd)
        return


def _wait_for_autoclear(device: Path, image: Path) -> None:
    deadline = time.monotonic() + AUTOCLEAR_TIMEOUT_S
    while backing_file(device) == image.resolve():
        if time.monotonic() > deadline:
            raise CleanupError(
                f"{device} stays attached to {image}: something still uses it",
                hint=f"find it with: fuser -vm {device}",
            )
        time.sleep(0.02)


def detach_loop_device(device: Path, attempts: int = 10) -> None:
    """``losetup -d``, retried while the kernel still holds the device briefly after unmount;
    then until the kernel has let it go. A device still in use (mounted in the namespace of a
    killed bake, which the kernel is still taking down) is only marked for autoclear by the
    detach, and goes once that use ends."""
    if partitions(device):  # never leave partitions for the device's next user
        run(["partx", "-d", device], what=f"remove partitions of {device}", check=False)
    attached = backing_file(device)
    for attempt in range(1, attempts + 1):
        try:
            run(["losetup", "--detach", device], what=f"detach {device}")
            if attached is not None:
                _wait_for_autoclear(device, attached)
            return
        except CommandError as exc:
            if "No such device" in exc.stderr_tail:
                return
            if attempt == attempts:
                raise CleanupError(f"cannot detach {device}: {exc.stderr_tail}") from exc
            time.sleep(0.1 * attempt)


def backing_file(device: Path) -> Path | None:
    """The file a loop device is attached to, or None when it is not attached (or no loop)."""
    try:
        text = Path(f"/sys/block/{device.name}/loop/backing_file").read_text().strip()
    except OSError:
        return None
    return Path(text) if text else None


def loop_devices_over(image: Path) -> list[Path]:
    """The loop devices attached to ``image`` (a file), found through sysfs."""
    wanted = image.resolve()
    return sorted(
        Path("/dev", entry.name)
        for entry in Path("/sys/block").glob("loop*")
        if backing_file(Path(entry.name)) == wanted
    )
