"""Base images on EC2: clients, and the AMI a ``-b`` reference names.

A reference is an image id (``ami-...``), an SSM parameter that holds one
(``resolve:ssm:/aws/service/...``, as AWS publishes its latest AMIs), or an image name (the newest
image with it, among ``owners``, narrowed by ``--base-filter`` filters); filters alone are enough
too. The choice among several images and the checks of the one chosen are pure functions
(``choose_newest``, ``check_usable``), so their every rule is testable without a cloud.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import botocore.config  # type: ignore[import-untyped]  # botocore ships no types
import botocore.exceptions  # type: ignore[import-untyped]

from aminator_ec2.aws import (
    AWS_ERRORS,
    aws_error,
    log_calls,
    new_boto3_session,
    quiet_aws_libraries,
)
from aminator_ec2.plugin import DEFAULT_OWNERS
from aminator_ng.api import (
    AminatorError,
    ConfigError,
    Image,
    NotFoundError,
    RequestError,
)

log = logging.getLogger(__name__)

SSM_PREFIX = "resolve:ssm:"

#: ``uname -m`` names of the architectures EC2 knows, and EC2's own names for them.
_ARCHITECTURES = {
    "x86_64": "x86_64",
    "amd64": "x86_64",
    "aarch64": "arm64",
    "arm64": "arm64",
    "i386": "i386",
    "i686": "i386",
}

#: AWS error codes that mean the request named something wrong (exit 2), not a failed bake.
_NOT_FOUND_CODES = {
    "InvalidAMIID.NotFound",
    "InvalidAMIID.Unavailable",
    "ParameterNotFound",
    "ParameterVersionNotFound",
}
_BAD_REQUEST_CODES = {
    "InvalidAMIID.Malformed",
    "InvalidParameterValue",
    "InvalidFilter",
    "ValidationException",
}


@dataclass(frozen=True)
class Ec2Clients:
    """The clients the EC2 backend uses, made from one session."""

    ec2: Any
    ssm: Any
    region: str
    #: For the SBOMs put in ``sbom_bucket``.
    s3: Any = None


def ec2_clients(
    region: str | None, *, retry_mode: str | None = None, session: Any = None
) -> Ec2Clients:
    """EC2 and SSM clients for ``region``, configured the way boto3 users expect.

    The credential chain, ``AWS_PROFILE``, ``AWS_REGION``, ``AWS_ENDPOINT_URL`` and
    ``AWS_ENDPOINT_URL_EC2``/``_SSM``, ``AWS_MAX_ATTEMPTS`` and ``AWS_RETRY_MODE`` all work
    through boto3 itself. The retry mode is set only when ``retry_mode`` is given, or to
    ``standard`` when neither the environment nor the profile chose one (botocore's own default
    is ``legacy``). Each client logs one line per call (``aws.log_calls``), and the AWS libraries'
    own loggers are capped at WARNING: theirs would carry signed headers and bodies.
    """
    quiet_aws_libraries()  # a given session too
    try:
        session = session if session is not None else new_boto3_session()
        region = region or configured_region(session)
        if retry_mode is None and not _retry_mode_configured(session):
            retry_mode = "standard"
        config = None
        if retry_mode is not None:
            config = botocore.config.Config(retries={"mode": retry_mode})
        ec2 = session.client("ec2", region_name=region, config=config)
        ssm = session.client("ssm", region_name=region, config=config)
        s3 = session.client("s3", region_name=region, config=config)
        for client in (ec2, ssm, s3):
            log_calls(client)
    except botocore.exceptions.ProfileNotFound as error:
        raise ConfigError(str(error), hint="check AWS_PROFILE and ~/.aws/config") from error
    except botocore.exceptions.NoRegionError as error:
        raise ConfigError(
            "no AWS region: none was given and none is configured",
            hint="set AWS_REGION, or run on an EC2 bake host",
        ) from error
    except (ValueError, botocore.exceptions.BotoCoreError) as error:
        raise ConfigError(f"AWS client configuration: {error}") from error
    return Ec2Clients(ec2, ssm, str(ec2.meta.region_name), s3)


def configured_region(session: Any = None) -> str | None:
    """The region configured for AWS clients, if any: ``AWS_REGION`` (which the AWS CLI and the
    other SDKs honour but botocore does not), else boto3's own (``AWS_DEFAULT_REGION``, profile).
    """
    if os.environ.get("AWS_REGION"):
        return os.environ["AWS_REGION"]
    try:
        session = session if session is not None else new_boto3_session()
    except botocore.exceptions.ProfileNotFound as error:
        raise ConfigError(str(error), hint="check AWS_PROFILE and ~/.aws/config") from error
    return str(session.region_name) if session.region_name else None


def _retry_mode_configured(session: Any) -> bool:
    if os.environ.get("AWS_RETRY_MODE"):
        return True
    scoped = session._session.get_scoped_config()  # the active profile's settings
    return bool(scoped.get("retry_mode"))


def ec2_architecture(machine: str) -> str:
    """EC2's name for a ``uname -m`` architecture (``aarch64`` is ``arm64``)."""
    return _ARCHITECTURES.get(machine, machine)


