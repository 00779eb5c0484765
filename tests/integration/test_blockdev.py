"""The Linux layer on real loop devices."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from aminator_ng.host.blockdev import find_root_filesystem, loop_device, partition_nodes, partitions
from aminator_ng.host.diskimage import MIB, build_disk_image
from aminator_ng.host.mount import mounted
from tests.hoststate import loop_devices, mount_targets

pytestmark = pytest.mark.privileged


def disk(tmp_path: Path, name: str, size_mib: int) -> Path:
    tree = tmp_path / f"{name}-tree"
    tree.mkdir()
    (tree / "marker").write_text(name)
    raw = tmp_path / f"{name}.raw"
    build_disk_image(tree, raw, size_mib * MIB)
    return raw


def test_stale_partitions_of_a_reused_loop_device_are_refreshed(tmp_path: Path) -> None:
    small, large = disk(tmp_path, "small", 64), disk(tmp_path, "large", 160)
    # An earlier user of the device detaches it without removing its partitions.
    device = subprocess.run(
        ["losetup", "--find", "--show", str(small)], capture_output=True, text=True, check=True
    ).stdout.strip()
    try:
        subprocess.run(["partx", "-a", device], check=True)
    finally:
        subprocess.run(["losetup", "-d", device], check=True)
    stale = partitions(Path(device))
    try:
        with loop_device(large) as attached, partition_nodes(attached) as parts:
            root_fs = find_root_filesystem(attached, parts)
            assert root_fs.size_bytes > 100 * MIB
            mount_point = tmp_path / "mnt"
            mount_point.mkdir()
            with mounted(root_fs.device, mount_point, fstype=root_fs.fstype):
                assert (mount_point / "marker").read_text() == "large"
        if attached == Path(device):
            assert stale, "the earlier user's partitions should have been stale"
        assert not partitions(attached), "partitions left on the detached device"
    finally:
        for dev, backing in loop_devices():
            if backing.startswith(str(tmp_path)):
                subprocess.run(["partx", "-d", dev], check=False, capture_output=True)
                subprocess.run(["losetup", "-d", dev], check=False)
    assert not [t for t in mount_targets() if t.startswith(str(tmp_path))]
