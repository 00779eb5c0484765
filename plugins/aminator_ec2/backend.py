"""The EC2 backend: a working EBS volume from the base AMI's root snapshot, attached to this bake
host, snapshotted and registered as a new AMI.

Every resource is tagged at creation with the bake id, this instance's id and its purpose, so
that a janitor (or an operator) can find what a killed bake left. Each acquisition is a context
manager that releases what it made, also when the bake fails half way through it.
"""

from __future__ import annotations

import contextlib
import logging
import platform
import shlex
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, ExitStack
from dataclasses import replace
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any

from aminator_ec2.aws import AWS_ERRORS, aws_error, call, error_code
from aminator_ec2.copies import (
    COPY_REGIONS_TAG,
    SOURCE_IMAGE_TAG,
    CopyPlan,
    CopySource,
    RegionCopies,
    deregister_copy,
)
from aminator_ec2.devices import (
    ATTACHMENT_POINTS,
    find_volume_device,
    looked_for,
    short_name,
    taken_in_ec2,
    taken_locally,
)
from aminator_ec2.dry_run import AskedCall, check_permissions
from aminator_ec2.identity import InstanceIdentity, instance_identity
from aminator_ec2.images import (
    BaseImage,
    Ec2Clients,
    configured_region,
    ec2_clients,
    resolve_base_image,
    snapshot_ids,
)
from aminator_ec2.manifests import ManifestRecords
from aminator_ec2.plugin import CLOUD_NAME, DEFAULT_OWNERS, Ec2Settings
from aminator_ec2.publishing import Publishing
from aminator_ec2.registration import RegistrationOverrides, register_image_request
from aminator_ec2.sbom import SbomRecords
from aminator_ec2.volumes import RootVolume
from aminator_ec2.waiting import poll_until, wait_until_available
from aminator_ng.api import (
    CloudBackend,
    CloudError,
    ConfigError,
    ConflictError,
    EngineSettings,
    Image,
    ImageKeptError,
    ImageSpec,
    Leftover,
    LockHeldError,
    ManifestEntry,
    NotFoundError,
    RequestError,
    Snapshot,
    Volume,
    file_lock,
)

log = logging.getLogger(__name__)

TAG_PREFIX = "aminator-ng:"
BAKE_ID_TAG = TAG_PREFIX + "bake-id"
INSTANCE_TAG = TAG_PREFIX + "instance-id"
PURPOSE_TAG = TAG_PREFIX + "purpose"
BASE_IMAGE_TAG = TAG_PREFIX + "base-image-id"
GIB = 1 << 30
#: The states of an instance that still needs its AMI (a stopped one starts from it again).
INSTANCE_STATES_USING = ("pending", "running", "shutting-down", "stopping", "stopped")
#: The kinds of leftovers in the regions a bake copied to; their ids are ``REGION/ID``.
COPY = "image copy"
COPY_SNAPSHOT = "snapshot copy"
#: AWS says this when another volume holds the attachment point (code InvalidParameterValue).
POINT_IN_USE = "is already in use"


def _tags(tags: Mapping[str, str]) -> list[dict[str, str]]:
    return [{"Key": key, "Value": value} for key, value in sorted(tags.items())]


def _tag_dict(resource: Mapping[str, Any]) -> dict[str, str]:
    return {tag["Key"]: tag["Value"] for tag in resource.get("Tags", ())}


def _created(image: Mapping[str, Any]) -> datetime:
    return datetime.fromisoformat(str(image.get("CreationDate", "")).replace("Z", "+00:00"))