def _datetime(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@dataclass(frozen=True)
class BaseImage:
    """What the backend needs of a base AMI to make a volume and register a baked image."""

    image_id: str
    name: str
    architecture: str
    root_device_name: str
    root_snapshot_id: str
    creation_date: str
    description: str = ""
    virtualization_type: str = "hvm"
    ena_support: bool = False
    sriov_net_support: str | None = None
    boot_mode: str | None = None
    tpm_support: str | None = None
    imds_support: str | None = None
    owner_id: str | None = None
    block_device_mappings: tuple[Mapping[str, Any], ...] = ()
    tags: Mapping[str, str] = field(default_factory=dict)

    @property
    def root_ebs(self) -> Mapping[str, Any]:
        """The Ebs part of the root's mapping: its snapshot, size, type, IOPS, throughput."""
        for mapping in self.block_device_mappings:
            if mapping.get("DeviceName") == self.root_device_name:
                return dict(mapping.get("Ebs", {}))
        return {}

    @property
    def root_volume_size_gib(self) -> int | None:
        size = self.root_ebs.get("VolumeSize")
        return int(size) if size is not None else None

    @classmethod
    def from_description(cls, image: Mapping[str, Any]) -> BaseImage:
        """From one image of a DescribeImages answer (already checked by ``check_usable``)."""
        return cls(
            image_id=image["ImageId"],
            name=image.get("Name", ""),
            architecture=image["Architecture"],
            root_device_name=image["RootDeviceName"],
            root_snapshot_id=root_snapshot_id(image) or "",
            creation_date=image.get("CreationDate", ""),
            description=image.get("Description", ""),
            virtualization_type=image.get("VirtualizationType", "hvm"),
            ena_support=bool(image.get("EnaSupport", False)),
            sriov_net_support=image.get("SriovNetSupport"),
            boot_mode=image.get("BootMode"),
            tpm_support=image.get("TpmSupport"),
            imds_support=image.get("ImdsSupport"),
            owner_id=image.get("OwnerId"),
            block_device_mappings=tuple(image.get("BlockDeviceMappings", ())),
            tags={tag["Key"]: tag["Value"] for tag in image.get("Tags", ())},
        )

    def as_image(self, region: str) -> Image:
        """The engine's view of this base image."""
        return Image(
            image_id=self.image_id,
            name=self.name,
            created=_datetime(self.creation_date),
            snapshot_id=self.root_snapshot_id,
            description=self.description,
            tags=dict(self.tags),
            cloud="ec2",
            region=region,
        )


def snapshot_ids(image: Mapping[str, Any]) -> list[str]:
    """The snapshots of every EBS mapping of an image (DescribeImages' form), in order."""
    return [
        str(mapping["Ebs"]["SnapshotId"])
        for mapping in image.get("BlockDeviceMappings", ())
        if "SnapshotId" in mapping.get("Ebs", {})
    ]


def root_snapshot_id(image: Mapping[str, Any]) -> str | None:
    """The snapshot of an image's root device, if it has one."""
    for mapping in image.get("BlockDeviceMappings", ()):
        if mapping.get("DeviceName") == image.get("RootDeviceName"):
            snapshot = mapping.get("Ebs", {}).get("SnapshotId")
            return str(snapshot) if snapshot else None
    return None


def _label(image: Mapping[str, Any]) -> str:
    name = image.get("Name")
    return f"{image.get('ImageId')} ({name})" if name else str(image.get("ImageId"))


def choose_newest(images: Sequence[Mapping[str, Any]], what: str) -> Mapping[str, Any]:
    """The image with the latest CreationDate; RequestError when the newest two tie.

    ``what`` describes the search for the error messages; ``images`` must not be empty.
    """
    ordered = sorted(images, key=lambda image: _datetime(image["CreationDate"]), reverse=True)
    if len(ordered) > 1 and _datetime(ordered[0]["CreationDate"]) == _datetime(
        ordered[1]["CreationDate"]
    ):
        first, second = ordered[0]["ImageId"], ordered[1]["ImageId"]
        raise RequestError(
            f"base image {what} is ambiguous: {first} and {second} are the newest, "
            f"both created {ordered[0]['CreationDate']}",
            hint=f"name one by id: -B {first}",
        )
    return ordered[0]


def check_usable(image: Mapping[str, Any], host_architecture: str) -> None:
    """Refuse (RequestError, exit 2) a base image this host cannot bake from."""
    label = _label(image)
    state = image.get("State", "available")
    if state != "available":
        raise RequestError(
            f"base image {label} is {state}, not available",
            hint="wait until it is available, or choose another base image",
        )
    if image.get("RootDeviceType") != "ebs":
        raise RequestError(
            f"base image {label} is {image.get('RootDeviceType', 'not')}-backed, not EBS-backed",
            hint="a chroot bake needs an EBS-backed base image",
        )
    wanted = ec2_architecture(host_architecture)
    architecture = image.get("Architecture")
    if architecture != wanted:
        raise RequestError(
            f"base image {label} is {architecture}; this host runs {wanted}",
            hint=f"choose a {wanted} base image, or bake on a {architecture} host",
        )
    if root_snapshot_id(image) is None:
        raise RequestError(f"base image {label} has no snapshot of its root device")


def _filter_list(filters: Mapping[str, str]) -> list[dict[str, Any]]:
    return [{"Name": name, "Values": [value]} for name, value in filters.items()]


def _client_error(error: Exception, operation: str, subject: str) -> AminatorError:
    """The project's error for a failed AWS call about the base image ``subject``."""

    def not_found(detail: str) -> AminatorError:
        return NotFoundError(f"base image not found: {subject} ({detail})")

    def bad_reference(detail: str) -> AminatorError:
        return RequestError(f"bad base image reference {subject} ({detail})")

    request_errors = dict.fromkeys(_NOT_FOUND_CODES, not_found) | dict.fromkeys(
        _BAD_REQUEST_CODES, bad_reference
    )
    return aws_error(error, operation, subject, request_errors)


def _describe(ec2: Any, subject: str, **kwargs: Any) -> list[Mapping[str, Any]]:
    images: list[Mapping[str, Any]] = []
    try:
        for page in ec2.get_paginator("describe_images").paginate(**kwargs):
            images.extend(page.get("Images", ()))
    except AWS_ERRORS as error:
        raise _client_error(error, "DescribeImages", subject) from error
    return images


def _ssm_image_id(ssm: Any, reference: str) -> str:
    name = reference.removeprefix(SSM_PREFIX)
    try:
        value = ssm.get_parameter(Name=name)["Parameter"]["Value"]
    except AWS_ERRORS as error:
        raise _client_error(error, "GetParameter", reference) from error
    if not (isinstance(value, str) and value.startswith("ami-")):
        raise RequestError(f"SSM parameter {name} holds {value!r}, not an image id")
    log.info("%s is %s", reference, value)
    return value


def resolve_base_image(
    ec2: Any,
    ssm: Any,
    reference: str,
    *,
    host_architecture: str,
    owners: Sequence[str] = DEFAULT_OWNERS,
    filters: Mapping[str, str] | None = None,
) -> BaseImage:
    """The base image ``reference`` names, checked usable on a ``host_architecture`` host.

    Raises NotFoundError or RequestError (exit 2) when there is none, it is ambiguous or unfit,
    CloudError (exit 1) when AWS fails otherwise.
    """
    filters = dict(filters or {})
    if reference.startswith(SSM_PREFIX):
        image_id = _ssm_image_id(ssm, reference)
        images = _describe(ec2, reference, ImageIds=[image_id])
        what = f"{reference} ({image_id})"
    elif reference.startswith("ami-"):
        kwargs: dict[str, Any] = {"ImageIds": [reference]}
        if filters:
            kwargs["Filters"] = _filter_list(filters)
        images = _describe(ec2, reference, **kwargs)
        what = reference
    elif reference or filters:
        if not owners:
            raise ConfigError(
                "no base image owners: a name would match anyone's public images",
                hint="give --base-owner self, amazon or an account id",
            )
        if reference:
            filters = {"name": reference, **filters}
        what = ", ".join(f"{key}={value}" for key, value in filters.items())
        what = f"{what} owned by {', '.join(owners)}"
        images = _describe(ec2, what, Owners=list(owners), Filters=_filter_list(filters))
    else:
        raise RequestError("no base image given", hint="give -b NAME_OR_ID or --base-filter K=V")
    if not images:
        raise NotFoundError(
            f"base image not found: {what}",
            hint="check the name, --base-owner and --base-filter",
        )
    image = choose_newest(images, what)
    check_usable(image, host_architecture)
    base = BaseImage.from_description(image)
    log.info("base image %s (%s) from %s", base.image_id, base.name, base.creation_date)
    return base
