"""The RegisterImage request of a baked AMI: inherited from the base, overridable, new root."""

from __future__ import annotations

from typing import Any

from aminator_ec2.images import BaseImage
from aminator_ec2.plugin import Ec2Settings
from aminator_ec2.registration import RegistrationOverrides, register_image_request


def base(**changes: Any) -> BaseImage:
    fields: dict[str, Any] = {
        "image_id": "ami-0base",
        "name": "debian-12",
        "architecture": "arm64",
        "root_device_name": "/dev/xvda",
        "root_snapshot_id": "snap-base",
        "creation_date": "2026-01-01T00:00:00.000Z",
        "ena_support": True,
        "boot_mode": "uefi",
        "tpm_support": "v2.0",
        "imds_support": "v2.0",
        "sriov_net_support": "simple",
        "block_device_mappings": (
            {
                "DeviceName": "/dev/xvda",
                "Ebs": {
                    "SnapshotId": "snap-base",
                    "VolumeSize": 8,
                    "VolumeType": "gp3",
                    "DeleteOnTermination": True,
                    "Encrypted": False,
                },
            },
            {"DeviceName": "/dev/sdb", "VirtualName": "ephemeral0"},
            {"DeviceName": "/dev/sdc", "NoDevice": ""},
        ),
    }
    fields.update(changes)
    return BaseImage(**fields)


def request(image: BaseImage, **kwargs: Any) -> dict[str, Any]:
    kwargs.setdefault("snapshot_id", "snap-new")
    kwargs.setdefault("name", "hello-1.0")
    kwargs.setdefault("description", "hello 1.0")
    kwargs.setdefault("tags", {"appversion": "hello-1.0"})
    return register_image_request(image, **kwargs)


def test_every_boot_attribute_is_inherited_and_the_root_is_the_new_snapshot() -> None:
    made = request(base(), uefi_data="VUVGSQ==")
    assert made["Architecture"] == "arm64"
    assert made["RootDeviceName"] == "/dev/xvda"
    assert made["VirtualizationType"] == "hvm"
    assert made["EnaSupport"] is True
    assert made["BootMode"] == "uefi"
    assert made["TpmSupport"] == "v2.0"
    assert made["ImdsSupport"] == "v2.0"
    assert made["SriovNetSupport"] == "simple"
    assert made["UefiData"] == "VUVGSQ=="
    root, ephemeral, suppressed = made["BlockDeviceMappings"]
    # Encrypted follows from the snapshot and may not be given with it.
    assert root == {
        "DeviceName": "/dev/xvda",
        "Ebs": {
            "SnapshotId": "snap-new",
            "VolumeSize": 8,
            "VolumeType": "gp3",
            "DeleteOnTermination": True,
        },
    }
    assert ephemeral == {"DeviceName": "/dev/sdb", "VirtualName": "ephemeral0"}
    assert suppressed == {"DeviceName": "/dev/sdc", "NoDevice": ""}
    assert made["TagSpecifications"] == [
        {"ResourceType": "image", "Tags": [{"Key": "appversion", "Value": "hello-1.0"}]}
    ]


def test_overrides_win_over_the_base() -> None:
    overrides = RegistrationOverrides(
        root_device_name="/dev/sda1", ena_support=False, boot_mode="uefi-preferred"
    )
    made = request(base(), overrides=overrides)
    assert made["RootDeviceName"] == "/dev/sda1"
    assert made["BlockDeviceMappings"][0]["DeviceName"] == "/dev/sda1"
    assert made["EnaSupport"] is False
    assert made["BootMode"] == "uefi-preferred"
    assert made["TpmSupport"] == "v2.0"


def test_overrides_read_from_settings_ignore_other_settings() -> None:
    overrides = RegistrationOverrides.from_settings(
        Ec2Settings(boot_mode="uefi", attach_timeout=5.0)
    )
    assert overrides == RegistrationOverrides(boot_mode="uefi")


def test_attributes_the_base_lacks_are_left_out_not_invented() -> None:
    made = request(
        base(boot_mode=None, tpm_support=None, imds_support=None, sriov_net_support=None)
    )
    for key in ("BootMode", "TpmSupport", "ImdsSupport", "SriovNetSupport", "UefiData"):
        assert key not in made


def test_a_base_without_a_root_mapping_gets_one_and_sizes_never_shrink() -> None:
    made = request(base(block_device_mappings=()), volume_size_gib=10)
    assert made["BlockDeviceMappings"] == [
        {
            "DeviceName": "/dev/xvda",
            "Ebs": {"SnapshotId": "snap-new", "DeleteOnTermination": True, "VolumeSize": 10},
        }
    ]
    grown = request(base(), volume_size_gib=4)
    assert grown["BlockDeviceMappings"][0]["Ebs"]["VolumeSize"] == 8


def test_a_long_description_is_cut_to_what_ec2_accepts() -> None:
    assert len(request(base(), description="x" * 400)["Description"]) == 255


def test_the_root_mapping_takes_the_working_volumes_type_and_drops_what_it_does_not_take() -> None:
    io1_root = {
        "DeviceName": "/dev/xvda",
        "Ebs": {"SnapshotId": "snap-base", "VolumeSize": 8, "VolumeType": "io1", "Iops": 5000},
    }
    made = request(base(block_device_mappings=(io1_root,)), root_performance={"VolumeType": "gp2"})
    assert made["BlockDeviceMappings"][0]["Ebs"] == {
        "SnapshotId": "snap-new",
        "VolumeSize": 8,
        "VolumeType": "gp2",
    }
