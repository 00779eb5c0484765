"""Where an attached EBS volume shows up: by-id link, NVMe serial, or the point's Xen name."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from aminator_ec2.devices import (
    find_volume_device,
    kernel_names,
    looked_for,
    short_name,
    taken_in_ec2,
    taken_locally,
)
from tests.ec2moto import some_block_device

VOLUME = "vol-0123456789abcdef0"


@pytest.fixture
def roots(tmp_path: Path) -> tuple[Path, Path]:
    (tmp_path / "dev").mkdir()
    (tmp_path / "sys" / "block").mkdir(parents=True)
    return tmp_path / "dev", tmp_path / "sys"


def test_names_of_an_attachment_point() -> None:
    assert short_name("/dev/xvdf") == short_name("/dev/sdf") == short_name("sdf") == "sdf"
    assert kernel_names("/dev/sdf") == ("sdf", "xvdf")
    assert taken_in_ec2(["/dev/xvda", "/dev/sdf", "xvdg"]) == {"sda", "sdf", "sdg"}


def test_an_nvme_namespace_is_found_by_its_serial(roots: tuple[Path, Path]) -> None:
    device_root, sysfs_root = roots
    target = some_block_device()
    for index, serial in ((1, "vol0aaaaaaaaaaaaaaaa"), (2, VOLUME.replace("-", ""))):
        serial_file = sysfs_root / "block" / f"nvme{index}n1" / "device" / "serial"
        serial_file.parent.mkdir(parents=True)
        serial_file.write_text(serial.ljust(20) + "\n")
        (device_root / f"nvme{index}n1").symlink_to(target)
    # The serial alone decides: the point's own names are absent on a Nitro host.
    found = find_volume_device(VOLUME, "/dev/sdf", device_root, sysfs_root)
    assert found == Path(os.path.realpath(target))


def test_the_udev_by_id_link_is_used_when_there(roots: tuple[Path, Path]) -> None:
    device_root, sysfs_root = roots
    by_id = device_root / "disk" / "by-id" / f"nvme-Amazon_Elastic_Block_Store_{VOLUME[:3]}"
    by_id = by_id.with_name(by_id.name + VOLUME[4:])
    by_id.parent.mkdir(parents=True)
    by_id.symlink_to(some_block_device())
    assert find_volume_device(VOLUME, "/dev/sdf", device_root, sysfs_root) is not None


def test_a_xen_name_is_found_and_a_file_that_is_no_device_is_not(
    roots: tuple[Path, Path],
) -> None:
    device_root, sysfs_root = roots
    (device_root / "xvdf").write_text("not a device")
    assert find_volume_device(VOLUME, "/dev/sdf", device_root, sysfs_root) is None
    (device_root / "xvdf").unlink()
    (device_root / "xvdf").symlink_to(some_block_device())
    assert find_volume_device(VOLUME, "/dev/sdf", device_root, sysfs_root) is not None


def test_a_point_is_taken_locally_by_any_node_or_dangling_link(roots: tuple[Path, Path]) -> None:
    device_root, _ = roots
    assert taken_locally("/dev/sdf", device_root) is None
    (device_root / "xvdf").symlink_to(device_root / "gone")
    assert taken_locally("/dev/sdf", device_root) == device_root / "xvdf"
    message = looked_for(VOLUME, "/dev/sdf", device_root)
    assert "xvdf" in message and "vol0123456789abcdef0" in message