class Ec2Cloud(CloudBackend):
    """Bakes on an EC2 instance; images are AMIs in this instance's region."""

    name = CLOUD_NAME

    def __init__(self, settings: EngineSettings) -> None:
        own = settings.of(Ec2Settings)
        self.owners = own.base_owner or DEFAULT_OWNERS
        self.filters = dict(own.base_filter)
        self.attach_timeout_s = own.attach_timeout
        self.snapshot_timeout_s = own.snapshot_timeout
        self.image_timeout_s = own.image_timeout
        self.ec2_settings = own
        self.retry_mode = own.retry_mode
        self.device_root = own.device_root
        self.sysfs_root = own.sysfs_root
        self.lock_dir = own.lock_dir
        self.overrides = RegistrationOverrides.from_settings(own)
        self.manifests = ManifestRecords(settings.home / "ec2" / "manifests")
        self.sboms = SbomRecords(
            settings.home / "ec2" / "sboms", bucket=own.sbom_bucket, prefix=own.sbom_prefix
        )
        self._bases: dict[str, BaseImage] = {}
        self._regional: dict[str, Any] = {}

    # Who and where we are, asked only when needed: listing images needs no instance.

    @cached_property
    def identity(self) -> InstanceIdentity:
        return instance_identity()

    @cached_property
    def clients(self) -> Ec2Clients:
        """Clients for the configured region, else for this instance's."""
        region = configured_region() or self.identity.region
        return ec2_clients(region, retry_mode=self.retry_mode)

    @property
    def ec2(self) -> Any:
        return self.clients.ec2

    def _resource_tags(self, bake_id: str, purpose: str) -> dict[str, str]:
        return {
            "Name": f"aminator-ng {purpose} of bake {bake_id}",
            BAKE_ID_TAG: bake_id,
            INSTANCE_TAG: self.identity.instance_id,
            PURPOSE_TAG: purpose,
        }

    # The bake.

    def resolve_base(self, reference: str) -> Image:
        clients = self.clients
        if clients.region != self.identity.region:  # volumes attach only in the host's zone
            raise ConfigError(
                f"AWS region {clients.region} is not this bake host's region "
                f"{self.identity.region}",
                hint="unset AWS_REGION, or bake on a host in that region",
            )
        base = resolve_base_image(
            clients.ec2,
            clients.ssm,
            reference,
            host_architecture=platform.machine(),
            owners=self.owners,
            filters=self.filters,
        )
        self._bases[base.image_id] = base
        CopyPlan.from_settings(self.ec2_settings, clients.region)
        if self.ec2_settings.public:
            self._check_public_sharing()
        return base.as_image(clients.region)

    def _check_public_sharing(self) -> None:
        """Refuse ``--public`` in an account that blocks public AMIs, before anything is made."""
        answer = call(self.ec2.get_image_block_public_access_state, "this account's images")
        state = str(answer.get("ImageBlockPublicAccessState", ""))
        log.info("image block public access: %s", state)
        if state != "unblocked":
            raise RequestError(
                f"--public: this account blocks public AMIs (image block public access: {state})",
                hint="share with --share-with instead, or unblock it: "
                "aws ec2 disable-image-block-public-access",
            )

    def _base(self, image: Image) -> BaseImage:
        base = self._bases.get(image.image_id)
        if base is None:  # a backend not asked to resolve it (a plugin's own call)
            self.resolve_base(image.image_id)
            base = self._bases[image.image_id]
        return base

    def _volume_state(self, volume_id: str) -> str:
        try:
            volumes = call(self.ec2.describe_volumes, volume_id, VolumeIds=[volume_id])["Volumes"]
        except CloudError as error:
            if "InvalidVolume.NotFound" not in error.message:
                raise
            return "deleted"
        return str(volumes[0]["State"]) if volumes else "deleted"

    def _wait_volume(self, volume_id: str, state: str, timeout_s: float) -> None:
        def reached() -> bool | None:
            now = self._volume_state(volume_id)
            if now == "error" or (now == "deleted" and state != "deleted"):
                # A volume EC2 could not make (a KMS key it may not use, say) ends so.
                raise CloudError(
                    f"volume {volume_id} failed: it is {now}, not {state}",
                    hint="for an encrypted volume, check that the KMS key exists and that its "
                    "policy lets this bake host use it through EC2 (docs/ec2.md)",
                )
            return True if now == state else None

        poll_until(
            reached,
            timeout_s=timeout_s,
            what=f"volume {volume_id} did not become {state}",
            first_delay_s=0.5,
        )

    def root_volume(self, base: BaseImage) -> RootVolume:
        """The working volume's type, performance and encryption: the settings', else the base
        AMI's root's."""
        return RootVolume.chosen(self.ec2_settings, base.root_ebs)

    def _volume_request(
        self, ec2_base: BaseImage, bake_id: str, size_bytes: int | None
    ) -> dict[str, Any]:
        root = self.root_volume(ec2_base)
        root.check()
        request: dict[str, Any] = {
            "AvailabilityZone": self.identity.availability_zone,
            "SnapshotId": ec2_base.root_snapshot_id,
            **root.create_parameters(),
            # The same token on a retried request returns the same volume, never a second one.
            "ClientToken": f"aminator-ng-{bake_id}-volume",
            "TagSpecifications": [
                {"ResourceType": "volume", "Tags": _tags(self._resource_tags(bake_id, "volume"))}
            ],
        }
        sizes = [ec2_base.root_volume_size_gib, -(-size_bytes // GIB) if size_bytes else None]
        if any(size is not None for size in sizes):
            request["Size"] = max(size for size in sizes if size is not None)
        return request

    def create_volume(self, base: Image, bake_id: str, *, size_bytes: int | None = None) -> Volume:
        ec2_base = self._base(base)
        request = self._volume_request(ec2_base, bake_id, size_bytes)
        created = call(self.ec2.create_volume, f"from {ec2_base.root_snapshot_id}", **request)
        volume_id = str(created["VolumeId"])
        log.info("volume %s from snapshot %s", volume_id, ec2_base.root_snapshot_id)
        volume = Volume(volume_id, ec2_base.root_snapshot_id, int(created["Size"]) * GIB)
        try:
            self._wait_volume(volume_id, "available", self.attach_timeout_s)
        except BaseException:
            self._release_volume(volume_id)
            raise
        return volume

    def delete_volume(self, volume: Volume) -> None:
        self._detach_leftover(volume.volume_id)
        call(self.ec2.delete_volume, volume.volume_id, VolumeId=volume.volume_id)
        log.info("deleted volume %s", volume.volume_id)

    def _detach_leftover(self, volume_id: str) -> None:
        """Detach an attachment the bake does not know of: an AttachVolume whose answer was
        lost after EC2 had carried it out."""
        volumes = call(self.ec2.describe_volumes, volume_id, VolumeIds=[volume_id])["Volumes"]
        for attachment in volumes[0].get("Attachments", ()) if volumes else ():
            if attachment.get("State") in ("attaching", "attached", "busy"):
                log.warning("volume %s is still attached at %s", volume_id, attachment["Device"])
                self._detach(volume_id, attachment["InstanceId"], attachment["Device"])

    def _points_in_use(self) -> set[str]:
        """The attachment points EC2 shows on this instance, root device included."""
        instance_id = self.identity.instance_id
        answer = call(self.ec2.describe_instances, instance_id, InstanceIds=[instance_id])
        points: list[str] = []
        for reservation in answer.get("Reservations", ()):
            for instance in reservation.get("Instances", ()):
                points.append(str(instance.get("RootDeviceName", "")))
                points += [m["DeviceName"] for m in instance.get("BlockDeviceMappings", ())]
        return taken_in_ec2(point for point in points if point)

    def _attach_somewhere(self, volume_id: str, stack: ExitStack) -> str:
        """Attach at the first point free here and in EC2; its lock stays on ``stack``."""
        instance_id = self.identity.instance_id
        skipped: list[str] = []
        for point in ATTACHMENT_POINTS:
            with ExitStack() as held:
                lock = self.lock_dir / f"aminator-ng-attach-{short_name(point)}.lock"
                try:
                    held.enter_context(file_lock(lock, wait=False))
                except LockHeldError:
                    skipped.append(f"{point} (locked by another bake)")
                    continue
                occupant = taken_locally(point, self.device_root)
                if occupant is not None:
                    skipped.append(f"{point} ({occupant} exists)")
                    continue
                if short_name(point) in self._points_in_use():
                    skipped.append(f"{point} (in use on {instance_id})")
                    continue
                try:
                    self.ec2.attach_volume(VolumeId=volume_id, InstanceId=instance_id, Device=point)
                except AWS_ERRORS as error:
                    if POINT_IN_USE in str(error):
                        skipped.append(f"{point} (EC2: {POINT_IN_USE})")
                        continue
                    raise aws_error(error, "AttachVolume", f"{volume_id} at {point}") from error
                stack.enter_context(held.pop_all())
                if skipped:
                    log.info("attachment points skipped: %s", "; ".join(skipped))
                return point
        raise ConflictError(
            f"no free attachment point for {volume_id} on {instance_id}: {'; '.join(skipped)}",
            hint="wait for other bakes to finish, or detach volumes this instance no longer uses",
        )

    @contextlib.contextmanager
    def attached(self, volume: Volume, bake_id: str) -> Iterator[Path]:
        volume_id, instance_id = volume.volume_id, self.identity.instance_id
        with ExitStack() as stack:
            point = self._attach_somewhere(volume_id, stack)
            stack.callback(self._detach, volume_id, instance_id, point)
            log.info("attaching %s at %s", volume_id, point)
            self._wait_volume(volume_id, "in-use", self.attach_timeout_s)
            device = poll_until(
                lambda: find_volume_device(volume_id, point, self.device_root, self.sysfs_root),
                timeout_s=self.attach_timeout_s,
                what=f"no block device appeared for volume {volume_id} attached at {point}",
                first_delay_s=0.2,
                max_delay_s=2.0,
                hint=f"looked for {looked_for(volume_id, point, self.device_root)}; "
                "raise --attach-timeout on a slow host",
            )
            log.info("volume %s is %s", volume_id, device)
            yield device

    def _detach(self, volume_id: str, instance_id: str, point: str) -> None:
        # InstanceId and Device too: the attachment is named exactly, never another one.
        call(
            self.ec2.detach_volume,
            volume_id,
            VolumeId=volume_id,
            InstanceId=instance_id,
            Device=point,
        )
        self._wait_volume(volume_id, "available", self.attach_timeout_s)
        log.info("detached %s from %s", volume_id, point)

    def snapshot(
        self, volume: Volume, bake_id: str, description: str
    ) -> AbstractContextManager[Snapshot]:
        return self._snapshot(volume, bake_id, description, {})

    def image_snapshot(
        self, volume: Volume, bake_id: str, spec: ImageSpec
    ) -> AbstractContextManager[Snapshot]:
        # Named and tagged as its image at creation: the IAM policy allows tags at creation only.
        image_tags = {k: v for k, v in spec.tags.items() if not k.startswith(TAG_PREFIX)}
        return self._snapshot(volume, bake_id, spec.description, {**image_tags, "Name": spec.name})

    @contextlib.contextmanager
    def _snapshot(
        self, volume: Volume, bake_id: str, description: str, image_tags: Mapping[str, str]
    ) -> Iterator[Snapshot]:
        tags = {**self._resource_tags(bake_id, "snapshot"), **image_tags}
        created = call(
            self.ec2.create_snapshot,
            volume.volume_id,
            VolumeId=volume.volume_id,
            Description=description[:255],
            TagSpecifications=[{"ResourceType": "snapshot", "Tags": _tags(tags)}],
        )
        snapshot_id = str(created["SnapshotId"])
        log.info("snapshot %s of %s", snapshot_id, volume.volume_id)
        try:
            poll_until(
                lambda: self._snapshot_done(snapshot_id),
                timeout_s=self.snapshot_timeout_s,
                what=f"snapshot {snapshot_id} did not complete",
                first_delay_s=2.0,
                max_delay_s=30.0,
                hint="raise snapshot_timeout in [plugins.ec2]",
            )
            yield Snapshot(snapshot_id, volume.volume_id, int(created["VolumeSize"]) * GIB)
        except ImageKeptError:
            raise  # the image made from it is kept, and needs it
        except BaseException:
            call(self.ec2.delete_snapshot, snapshot_id, SnapshotId=snapshot_id)
            log.info("deleted snapshot %s", snapshot_id)
            raise

    def _snapshot_done(self, snapshot_id: str) -> bool | None:
        answer = call(self.ec2.describe_snapshots, snapshot_id, SnapshotIds=[snapshot_id])
        snapshot = answer["Snapshots"][0]
        if snapshot["State"] == "error":
            raise CloudError(
                f"snapshot {snapshot_id} failed: {snapshot.get('StateMessage', 'state error')}"
            )
        return True if snapshot["State"] == "completed" else None

    def check_name_available(self, name: str) -> None:
        answer = call(
            self.ec2.describe_images,
            name,
            Owners=["self"],
            Filters=[{"Name": "name", "Values": [name]}],
        )
        if answer.get("Images"):
            taken_by = answer["Images"][0]["ImageId"]
            raise ConflictError(
                f"an image named {name} exists already ({taken_by})",
                hint="choose another name with -n, or another suffix with -s",
            )

    def _uefi_data(self, base: BaseImage) -> str | None:
        if base.boot_mode not in ("uefi", "uefi-preferred"):
            return None
        answer = call(
            self.ec2.describe_image_attribute,
            base.image_id,
            ImageId=base.image_id,
            Attribute="uefiData",
        )
        value = answer.get("UefiData", {}).get("Value")
        return str(value) if value else None

    @contextlib.contextmanager
    def registered(self, snapshot: Snapshot, spec: ImageSpec, bake_id: str) -> Iterator[Image]:
        base = self._base(spec.base)
        copy_plan = CopyPlan.from_settings(self.ec2_settings, self.clients.region)
        tags = {**spec.tags, BAKE_ID_TAG: bake_id, BASE_IMAGE_TAG: base.image_id}
        if copy_plan.regions:
            tags[COPY_REGIONS_TAG] = " ".join(copy_plan.regions)
        request = register_image_request(
            base,
            snapshot_id=snapshot.snapshot_id,
            name=spec.name,
            description=spec.description,
            tags=tags,
            volume_size_gib=snapshot.size_bytes // GIB or None,
            root_performance=self.root_volume(base).performance(),
            uefi_data=self._uefi_data(base),
            overrides=self.overrides,
        )
        try:
            image_id = str(self.ec2.register_image(**request)["ImageId"])
        except AWS_ERRORS as error:
            # The request may have been carried out before the answer was lost.
            self._deregister_images_of(bake_id)
            if error_code(error) == "InvalidAMIName.Duplicate":
                raise ConflictError(f"an image named {spec.name} exists already") from error
            raise aws_error(error, "RegisterImage", spec.name) from error
        except BaseException:
            # A signal while waiting for the answer: EC2 may have registered it all the same.
            self._deregister_images_of(bake_id)
            raise
        log.info("registered %s as %s", image_id, spec.name)
        protected = False
        copies_failed: ImageKeptError | None = None
        try:
            with contextlib.ExitStack() as stack:
                self._wait_until_available(image_id)
                stack.enter_context(
                    self.manifests.stored(self.clients.region, image_id, spec.manifest)
                )
                publishing = Publishing.from_settings(self.ec2_settings, datetime.now(UTC))
                protected = publishing.protect
                publishing.apply(self.ec2, image_id, [snapshot.snapshot_id])
                if spec.sbom is not None:
                    stack.enter_context(
                        self.sboms.stored(self.clients.s3, self.clients.region, image_id, spec.sbom)
                    )
                copies: dict[str, str] = {}
                if copy_plan.regions:
                    source = CopySource(
                        self.clients.region,
                        image_id,
                        spec.name,
                        spec.description,
                        tags,
                        encrypted=self._encrypted(snapshot.snapshot_id),
                    )
                    try:
                        copies = self._copies(copy_plan, publishing, bake_id).make(source)
                    except ImageKeptError as error:
                        copies_failed = error
                        stack.pop_all()  # the image is kept, and its manifest and SBOM with it
                if copies_failed is None:
                    yield replace(self.get_image(image_id), copies=copies)
        except BaseException:
            if protected:  # asked for, perhaps set before the failure: lifted to deregister
                call(
                    self.ec2.disable_image_deregistration_protection,
                    image_id,
                    ImageId=image_id,
                )
            call(self.ec2.deregister_image, image_id, ImageId=image_id)
            log.info("deregistered %s", image_id)
            raise
        if copies_failed is not None:
            raise copies_failed

    def _copies(self, plan: CopyPlan, publishing: Publishing, bake_id: str) -> RegionCopies:
        snapshot_tags = self._resource_tags(bake_id, "snapshot")
        return RegionCopies(
            plan,
            client_in=self._client_in,
            bake_id=bake_id,
            bake_id_tag=BAKE_ID_TAG,
            snapshot_tags=snapshot_tags,
            publishing=publishing,
            timeout_s=self.ec2_settings.copy_timeout,
        )

    def _client_in(self, region: str) -> Any:
        """An EC2 client for another region, made once."""
        if region == self.clients.region:
            return self.ec2
        if region not in self._regional:
            self._regional[region] = ec2_clients(region, retry_mode=self.retry_mode).ec2
        return self._regional[region]

    def _encrypted(self, snapshot_id: str) -> bool:
        answer = call(self.ec2.describe_snapshots, snapshot_id, SnapshotIds=[snapshot_id])
        return bool(answer["Snapshots"][0].get("Encrypted")) if answer["Snapshots"] else False

    def plan(self, base: Image, *, size_bytes: int | None, bake_id: str) -> dict[str, Any]:
        ec2_base = self._base(base)
        volume = self._volume_request(ec2_base, bake_id, size_bytes)
        root = self.root_volume(ec2_base)
        publishing = Publishing.from_settings(self.ec2_settings, datetime.now(UTC))
        copy_plan = CopyPlan.from_settings(self.ec2_settings, self.clients.region)
        encrypted = root.encrypted or self._encrypted(ec2_base.root_snapshot_id)
        tags = {BAKE_ID_TAG: bake_id, BASE_IMAGE_TAG: ec2_base.image_id}
        register = register_image_request(
            ec2_base,
            snapshot_id=ec2_base.root_snapshot_id,
            name=f"aminator-ng-dry-run-{bake_id}",
            description="dry run",
            tags=tags,
            volume_size_gib=volume.get("Size"),
            root_performance=root.performance(),
            uefi_data=None,
            overrides=self.overrides,
        )
        asked = [
            AskedCall("CreateVolume", self.clients.region, self.ec2.create_volume, volume),
            AskedCall("RegisterImage", self.clients.region, self.ec2.register_image, register),
        ]
        asked += [
            AskedCall(
                "CopyImage",
                region,
                self._client_in(region).copy_image,
                {
                    "SourceRegion": self.clients.region,
                    "SourceImageId": ec2_base.image_id,
                    "Name": f"aminator-ng-dry-run-{bake_id}",
                    "TagSpecifications": [{"ResourceType": "image", "Tags": _tags(tags)}],
                    **copy_plan.encryption(region, encrypted=encrypted),
                },
            )
            for region in copy_plan.regions
        ]
        return {
            "region": self.clients.region,
            "availability_zone": volume["AvailabilityZone"],
            "volume": {
                "size_gib": volume.get("Size"),
                "type": volume["VolumeType"],
                "iops": volume.get("Iops"),
                "throughput": volume.get("Throughput"),
                "encrypted": encrypted,
                "kms_key_id": volume.get("KmsKeyId"),
            },
            "copies": {
                region: copy_plan.encryption(region, encrypted=encrypted)
                for region in copy_plan.regions
            },
            "launch_permissions": publishing.launch_permissions(),
            "deprecate_at": (
                publishing.deprecate_at.isoformat().replace("+00:00", "Z")
                if publishing.deprecate_at
                else None
            ),
            "protect": publishing.protect,
            "protect_cooldown": publishing.protect_cooldown,
            "permissions_checked": check_permissions(asked),
        }

    def _wait_until_available(self, image_id: str) -> None:
        wait_until_available(
            self.ec2,
            image_id,
            timeout_s=self.image_timeout_s,
            hint="raise image_timeout in [plugins.ec2]",
        )

    def image_manifest(self, image_id: str) -> list[ManifestEntry]:
        return self.manifests.read(self.clients.region, image_id)

    def image_sbom(self, image_id: str) -> bytes | None:
        return self.sboms.read(self.clients.region, image_id)

    def sbom_location(self, image_id: str) -> str | None:
        return self.sboms.location(self.clients.region, image_id)

    def _deregister_images_of(self, bake_id: str) -> None:
        with contextlib.suppress(*AWS_ERRORS):
            answer = self.ec2.describe_images(
                Owners=["self"], Filters=[{"Name": f"tag:{BAKE_ID_TAG}", "Values": [bake_id]}]
            )
            for image in answer.get("Images", ()):
                self.ec2.deregister_image(ImageId=image["ImageId"])
                log.info("deregistered %s, half-registered", image["ImageId"])

    # Removing images.

    def removal_refused(self, image: Image) -> str | None:
        source = image.tags.get(SOURCE_IMAGE_TAG)
        if source:  # a copy another region's bake host made: it goes with its AMI
            return f"a copy of {source}, which is pruned with it where it was baked"
        refusal = self._refusal(self._described(image.image_id), self._copies_of(image))
        return refusal.message if refusal else None

    def remove_image(self, image_id: str) -> int:
        """Deregister an AMI this engine made, and its copies in other regions, and delete the
        snapshots only they use. EBS bills snapshots by their changed blocks, which no call
        reports: the bytes freed are given as 0."""
        described = self._described(image_id)
        copies = self._copies_of(self._image(described, self.clients.region))
        refusal = self._refusal(described, copies)
        if refusal is not None:
            raise refusal
        for region, copy in copies.items():
            self._deregister_with_snapshots(self._client_in(region), copy, region)
        self._deregister_with_snapshots(self.ec2, described, self.clients.region)
        self.sboms.forget(self.clients.region, image_id)
        self.manifests.forget(self.clients.region, image_id)
        return 0

    def _copies_of(self, image: Image) -> dict[str, Mapping[str, Any]]:
        """The AMI's copies in the regions it was copied to, as DescribeImages shows them."""
        found: dict[str, Mapping[str, Any]] = {}
        for region in image.tags.get(COPY_REGIONS_TAG, "").split():
            answer = call(
                self._client_in(region).describe_images,
                f"copies of {image.image_id} in {region}",
                Owners=["self"],
                Filters=[{"Name": f"tag:{SOURCE_IMAGE_TAG}", "Values": [image.image_id]}],
            )
            for copy in answer.get("Images", ()):
                found[region] = copy
        return found

    def _refusal(
        self, image: Mapping[str, Any], copies: Mapping[str, Mapping[str, Any]]
    ) -> RequestError | None:
        """Why the AMI and its copies must stay: not made by aminator-ng, protected, in use."""
        image_id = str(image["ImageId"])
        if BAKE_ID_TAG not in _tag_dict(image):
            return RequestError(
                f"image {image_id} was not made by aminator-ng; it is left alone",
                hint="aminate removes only the AMIs it baked (tagged aminator-ng:bake-id)",
            )
        every = [(self.clients.region, image), *copies.items()]
        for region, described in every:
            protection = str(described.get("DeregistrationProtection", "disabled"))
            if protection != "disabled":
                which = str(described["ImageId"])
                return RequestError(
                    f"image {which} in {region} is protected from deregistration ({protection})",
                    hint=f"lift it first: aws ec2 disable-image-deregistration-protection "
                    f"--image-id {which} --region {region}",
                )
        for region, described in every:
            users = self._instances_using(self._client_in(region), str(described["ImageId"]))
            if users:
                return ConflictError(
                    f"image {described['ImageId']} in {region} is used by {', '.join(users)}",
                    hint="terminate those instances first, or keep the image",
                )
        return None

    def _deregister_with_snapshots(self, ec2: Any, image: Mapping[str, Any], region: str) -> None:
        image_id = str(image["ImageId"])
        own = self._snapshots_only_of(ec2, image)
        call(ec2.deregister_image, image_id, ImageId=image_id)
        log.info("deregistered %s in %s", image_id, region)
        for snapshot_id in own:
            self._release_snapshot(snapshot_id, ec2)

    @staticmethod
    def _instances_using(ec2: Any, image_id: str) -> list[str]:
        """The instances, running or stopped, launched from the image: ``i-... (running)``."""
        answer = call(
            ec2.describe_instances,
            f"launched from {image_id}",
            Filters=[
                {"Name": "image-id", "Values": [image_id]},
                {"Name": "instance-state-name", "Values": list(INSTANCE_STATES_USING)},
            ],
        )
        return [
            f"{instance['InstanceId']} ({instance['State']['Name']})"
            for reservation in answer.get("Reservations", ())
            for instance in reservation.get("Instances", ())
        ]

    @staticmethod
    def _snapshots_only_of(ec2: Any, image: Mapping[str, Any]) -> list[str]:
        """The image's snapshots that a bake made and no other of this account's AMIs uses."""
        # Every AMI of the account, scanned here: not every endpoint filters DescribeImages by
        # block-device-mapping.snapshot-id.
        images = call(ec2.describe_images, "of this account", Owners=["self"])["Images"]
        used_elsewhere = {
            snapshot_id
            for other in images
            if other["ImageId"] != image["ImageId"]
            for snapshot_id in snapshot_ids(other)
        }
        own = []
        for snapshot_id in (s for s in snapshot_ids(image) if s not in used_elsewhere):
            snapshots = call(ec2.describe_snapshots, snapshot_id, SnapshotIds=[snapshot_id]).get(
                "Snapshots", []
            )
            if snapshots and BAKE_ID_TAG in _tag_dict(snapshots[0]):  # not the base's
                own.append(snapshot_id)
        return own

    # What bakes that no longer run left.

    def _bake_filter(self, bake_id: str) -> list[dict[str, Any]]:
        return [{"Name": f"tag:{BAKE_ID_TAG}", "Values": [bake_id]}]

    def leftovers(self, bake_id: str) -> list[Leftover]:
        found: list[Leftover] = []
        volumes = call(
            self.ec2.describe_volumes, f"of bake {bake_id}", Filters=self._bake_filter(bake_id)
        )["Volumes"]
        for volume in volumes:
            attached = [
                f"attached to {a['InstanceId']} at {a['Device']}"
                for a in volume.get("Attachments", ())
                if a.get("State") in ("attaching", "attached", "busy")
            ]
            found.append(
                Leftover("volume", str(volume["VolumeId"]), "; ".join(attached) or volume["State"])
            )
        snapshots = call(
            self.ec2.describe_snapshots,
            f"of bake {bake_id}",
            OwnerIds=["self"],
            Filters=self._bake_filter(bake_id),
        )["Snapshots"]
        in_use = self._snapshots_of_images_of(bake_id)
        found += [
            Leftover("snapshot", str(snapshot["SnapshotId"]), snapshot.get("State", ""))
            for snapshot in snapshots
            if snapshot["SnapshotId"] not in in_use
        ]
        return found + self._copy_leftovers(bake_id)

    def _copy_leftovers(self, bake_id: str) -> list[Leftover]:
        """In the regions the bake's AMI was being copied to: copies that never became
        available, and snapshots no copy uses. A copy that is available is an image, kept."""
        answer = call(
            self.ec2.describe_images,
            f"of bake {bake_id}",
            Owners=["self"],
            Filters=self._bake_filter(bake_id),
        )
        regions = {
            region
            for image in answer.get("Images", ())
            for region in _tag_dict(image).get(COPY_REGIONS_TAG, "").split()
        }
        found: list[Leftover] = []
        for region in sorted(regions):
            ec2 = self._client_in(region)
            images = call(
                ec2.describe_images,
                f"of bake {bake_id} in {region}",
                Owners=["self"],
                Filters=self._bake_filter(bake_id),
            ).get("Images", [])
            found += [
                Leftover(COPY, f"{region}/{image['ImageId']}", str(image.get("State", "")))
                for image in images
                if image.get("State") != "available"
            ]
            used = {
                s
                for image in images
                if image.get("State") == "available"
                for s in snapshot_ids(image)
            }
            snapshots = call(
                ec2.describe_snapshots,
                f"of bake {bake_id} in {region}",
                OwnerIds=["self"],
                Filters=self._bake_filter(bake_id),
            ).get("Snapshots", [])
            found += [
                Leftover(COPY_SNAPSHOT, f"{region}/{snapshot['SnapshotId']}", region)
                for snapshot in snapshots
                if snapshot["SnapshotId"] not in used
            ]
        return found

    def _snapshots_of_images_of(self, bake_id: str) -> set[str]:
        """The snapshots the bake's registered images use: a complete image keeps its own."""
        answer = call(
            self.ec2.describe_images,
            f"of bake {bake_id}",
            Owners=["self"],
            Filters=self._bake_filter(bake_id),
        )
        return {
            snapshot_id for image in answer.get("Images", ()) for snapshot_id in snapshot_ids(image)
        }

    def release_leftover(self, leftover: Leftover) -> None:
        if leftover.kind == "volume":
            self._release_volume(leftover.resource_id)
        elif leftover.kind == "snapshot":
            self._release_snapshot(leftover.resource_id)
        elif leftover.kind in (COPY, COPY_SNAPSHOT):
            region, _, resource_id = leftover.resource_id.partition("/")
            ec2 = self._client_in(region)
            if leftover.kind == COPY_SNAPSHOT:
                self._release_snapshot(resource_id, ec2)
            else:
                self._release_copy(ec2, resource_id)
        else:
            super().release_leftover(leftover)

    def _release_copy(self, ec2: Any, image_id: str) -> None:
        try:
            answer = call(ec2.describe_images, image_id, ImageIds=[image_id])
        except CloudError as error:
            if "InvalidAMIID" not in error.message:
                raise
            return  # gone already
        for image in answer.get("Images", ()):
            deregister_copy(ec2, image)

    def _release_volume(self, volume_id: str) -> None:
        try:
            self.delete_volume(Volume(volume_id, "", 0))
        except CloudError as error:
            if "InvalidVolume.NotFound" not in error.message:
                raise

    def _release_snapshot(self, snapshot_id: str, ec2: Any = None) -> None:
        try:
            call((ec2 or self.ec2).delete_snapshot, snapshot_id, SnapshotId=snapshot_id)
        except CloudError as error:
            if "InvalidSnapshot.NotFound" in error.message:
                return
            if "InvalidSnapshot.InUse" in error.message:  # an image uses it after all: it stays
                log.info("snapshot %s is in use by an image: kept", snapshot_id)
                return
            raise
        log.info("deleted snapshot %s", snapshot_id)

    # Housekeeping.

    def _image(self, image: Mapping[str, Any], region: str) -> Image:
        tags = _tag_dict(image)
        base = BaseImage.from_description(image) if image.get("RootDeviceName") else None
        size = base.root_volume_size_gib if base else None
        return Image(
            image_id=str(image["ImageId"]),
            name=str(image.get("Name", "")),
            created=_created(image),
            snapshot_id=(base.root_snapshot_id if base else "") or "",
            description=str(image.get("Description", "")),
            tags=tags,
            cloud=self.name,
            region=region,
            size_bytes=size * GIB if size else None,
            base_image_id=tags.get(BASE_IMAGE_TAG),
            state=str(image.get("State", "available")),
        )

    def list_images(self) -> list[Image]:
        clients = self.clients
        answer = call(
            clients.ec2.describe_images,
            "made by aminator-ng",
            Owners=["self"],
            Filters=[{"Name": "tag-key", "Values": [BAKE_ID_TAG]}],
        )
        images = [self._image(image, clients.region) for image in answer.get("Images", ())]
        return sorted(images, key=lambda image: image.created)

    def _described(self, image_id: str) -> Mapping[str, Any]:
        """An image as DescribeImages shows it; NotFoundError for an unknown id."""
        try:
            answer = self.ec2.describe_images(ImageIds=[image_id])
        except AWS_ERRORS as error:
            if error_code(error).startswith("InvalidAMIID"):
                raise NotFoundError(f"image not found: {image_id}") from error
            raise aws_error(error, "DescribeImages", image_id) from error
        if not answer.get("Images"):
            raise NotFoundError(f"image not found: {image_id}")
        return dict(answer["Images"][0])

    def get_image(self, image_id: str) -> Image:
        return self._image(self._described(image_id), self.clients.region)

    def release_command(self, kind: str, resource_id: str) -> str:
        if kind in (COPY, COPY_SNAPSHOT):
            where, _, resource_id = resource_id.partition("/")
        else:
            where = self.clients.region
        region = f" --region {shlex.quote(where)}"
        quoted = shlex.quote(resource_id)
        if kind == "volume":
            return f"aws ec2 delete-volume --volume-id {quoted}{region}"
        if kind in ("snapshot", COPY_SNAPSHOT):
            return f"aws ec2 delete-snapshot --snapshot-id {quoted}{region}"
        return f"aws ec2 deregister-image --image-id {quoted}{region}"
