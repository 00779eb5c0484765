"""The RegisterImage request of a baked AMI: the base AMI's attributes, the new root snapshot.

Everything the base AMI says about how to boot it is inherited: architecture, root device name,
virtualization type, ENA, SR-IOV, boot mode, TPM, IMDS support, UEFI data, and its other
block-device mappings. Operators may override the boot attributes (``[plugins.ec2]`` or flags).
Aminator hard-coded ``/dev/sda1``, paravirtual and ``standard`` volumes; nothing is hard-coded
here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aminator_ec2.images import BaseImage
from aminator_ec2.plugin import Ec2Settings

#: EC2 limits an AMI description to 255 characters.
MAX_DESCRIPTION = 255
#: The Ebs keys RegisterImage accepts in a mapping that names a snapshot. ``Encrypted`` and
#: ``KmsKeyId`` follow from the snapshot itself and may not be given with it.
_EBS_KEYS = ("DeleteOnTermination", "Iops", "SnapshotId", "VolumeSize", "VolumeType", "Throughput")


@dataclass(frozen=True)
class RegistrationOverrides:
    """Boot attributes the operator sets instead of inheriting them (None: inherit)."""

    root_device_name: str | None = None
    ena_support: bool | None = None
    sriov_net_support: str | None = None
    boot_mode: str | None = None
    tpm_support: str | None = None
    imds_support: str | None = None

    @classmethod
    def from_settings(cls, settings: Ec2Settings) -> RegistrationOverrides:
        return cls(**{name: getattr(settings, name) for name in cls.__dataclass_fields__})


def _mapping(mapping: Mapping[str, Any]) -> dict[str, Any]:
    copied = {
        key: mapping[key] for key in ("DeviceName", "VirtualName", "NoDevice") if key in mapping
    }
    if "Ebs" in mapping:
        copied["Ebs"] = {key: mapping["Ebs"][key] for key in _EBS_KEYS if key in mapping["Ebs"]}
    return copied


def block_device_mappings(
    base: BaseImage,
    root_device_name: str,
    snapshot_id: str,
    volume_size_gib: int | None,
    root_performance: Mapping[str, Any],
) -> list[dict[str, Any]]:
    """The base's mappings with its root replaced by the new snapshot, of the working volume's
    type, IOPS and throughput where ``root_performance`` gives them (kept in their order)."""
    mappings: list[dict[str, Any]] = []
    root_seen = False
    for mapping in base.block_device_mappings:
        copied = _mapping(mapping)
        if mapping.get("DeviceName") == base.root_device_name:
            root_seen = True
            copied["DeviceName"] = root_device_name
            ebs = copied.setdefault("Ebs", {})
            if root_performance:
                for key in ("VolumeType", "Iops", "Throughput"):
                    ebs.pop(key, None)
            ebs.update(root_performance, SnapshotId=snapshot_id)
            if volume_size_gib is not None:
                ebs["VolumeSize"] = max(volume_size_gib, int(ebs.get("VolumeSize", 0)))
        mappings.append(copied)
    if not root_seen:
        root: dict[str, Any] = {
            "SnapshotId": snapshot_id,
            "DeleteOnTermination": True,
            **root_performance,
        }
        if volume_size_gib is not None:
            root["VolumeSize"] = volume_size_gib
        mappings.insert(0, {"DeviceName": root_device_name, "Ebs": root})
    return mappings


def register_image_request(
    base: BaseImage,
    *,
    snapshot_id: str,
    name: str,
    description: str,
    tags: Mapping[str, str],
    volume_size_gib: int | None = None,
    root_performance: Mapping[str, Any] | None = None,
    uefi_data: str | None = None,
    overrides: RegistrationOverrides | None = None,
) -> dict[str, Any]:
    """The keyword arguments of ``ec2.register_image`` for an image baked from ``base``."""
    chosen = overrides or RegistrationOverrides()
    root_device_name = chosen.root_device_name or base.root_device_name
    request: dict[str, Any] = {
        "Name": name,
        "Description": description[:MAX_DESCRIPTION],
        "Architecture": base.architecture,
        "RootDeviceName": root_device_name,
        "VirtualizationType": base.virtualization_type,
        "BlockDeviceMappings": block_device_mappings(
            base, root_device_name, snapshot_id, volume_size_gib, root_performance or {}
        ),
        "EnaSupport": base.ena_support if chosen.ena_support is None else chosen.ena_support,
    }
    optional = {
        "SriovNetSupport": chosen.sriov_net_support or base.sriov_net_support,
        "BootMode": chosen.boot_mode or base.boot_mode,
        "TpmSupport": chosen.tpm_support or base.tpm_support,
        "ImdsSupport": chosen.imds_support or base.imds_support,
        "UefiData": uefi_data,
    }
    request.update({key: value for key, value in optional.items() if value})
    if tags:
        request["TagSpecifications"] = [
            {
                "ResourceType": "image",
                "Tags": [{"Key": key, "Value": value} for key, value in sorted(tags.items())],
            }
        ]
    return request
