"""The working volume's EBS options: its type, performance and encryption, checked before a bake
acquires anything, and the CreateVolume parameters they make."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aminator_ec2.plugin import Ec2Settings
from aminator_ng.api import RequestError


@dataclass(frozen=True)
class VolumeType:
    """What an EBS volume type takes (EC2's CreateVolume limits)."""

    name: str
    #: The range of provisioned IOPS, or None where the type takes none.
    iops: tuple[int, int] | None = None
    iops_required: bool = False
    #: The range of throughput in MiB/s, or None where the type takes none.
    throughput: tuple[int, int] | None = None


#: The types a root volume may have; st1, sc1 and standard cannot boot an instance.
ROOT_VOLUME_TYPES = {
    kind.name: kind
    for kind in (
        VolumeType("gp3", iops=(3000, 16000), throughput=(125, 1000)),
        VolumeType("gp2"),
        VolumeType("io1", iops=(100, 64000), iops_required=True),
        VolumeType("io2", iops=(100, 256000), iops_required=True),
    )
}


def _check_range(flag: str, value: int, bounds: tuple[int, int], kind: str) -> None:
    low, high = bounds
    if not low <= value <= high:
        raise RequestError(
            f"{flag} {value} is out of range for --volume-type {kind}",
            hint=f"--volume-type {kind} takes {flag} {low} to {high}",
        )


def check_volume_settings(own: Ec2Settings) -> None:
    """Refuse options the chosen volume type does not take, or lacks: a request error (exit 2)
    before the bake acquires anything. Without ``volume_type`` the type is the base AMI's,
    known once the base is resolved: ``create_volume`` checks it then, before CreateVolume."""
    if own.volume_type is not None:
        RootVolume.chosen(own, {}).check()


@dataclass(frozen=True)
class RootVolume:
    """The working volume's EBS options, which the AMI's root volume keeps."""

    kind: VolumeType
    iops: int | None = None
    throughput: int | None = None
    encrypted: bool = False
    kms_key_id: str | None = None

    @classmethod
    def chosen(cls, own: Ec2Settings, base_root: Mapping[str, Any]) -> RootVolume:
        """What the settings choose, else what the base AMI's root has (its type, and its
        IOPS and throughput where the type stays), else gp3."""
        base_type = str(base_root.get("VolumeType") or "gp3")
        name = own.volume_type or (base_type if base_type in ROOT_VOLUME_TYPES else "gp3")
        kind = ROOT_VOLUME_TYPES[name]
        inherited = name == base_type
        iops = own.iops
        if iops is None and inherited and kind.iops is not None:
            iops = base_root.get("Iops")
        throughput = own.throughput
        if throughput is None and inherited and kind.throughput is not None:
            throughput = base_root.get("Throughput")
        return cls(
            kind,
            int(iops) if iops is not None else None,
            int(throughput) if throughput is not None else None,
            encrypted=own.encrypt or bool(own.kms_key_id),
            kms_key_id=own.kms_key_id,
        )

    def check(self) -> None:
        kind = self.kind
        if self.iops is not None:
            if kind.iops is None:
                raise RequestError(
                    f"--iops is not for --volume-type {kind.name}",
                    hint="gp3, io1 and io2 volumes take --iops",
                )
            _check_range("--iops", self.iops, kind.iops, kind.name)
        elif kind.iops_required:
            raise RequestError(
                f"--volume-type {kind.name} needs --iops",
                hint=f"give --iops N with --volume-type {kind.name}",
            )
        if self.throughput is not None:
            if kind.throughput is None:
                raise RequestError(
                    f"--throughput is not for --volume-type {kind.name}",
                    hint="gp3 volumes take --throughput",
                )
            _check_range("--throughput", self.throughput, kind.throughput, kind.name)

    def performance(self) -> dict[str, Any]:
        """Type, IOPS and throughput, as CreateVolume and a block-device mapping take them."""
        parameters: dict[str, Any] = {"VolumeType": self.kind.name}
        if self.iops is not None:
            parameters["Iops"] = self.iops
        if self.throughput is not None:
            parameters["Throughput"] = self.throughput
        return parameters

    def create_parameters(self) -> dict[str, Any]:
        """CreateVolume's type, performance and encryption parameters. Unless asked to encrypt,
        none is sent for encryption: a volume from an encrypted snapshot is encrypted with its
        key anyway, and the account's default encryption applies as EC2 sets it."""
        parameters = self.performance()
        if self.encrypted:
            parameters["Encrypted"] = True
        if self.kms_key_id:
            parameters["KmsKeyId"] = self.kms_key_id
        return parameters
