"""Copies of a new AMI in other regions (``--copy-to``), for disaster recovery or to launch near
users: each with the AMI's name, description and tags, encrypted as asked, waited for, and then
shared, deprecated and protected as the AMI is.

A copy that fails releases what it made in its region: found by the bake id every copy and its
snapshots are tagged with at creation, so that also a copy whose CopyImage answer was lost goes.
The other regions' copies, and the AMI, are kept and named (``ImageKeptError``); an interruption
releases every copy.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

from aminator_ec2.aws import call
from aminator_ec2.images import snapshot_ids
from aminator_ec2.plugin import Ec2Settings
from aminator_ec2.publishing import Publishing
from aminator_ec2.waiting import wait_until_available
from aminator_ng.api import CloudError, ImageKeptError, RequestError

log = logging.getLogger(__name__)

REGION = re.compile(r"[a-z]{2}(-[a-z]+)+-\d+")
#: The tag, on the AMI and its copies, that lists the regions it is copied to.
COPY_REGIONS_TAG = "aminator-ng:copy-regions"
#: The tag on a copy that names the AMI it is a copy of.
SOURCE_IMAGE_TAG = "aminator-ng:source-image-id"


@dataclass(frozen=True)
class CopyPlan:
    """The regions the settings copy the new AMI to, and the KMS key of each where given."""

    regions: tuple[str, ...] = ()
    keys: Mapping[str, str] | None = None

    @classmethod
    def from_settings(cls, own: Ec2Settings, home_region: str | None = None) -> CopyPlan:
        """Checked: region names, no region twice or the AMI's own, keys only for copies."""
        regions: list[str] = []
        for region in own.copy_to:
            if not REGION.fullmatch(region):
                raise RequestError(
                    f"--copy-to {region!r} is not a region name", hint="write it as us-west-2"
                )
            if region == home_region:
                raise RequestError(
                    f"--copy-to {region}: the AMI is made in {region} already",
                    hint="name only other regions",
                )
            if region not in regions:
                regions.append(region)
        for region in own.region_kms_key:
            if region not in regions:
                raise RequestError(
                    f"--region-kms-key {region}=...: nothing is copied to {region}",
                    hint=f"add --copy-to {region}, or drop the key",
                )
        return cls(tuple(regions), dict(own.region_kms_key))

    def encryption(self, region: str, *, encrypted: bool) -> dict[str, Any]:
        """CopyImage's encryption parameters: the region's key where given, else encrypted
        with the region's default key when the AMI is (a copy can never be less encrypted)."""
        key = (self.keys or {}).get(region)
        if key:
            return {"Encrypted": True, "KmsKeyId": key}
        return {"Encrypted": True} if encrypted else {}


@dataclass(frozen=True)
class CopySource:
    """The AMI being copied, and what its copies carry."""

    region: str
    image_id: str
    name: str
    description: str
    #: The AMI's own tags: given to each copy and its snapshots at creation.
    tags: Mapping[str, str]
    encrypted: bool


