"""Copies of a new AMI in other regions: the settings checked before anything is made, the
CopyImage requests as sent (moto's CopyImage ignores encryption and tags: tests/ec2moto.py keeps
what was asked), each copy published as the AMI is, and a failed region released while the AMI
and the other copies are kept and named."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from moto.ec2.models import ec2_backends

from aminator_ec2 import waiting
from aminator_ec2.backend import Ec2Cloud
from aminator_ec2.copies import CopyPlan
from aminator_ec2.plugin import Ec2Settings
from aminator_ng.api import Image, ImageKeptError, RequestError
from tests.ec2moto import REGION, MotoEc2, bake_with_backend, made_by_bakes

WEST, EUROPE = "us-west-2", "eu-west-1"
ACCOUNT = "111122223333"


@pytest.mark.parametrize(
    ("given", "words"),
    [
        ({"copy_to": ("us_west_2",)}, "is not a region name"),
        ({"copy_to": (REGION,)}, "the AMI is made in us-east-1 already"),
        ({"copy_to": (WEST,), "region_kms_key": {EUROPE: "alias/x"}}, "nothing is copied"),
    ],
)
def test_copies_that_cannot_be_made_are_refused(given: dict[str, Any], words: str) -> None:
    with pytest.raises(RequestError, match=words):
        CopyPlan.from_settings(Ec2Settings(**given), REGION)


def test_a_copy_is_as_encrypted_as_its_source_or_with_its_regions_key() -> None:
    plan = CopyPlan.from_settings(
        Ec2Settings(copy_to=(WEST, EUROPE, WEST), region_kms_key={WEST: "alias/west"}), REGION
    )
    assert plan.regions == (WEST, EUROPE)
    assert plan.encryption(WEST, encrypted=False) == {"Encrypted": True, "KmsKeyId": "alias/west"}
    assert plan.encryption(EUROPE, encrypted=True) == {"Encrypted": True}
    assert plan.encryption(EUROPE, encrypted=False) == {}


def baked_with_a_copy_in_the_west(moto: MotoEc2, tmp_path: Path) -> tuple[Ec2Cloud, Image]:
    """A backend that copies to us-west-2, and the AMI of a bake with it."""
    base_ami = moto.base_image("debian-12-base", None)
    cloud = moto.backend(tmp_path / "lock", copy_to=(WEST,))
    return cloud, bake_with_backend(cloud, base_ami, "bake-0001")


def test_the_ami_is_copied_with_its_name_tags_and_publishing_and_reported(
    moto: MotoEc2, tmp_path: Path
) -> None:
    base_ami = moto.base_image("debian-12-base", None)
    cloud = moto.backend(
        tmp_path / "lock",
        copy_to=(WEST, EUROPE),
        region_kms_key={WEST: "alias/west"},
        share_with=(ACCOUNT,),
        deprecate_in="30d",
        protect=True,
    )
    image = bake_with_backend(cloud, base_ami, "bake-0001")
    assert set(image.copies) == {WEST, EUROPE}
    assert image.everywhere == {REGION: image.image_id, **image.copies}
    sent = [call for call in moto.engine_calls() if call.action == "CopyImage"]
    assert [call.region for call in sent] == [WEST, EUROPE]
    for call in sent:
        params = call.params
        assert params["SourceRegion"] == REGION and params["SourceImageId"] == image.image_id
        assert params["Name"] == image.name and params["Description"] == image.description
        assert params["ClientToken"] == f"aminator-ng-bake-0001-copy-{call.region}"
        image_tags = {t["Key"]: t["Value"] for t in params["TagSpecifications"][0]["Tags"]}
        assert image_tags["aminator-ng:bake-id"] == "bake-0001"
        assert image_tags["appversion"] == "hello-1.0-1"
        assert image_tags["aminator-ng:source-image-id"] == image.image_id
        assert params["TagSpecifications"][1]["ResourceType"] == "snapshot"
    assert (
        sent[0].params["Encrypted"] in (True, "true") and sent[0].params["KmsKeyId"] == "alias/west"
    )
    assert "Encrypted" not in sent[1].params  # an unencrypted AMI, no key for that region
    # Each copy is shared, deprecated and protected as the AMI is, in its own region.
    for action in ("ModifyImageAttribute", "EnableImageDeprecation"):
        assert {c.params["ImageId"] for c in moto.engine_calls() if c.action == action} == {
            image.image_id,
            *image.copies.values(),
        }
    protected = [
        c for c in moto.engine_calls() if c.action == "EnableImageDeregistrationProtection"
    ]
    assert [(c.region, c.params["ImageId"]) for c in protected] == [
        (REGION, image.image_id),
        (WEST, image.copies[WEST]),
        (EUROPE, image.copies[EUROPE]),
    ]
    west = moto.client("ec2", region=WEST)
    copy = west.describe_images(ImageIds=[image.copies[WEST]])["Images"][0]
    snapshot_id = copy["BlockDeviceMappings"][0]["Ebs"]["SnapshotId"]
    shared = west.describe_snapshot_attribute(
        SnapshotId=snapshot_id, Attribute="createVolumePermission"
    )["CreateVolumePermissions"]
    assert shared == [{"UserId": ACCOUNT}]


def test_a_failed_copy_releases_its_region_and_keeps_the_ami_and_the_other_copies(
    moto: MotoEc2, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base_ami = moto.base_image("debian-12-base", None)
    cloud = moto.backend(tmp_path / "lock", copy_to=(WEST, EUROPE))
    real_state = waiting.image_state

    def europe_fails(ec2: Any, image_id: str) -> tuple[str, str]:
        if ec2.meta.region_name == EUROPE:
            return "failed", "Client.InternalError"
        return real_state(ec2, image_id)

    monkeypatch.setattr(waiting, "image_state", europe_fails)
    with pytest.raises(
        ImageKeptError, match=rf"failed in {EUROPE}: image ami-\w+ in {EUROPE}"
    ) as failed:
        bake_with_backend(cloud, base_ami, "bake-0001")
    kept = failed.value.images
    assert set(kept) == {REGION, WEST}
    assert made_by_bakes(moto.client("ec2", region=EUROPE)) == {
        "volumes": [],
        "snapshots": [],
        "images": [],
    }
    assert made_by_bakes(moto.client("ec2", region=WEST))["images"] == [kept[WEST]]
    home = made_by_bakes(moto.ec2)
    assert home["images"] == [kept[REGION]] and len(home["snapshots"]) == 1
    assert failed.value.exit_code == 1


def test_images_rm_removes_the_ami_with_its_copies_and_refuses_a_protected_copy(
    moto: MotoEc2, tmp_path: Path
) -> None:
    cloud, image = baked_with_a_copy_in_the_west(moto, tmp_path)
    west = moto.client("ec2", region=WEST)
    west.enable_image_deregistration_protection(ImageId=image.copies[WEST])
    with pytest.raises(RequestError, match=f"{image.copies[WEST]} in {WEST} is protected"):
        cloud.remove_image(image.image_id)
    assert cloud.removal_refused(image) is not None
    west.disable_image_deregistration_protection(ImageId=image.copies[WEST])
    assert cloud.removal_refused(image) is None
    cloud.remove_image(image.image_id)
    for ec2 in (moto.ec2, west):
        assert made_by_bakes(ec2) == {"volumes": [], "snapshots": [], "images": []}


def test_a_dead_bakes_unfinished_copy_is_a_leftover_that_cleanup_releases(
    moto: MotoEc2, tmp_path: Path
) -> None:
    cloud, image = baked_with_a_copy_in_the_west(moto, tmp_path)
    west = moto.client("ec2", region=WEST)
    # As if the bake died while the copy was pending: the copy is not available yet.
    ec2_backends["123456789012"][WEST].amis[image.copies[WEST]].state = "pending"
    leftovers = cloud.leftovers("bake-0001")
    copy_snapshot = moto.client("ec2", region=WEST).describe_images(ImageIds=[image.copies[WEST]])[
        "Images"
    ][0]["BlockDeviceMappings"][0]["Ebs"]["SnapshotId"]
    # In the order cleanup releases them: the copy, then the snapshot it no longer uses.
    assert [(leftover.kind, leftover.resource_id) for leftover in leftovers] == [
        ("image copy", f"{WEST}/{image.copies[WEST]}"),
        ("snapshot copy", f"{WEST}/{copy_snapshot}"),
    ]
    assert "--region us-west-2" in cloud.release_command("image copy", leftovers[0].resource_id)
    for leftover in leftovers:
        cloud.release_leftover(leftover)
    assert made_by_bakes(west) == {"volumes": [], "snapshots": [], "images": []}
    assert made_by_bakes(moto.ec2)["images"] == [image.image_id]
    assert cloud.leftovers("bake-0001") == []


def test_retention_in_a_copys_region_leaves_the_copy_to_its_ami(
    moto: MotoEc2, tmp_path: Path
) -> None:
    _, image = baked_with_a_copy_in_the_west(moto, tmp_path)
    west = moto.client("ec2", region=WEST)
    copy = west.describe_images(ImageIds=[image.copies[WEST]])["Images"][0]
    tags = {t["Key"]: t["Value"] for t in copy["Tags"]}
    as_listed = Image(copy["ImageId"], copy["Name"], image.created, "", tags=tags)
    refusal = moto.backend(tmp_path / "lock").removal_refused(as_listed)
    assert refusal == f"a copy of {image.image_id}, which is pruned with it where it was baked"
