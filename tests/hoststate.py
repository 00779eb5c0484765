"""What the host holds that a test may have left: loop devices, mounts and chrooted processes,
read from /sys and /proc, and their last-resort release. Only what lies under a given directory
is ever touched: other work on the machine may hold loop devices and mounts of its own."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
from pathlib import Path

_OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")


def lies_under(path: str, root: str) -> bool:
    root = root.rstrip("/")
    return path == root or path.startswith(root + "/")


def loop_devices() -> list[tuple[str, str]]:
    """(device, backing file) of every attached loop device."""
    pairs = []
    for backing_file in Path("/sys/block").glob("loop*/loop/backing_file"):
        with contextlib.suppress(OSError):
            backing = backing_file.read_text().strip().removesuffix(" (deleted)")
            pairs.append((f"/dev/{backing_file.parts[3]}", backing))
    return pairs


def mount_targets() -> list[str]:
    targets = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        escaped = line.split(" ")[4]
        targets.append(_OCTAL_ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), escaped))
    return targets


def processes_rooted_under(root: str) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError):
                if lies_under(os.readlink(proc / "root"), root):
                    found.append(int(proc.name))
    return found


def held_under(root: str) -> list[str]:
    """Every process, mount and loop device under ``root``, named."""
    return (
        [f"process {pid}" for pid in processes_rooted_under(root)]
        + [f"mount {target}" for target in mount_targets() if lies_under(target, root)]
        + [f"{dev} over {backing}" for dev, backing in loop_devices() if lies_under(backing, root)]
    )


def release_everything_under(root: str) -> None:
    """Last-resort release after a failed test, so that one failure does not leak into others."""
    for pid in processes_rooted_under(root):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for target in sorted((t for t in mount_targets() if lies_under(t, root)), reverse=True):
        subprocess.run(["umount", "-l", target], check=False)
    for device, backing in loop_devices():
        if lies_under(backing, root):
            subprocess.run(["partx", "-d", device], check=False, capture_output=True)
            subprocess.run(["losetup", "-d", device], check=False)
