"""Hook implementations of the EC2 backend: its settings and flags, and the backend itself."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from aminator_ng.api import CloudBackend, EngineSettings, Setting, hookimpl

#: The backend's name (``--cloud ec2``).
CLOUD_NAME = "ec2"
#: Whose images a base name is looked up among, unless base_owner says otherwise.
DEFAULT_OWNERS = ("self", "amazon")

VOLUME_TYPES = ("gp3", "gp2", "io1", "io2", "st1", "sc1", "standard")


@hookimpl
def aminator_settings() -> Sequence[Setting]:
    return [
        Setting(
            "base_owner",
            list,
            list(DEFAULT_OWNERS),
            "owners whose images a base image name may match: self, amazon, an account id",
            flag=True,
        ),
        Setting(
            "base_filter",
            dict,
            {},
            "DescribeImages filters that narrow the base image (architecture=x86_64, ...)",
            flag=True,
        ),
        Setting(
            "attach_timeout",
            float,
            120.0,
            "seconds to wait for an attached volume's block device to appear",
            flag=True,
        ),
        Setting(
            "volume_type",
            str,
            "gp3",
            "the working volume's EBS type",
            flag=True,
            choices=VOLUME_TYPES,
        ),
        Setting("snapshot_timeout", float, 3600.0, "seconds to wait for the snapshot"),
        Setting(
            "retry_mode",
            str,
            None,
            "botocore's retry mode (else AWS_RETRY_MODE or the profile's, else standard)",
            choices=("standard", "adaptive", "legacy"),
        ),
        Setting(
            "root_device_name",
            str,
            None,
            "the new AMI's root device name (default: the base AMI's)",
            flag=True,
        ),
        Setting("ena_support", bool, None, "ENA support (default: the base AMI's)", flag=True),
        Setting(
            "sriov_net_support",
            str,
            None,
            "SR-IOV support (default: the base AMI's)",
            flag=True,
            choices=("simple",),
        ),
        Setting(
            "boot_mode",
            str,
            None,
            "boot mode (default: the base AMI's)",
            flag=True,
            choices=("legacy-bios", "uefi", "uefi-preferred"),
        ),
        Setting(
            "tpm_support",
            str,
            None,
            "NitroTPM support (default: the base AMI's)",
            flag=True,
            choices=("v2.0",),
        ),
        Setting(
            "imds_support",
            str,
            None,
            "v2.0 makes instances require IMDSv2 (default: the base AMI's)",
            flag=True,
            choices=("v2.0",),
        ),
        Setting(
            "sbom_bucket",
            str,
            "",
            "an S3 bucket that receives each baked AMI's SBOM too (none: kept on this host only)",
        ),
        Setting("sbom_prefix", str, "sboms/", "the key prefix of the SBOMs in sbom_bucket"),
        Setting("device_root", Path, Path("/dev"), "where block devices appear"),
        Setting("sysfs_root", Path, Path("/sys"), "where sysfs is mounted"),
        Setting("lock_dir", Path, Path("/run/lock"), "where attachment points are locked"),
    ]


@hookimpl
def aminator_cloud_backend(name: str, settings: EngineSettings) -> CloudBackend | None:
    if name != CLOUD_NAME:
        return None
    # Imported only for an ec2 command: boto3 takes a tenth of a second to import.
    from aminator_ec2.backend import Ec2Cloud

    return Ec2Cloud(settings)
