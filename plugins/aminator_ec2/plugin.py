"""Hook implementations of the EC2 backend: its settings and flags, and the backend itself."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from aminator_ng.api import BakeRequest, CloudBackend, EngineSettings, Flag, declared, hookimpl

#: The backend's name (``--cloud ec2``).
CLOUD_NAME = "ec2"
#: Whose images a base name is looked up among, unless base_owner says otherwise.
DEFAULT_OWNERS = ("self", "amazon")

#: The EBS types a root volume may have: st1, sc1 and standard cannot boot an instance.
VOLUME_TYPES = ("gp3", "gp2", "io1", "io2")


@dataclass(frozen=True)
class Ec2Settings:
    """The ``[plugins.NAME]`` table of this plugin (``ec2`` as it is installed)."""

    base_owner: tuple[str, ...] = declared(
        list,
        DEFAULT_OWNERS,
        "owners whose images a base image name may match: self, amazon, an account id",
        flag=True,
    )
    base_filter: Mapping[str, str] = declared(
        dict,
        {},
        "DescribeImages filters that narrow the base image (architecture=x86_64, ...)",
        flag=True,
    )
    attach_timeout: float = declared(
        float,
        120.0,
        "seconds to wait for an attached volume's block device to appear",
        flag=True,
    )
    volume_type: str | None = declared(
        str,
        None,
        "the EBS type of the working volume, and so of the AMI's root volume (default: the "
        "base AMI's root type, else gp3)",
        flag=True,
        choices=VOLUME_TYPES,
    )
    iops: int | None = declared(
        int,
        None,
        "provisioned IOPS of a gp3 (3000-16000), io1 (100-64000) or io2 (100-256000) volume; "
        "io1 and io2 need it",
        flags=(Flag(("--iops",), metavar="N"),),
    )
    throughput: int | None = declared(
        int,
        None,
        "throughput of a gp3 volume in MiB/s (125-1000)",
        flags=(Flag(("--throughput",), metavar="MIB_S"),),
    )
    encrypt: bool = declared(
        bool,
        False,
        "encrypt the working volume, and so the snapshot and the AMI, with the account's default "
        "EBS key unless --kms-key-id names one (a volume from an encrypted base is encrypted "
        "anyway)",
        flag=True,
        negatable=False,
    )
    kms_key_id: str | None = declared(
        str,
        None,
        "the KMS key that encrypts the volume: a key id, key ARN, alias/NAME or alias ARN "
        "(implies --encrypt)",
        flags=(Flag(("--kms-key-id",), metavar="KEY"),),
    )
    snapshot_timeout: float = declared(float, 3600.0, "seconds to wait for the snapshot")
    share_with: tuple[str, ...] = declared(
        list,
        (),
        "let an account (12-digit id), an organization or an OU (ARN) launch the new AMI; "
        "accounts may create volumes from its snapshot too",
        flags=(Flag(("--share-with",), metavar="ID"),),
    )
    public: bool = declared(
        bool,
        False,
        "let every AWS account launch the new AMI (needs allow_public)",
        flag=True,
        negatable=False,
    )
    allow_public: bool = declared(
        bool, False, "whether --public is allowed on this host or environment"
    )
    copy_to: tuple[str, ...] = declared(
        list,
        (),
        "copy the new AMI, with its name, description and tags, into this region too; the copy "
        "is shared, deprecated and protected as the AMI is",
        flags=(Flag(("--copy-to",), metavar="REGION"),),
    )
    region_kms_key: Mapping[str, str] = declared(
        dict,
        {},
        "encrypt the copy in REGION with this KMS key of that region (default: as the AMI is, "
        "with that region's default EBS key)",
        flags=(Flag(("--region-kms-key",), metavar="REGION=KEY"),),
    )
    copy_timeout: float = declared(
        float, 7200.0, "seconds to wait for the copies in other regions to become available"
    )
    deprecate_in: str | None = declared(
        str,
        None,
        "deprecate the new AMI this long after its bake: 36h, 90d, 12w",
        flags=(Flag(("--deprecate-in",), metavar="DURATION"),),
    )
    deprecate_at: str | None = declared(
        str,
        None,
        "deprecate the new AMI at this ISO-8601 time (UTC unless it says): 2027-06-30T00:00Z",
        flags=(Flag(("--deprecate-at",), metavar="TIME"),),
    )
    protect: bool = declared(
        bool,
        False,
        "protect the new AMI from deregistration",
        flag=True,
        negatable=False,
    )
    protect_cooldown: bool = declared(
        bool,
        False,
        "with --protect: its protection can only be lifted 24 hours after it is asked to be",
        flag=True,
        negatable=False,
    )
    image_timeout: float = declared(
        float, 3600.0, "seconds to wait for the new AMI to become available"
    )
    retry_mode: str | None = declared(
        str,
        None,
        "botocore's retry mode (else AWS_RETRY_MODE or the profile's, else standard)",
        choices=("standard", "adaptive", "legacy"),
    )
    root_device_name: str | None = declared(
        str, None, "the new AMI's root device name (default: the base AMI's)", flag=True
    )
    ena_support: bool | None = declared(
        bool, None, "ENA support (default: the base AMI's)", flag=True
    )
    sriov_net_support: str | None = declared(
        str, None, "SR-IOV support (default: the base AMI's)", flag=True, choices=("simple",)
    )
    boot_mode: str | None = declared(
        str,
        None,
        "boot mode (default: the base AMI's)",
        flag=True,
        choices=("legacy-bios", "uefi", "uefi-preferred"),
    )
    tpm_support: str | None = declared(
        str, None, "NitroTPM support (default: the base AMI's)", flag=True, choices=("v2.0",)
    )
    imds_support: str | None = declared(
        str,
        None,
        "v2.0 makes instances require IMDSv2 (default: the base AMI's)",
        flag=True,
        choices=("v2.0",),
    )
    sbom_bucket: str = declared(
        str,
        "",
        "an S3 bucket that receives each baked AMI's SBOM too (none: kept on this host only)",
    )
    sbom_prefix: str = declared(str, "sboms/", "the key prefix of the SBOMs in sbom_bucket")
    device_root: Path = declared(Path, "/dev", "where block devices appear")
    sysfs_root: Path = declared(Path, "/sys", "where sysfs is mounted")
    lock_dir: Path = declared(Path, "/run/lock", "where attachment points are locked")


@hookimpl
def aminator_settings() -> type[Ec2Settings]:
    return Ec2Settings


@hookimpl
def aminator_cloud_backend(name: str, settings: EngineSettings) -> CloudBackend | None:
    if name != CLOUD_NAME:
        return None
    # Imported only for an ec2 command: boto3 takes a tenth of a second to import.
    from aminator_ec2.backend import Ec2Cloud

    return Ec2Cloud(settings)


@hookimpl
def aminator_check_request(request: BakeRequest, settings: EngineSettings) -> None:
    if settings.cloud != CLOUD_NAME:
        return
    from aminator_ec2.copies import CopyPlan
    from aminator_ec2.publishing import Publishing
    from aminator_ec2.volumes import check_volume_settings

    own = settings.of(Ec2Settings)
    check_volume_settings(own)
    Publishing.from_settings(own, datetime.now(UTC))
    CopyPlan.from_settings(own)