class RegionCopies:
    """Makes, waits for, publishes and, on failure, releases the copies of one bake's AMI."""

    def __init__(
        self,
        plan: CopyPlan,
        *,
        client_in: Callable[[str], Any],
        bake_id: str,
        bake_id_tag: str,
        snapshot_tags: Mapping[str, str],
        publishing: Publishing,
        timeout_s: float,
    ) -> None:
        self.plan = plan
        self.client_in = client_in
        self.bake_id = bake_id
        self.bake_id_tag = bake_id_tag
        self.snapshot_tags = dict(snapshot_tags)
        self.publishing = publishing
        self.timeout_s = timeout_s

    def make(self, source: CopySource) -> dict[str, str]:
        """Copy into every region of the plan: region -> the copy's id.

        Every CopyImage is sent first, so that EC2 copies to the regions at once, then each
        copy is waited for and published. Raises ImageKeptError, after releasing the failed
        regions' copies, when any failed."""
        copies: dict[str, str] = {}
        failures: dict[str, str] = {}
        with ExitStack() as every_copy:
            started: dict[str, tuple[str, ExitStack]] = {}
            for region in self.plan.regions:
                this_region = every_copy.enter_context(ExitStack())
                this_region.callback(self.release_region, region)
                try:
                    started[region] = (self._start(source, region), this_region)
                except CloudError as error:
                    failures[region] = error.message
                    this_region.close()
            for region, (image_id, this_region) in started.items():
                try:
                    self._finish(region, image_id)
                except CloudError as error:
                    failures[region] = error.message
                    this_region.close()
                    continue
                copies[region] = image_id
            every_copy.pop_all()  # what was made whole stays, failed regions or not
        if failures:
            kept = {source.region: source.image_id, **copies}
            raise ImageKeptError(
                "copying "
                + source.image_id
                + " failed in "
                + "; ".join(f"{region}: {message}" for region, message in failures.items())
                + "; kept: "
                + ", ".join(f"{image_id} in {region}" for region, image_id in kept.items()),
                images=kept,
                hint="see the bake log; 'aminate images rm "
                + source.image_id
                + "' removes the AMI with its copies",
            )
        return copies

    def _start(self, source: CopySource, region: str) -> str:
        ec2 = self.client_in(region)
        tags = {**source.tags, SOURCE_IMAGE_TAG: source.image_id}
        snapshot_tags = {**self.snapshot_tags, SOURCE_IMAGE_TAG: source.image_id}
        answer = call(
            ec2.copy_image,
            f"{source.image_id} to {region}",
            SourceRegion=source.region,
            SourceImageId=source.image_id,
            Name=source.name,
            Description=source.description,
            # The same token on a retried request returns the same copy, never a second one.
            ClientToken=f"aminator-ng-{self.bake_id}-copy-{region}",
            TagSpecifications=[
                {"ResourceType": "image", "Tags": _tag_list(tags)},
                {"ResourceType": "snapshot", "Tags": _tag_list(snapshot_tags)},
            ],
            **self.plan.encryption(region, encrypted=source.encrypted),
        )
        image_id = str(answer["ImageId"])
        log.info("copying %s to %s as %s", source.image_id, region, image_id)
        return image_id

    def _finish(self, region: str, image_id: str) -> None:
        ec2 = self.client_in(region)
        wait_until_available(
            ec2,
            image_id,
            timeout_s=self.timeout_s,
            where=region,
            hint="raise copy_timeout in [plugins.ec2]",
        )
        described = call(ec2.describe_images, image_id, ImageIds=[image_id])["Images"]
        self.publishing.apply(ec2, image_id, snapshot_ids(described[0]) if described else [])

    def release_region(self, region: str) -> None:
        """Deregister the bake's copies in ``region`` and delete their snapshots: what a failed
        copy made, found by the bake id whether its CopyImage was answered or not."""
        ec2 = self.client_in(region)
        mine = [{"Name": f"tag:{self.bake_id_tag}", "Values": [self.bake_id]}]
        images = call(
            ec2.describe_images, f"copies in {region}", Owners=["self"], Filters=mine
        ).get("Images", [])
        for image in images:
            deregister_copy(ec2, image)
        snapshots = call(
            ec2.describe_snapshots, f"copies in {region}", OwnerIds=["self"], Filters=mine
        ).get("Snapshots", [])
        for snapshot in snapshots:
            snapshot_id = str(snapshot["SnapshotId"])
            call(ec2.delete_snapshot, snapshot_id, SnapshotId=snapshot_id)
            log.info("deleted the copy's snapshot %s in %s", snapshot_id, region)


def deregister_copy(ec2: Any, image: Mapping[str, Any]) -> None:
    """Deregister a copy as DescribeImages showed it, lifting its protection first."""
    image_id = str(image["ImageId"])
    if str(image.get("DeregistrationProtection", "disabled")) != "disabled":
        call(ec2.disable_image_deregistration_protection, image_id, ImageId=image_id)
    call(ec2.deregister_image, image_id, ImageId=image_id)
    log.info("deregistered the copy %s in %s", image_id, ec2.meta.region_name)


def _tag_list(tags: Mapping[str, str]) -> list[dict[str, str]]:
    return [{"Key": key, "Value": value} for key, value in sorted(tags.items())]
