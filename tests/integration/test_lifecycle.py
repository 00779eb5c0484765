"""The lifecycle of baked images on real disks: a dry run that makes nothing, retention that
removes a family's older images (and their copies, on ec2) and skips what it must keep, and,
on ec2 (moto), the whole publishing of one bake: encrypted, grown, shared, copied to another
region, deprecated and protected."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from tests.ec2moto import REGION, MotoEc2, made_by_bakes
from tests.integration.conftest import Workspace, mounted_image
from tests.integration.debs import build_deb

pytestmark = pytest.mark.privileged

GIB = 1 << 30
WEST = "us-west-2"
ACCOUNT = "111122223333"


# The local backend.


def test_a_local_dry_run_checks_the_request_prints_the_plan_and_makes_nothing(
    workspace: Workspace, debs: dict[str, Path], base_raw: Path
) -> None:
    size_gib = -(-base_raw.stat().st_size // GIB) + 1
    before = workspace.images()
    result = workspace.aminate(
        "-b", workspace.base_name, "--dry-run", "--output", "json", "--keep", "1",
        "--root-volume-size", str(size_gib), "--tag", "team=web", str(debs["hello"]),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    plan = result.json()
    assert plan["dry_run"] is True and plan["cloud"] == "local"
    assert plan["base"]["name"] == workspace.base_name
    assert plan["root_volume_size_bytes"] == size_gib * GIB
    assert plan["name"].startswith("hello-1.0-1-all-") and plan["name_is_final"] is True
    assert plan["tags"] == {"family": f"hello/{workspace.base_name}", "team": "web"}
    assert plan["would_prune"] == []
    assert workspace.images() == before
    workspace.assert_nothing_left()
    # A wrong request is refused as the bake would refuse it.
    smaller = workspace.aminate(
        "-b", workspace.base_name, "--dry-run", "--root-volume-size", "1", str(debs["hello"])
    )
    if base_raw.stat().st_size > GIB:
        assert smaller.returncode == 2 and "is smaller than the base image" in smaller.stderr
    missing = workspace.aminate("-b", "no-such-base", "--dry-run", str(debs["hello"]))
    assert missing.returncode == 2 and "no-such-base" in missing.stderr


def test_keep_prunes_a_local_family_after_the_bake_and_prune_says_what_it_kept(
    workspace: Workspace, debs: dict[str, Path], tmp_path: Path
) -> None:
    world = build_deb(tmp_path, "world")
    earlier = []
    for _ in range(2):
        baked = workspace.aminate("-b", workspace.base_name, "--output", "json", str(debs["hello"]))
        assert baked.returncode == 0, baked.stderr
        earlier.append(baked.json()["image_id"])
    other = workspace.aminate("-b", workspace.base_name, "--output", "json", str(world))
    assert other.returncode == 0, other.stderr
    plan = workspace.aminate(
        "-b", workspace.base_name, "--dry-run", "--output", "json", "--keep", "2",
        str(debs["hello"]),
    )  # fmt: skip
    assert [(d["image_id"], d["action"]) for d in plan.json()["would_prune"]] == [
        (earlier[0], "remove")
    ]
    newest = workspace.aminate(
        "-b", workspace.base_name, "--output", "json", "--keep", "1", str(debs["hello"])
    )
    assert newest.returncode == 0, newest.stderr
    result = newest.json()
    assert sorted((d["image_id"], d["action"]) for d in result["pruned"]) == sorted(
        (image_id, "removed") for image_id in earlier
    )
    assert "prune" in [step["name"] for step in result["steps"]]
    remaining = {image["image_id"] for image in workspace.baked_images()}
    assert remaining == {result["image_id"], other.json()["image_id"]}
    workspace.assert_nothing_left()  # the pruned images' snapshot files went with them
    # Every family keeps its newest; the base image is in none.
    again = workspace.aminate("images", "prune", "--keep", "1", "--dry-run", "--output", "json")
    assert again.returncode == 0, again.stderr
    assert {d["action"] for d in again.json()["images"]} == {"kept"}
    assert {d["family"] for d in again.json()["images"]} == {
        f"hello/{workspace.base_name}",
        f"world/{workspace.base_name}",
    }


# EC2, on moto.


def earlier_ami(moto: MotoEc2, name: str, family: str, base_ami: str) -> dict[str, str]:
    """An AMI an earlier bake of ``family`` made, with its copy in us-west-2: id by region."""
    bake_id = f"earlier-{name}"
    tags = {
        "aminator-ng:bake-id": bake_id,
        "aminator-ng:base-image-id": base_ami,
        "aminator-ng:copy-regions": WEST,
        "family": family,
    }
    snapshot = moto.bake_snapshot(bake_id)
    image_id = moto.ec2.register_image(
        Name=name,
        Architecture="x86_64",
        RootDeviceName="/dev/xvda",
        VirtualizationType="hvm",
        BlockDeviceMappings=[{"DeviceName": "/dev/xvda", "Ebs": {"SnapshotId": snapshot}}],
        TagSpecifications=[{"ResourceType": "image", "Tags": tag_list(tags)}],
    )["ImageId"]
    copy_id = moto.client("ec2", region=WEST).copy_image(
        SourceRegion=REGION,
        SourceImageId=image_id,
        Name=name,
        TagSpecifications=[
            {
                "ResourceType": "image",
                "Tags": tag_list({**tags, "aminator-ng:source-image-id": image_id}),
            },
            {"ResourceType": "snapshot", "Tags": tag_list({"aminator-ng:bake-id": bake_id})},
        ],
    )["ImageId"]
    return {REGION: image_id, WEST: copy_id}


def tag_list(tags: dict[str, str]) -> list[dict[str, str]]:
    return [{"Key": key, "Value": value} for key, value in tags.items()]


def sent(moto: MotoEc2, action: str) -> list[Any]:
    """The engine's calls of ``action`` that were carried out (not DryRun)."""
    return [c for c in moto.engine_calls() if c.action == action and not c.params.get("DryRun")]


def test_one_ec2_bake_is_encrypted_grown_shared_copied_deprecated_protected_and_prunes(
    moto: MotoEc2, tmp_path: Path, base_raw: Path, debs: dict[str, Path]
) -> None:
    space = Workspace(tmp_path / "workspace")
    env = moto.environment(space.scratch)
    base_gib = -(-base_raw.stat().st_size // GIB)
    assert base_gib < 8, "the base must be smaller than the 8 GiB it is grown to"
    base = moto.base_image("debian-12-small", base_raw, size_gib=base_gib)
    moto.udev.sized_volumes = True
    family = "hello/debian-12-small"
    unprotected = earlier_ami(moto, "hello-0.9-1", family, base)
    protected = earlier_ami(moto, "hello-0.8-1", family, base)
    west = moto.client("ec2", region=WEST)
    moto.ec2.enable_image_deregistration_protection(ImageId=protected[REGION])
    west.enable_image_deregistration_protection(ImageId=protected[WEST])
    earlier_snapshots = {
        region: made_by_bakes(moto.client("ec2", region=region))["snapshots"]
        for region in (REGION, WEST)
    }
    flags = [
        "-b", base, "--output", "json", "--encrypt", "--kms-key-id", "alias/x",
        "--root-volume-size", "8", "--volume-type", "gp3", "--share-with", ACCOUNT,
        "--copy-to", WEST, "--deprecate-in", "30d", "--protect", "--keep", "1",
    ]  # fmt: skip

    # The dry run: the plan, and nothing made.
    before = {region: made_by_bakes(moto.client("ec2", region=region)) for region in (REGION, WEST)}
    planned = space.aminate(*flags, "--dry-run", str(debs["hello"]), env=env)
    assert planned.returncode == 0, planned.stderr
    plan = planned.json()
    assert plan["ec2"]["volume"]["size_gib"] == 8 and plan["ec2"]["volume"]["encrypted"]
    assert plan["ec2"]["copies"] == {WEST: {"Encrypted": True}}
    assert [(d["image_id"], d["action"]) for d in plan["would_prune"]] == [
        (unprotected[REGION], "remove"),
        (protected[REGION], "skipped"),
    ]
    assert sent(moto, "CreateVolume") == [] and sent(moto, "CopyImage") == []
    assert {r: made_by_bakes(moto.client("ec2", region=r)) for r in (REGION, WEST)} == before

    # The bake.
    result = space.aminate(*flags, str(debs["hello"]), env=env)
    assert result.returncode == 0, result.stderr
    baked = result.json()
    image_id, copy_id = baked["image_id"], baked["images"][WEST]
    assert baked["images"] == {REGION: image_id, WEST: copy_id} and baked["state"] == "available"
    [create] = sent(moto, "CreateVolume")
    assert {k: create.params[k] for k in ("Encrypted", "KmsKeyId", "Size", "VolumeType")} == {
        "Encrypted": True,
        "KmsKeyId": "alias/x",
        "Size": 8,
        "VolumeType": "gp3",
    }
    [register] = sent(moto, "RegisterImage")
    snapshot_id = register.params["BlockDeviceMappings"][0]["Ebs"]["SnapshotId"]
    data = moto.udev.data[snapshot_id]
    assert data.stat().st_size == 8 * GIB
    with mounted_image(data, space.scratch / "grown") as mounted:
        usage = os.statvfs(mounted)
        assert usage.f_blocks * usage.f_frsize > 7.75 * GIB
    # Launch and snapshot permissions, on the AMI and on its copy.
    assert {c.params["ImageId"] for c in sent(moto, "ModifyImageAttribute")} == {image_id, copy_id}
    copy = west.describe_images(ImageIds=[copy_id])["Images"][0]
    copy_snapshot = copy["BlockDeviceMappings"][0]["Ebs"]["SnapshotId"]
    assert {c.params["SnapshotId"] for c in sent(moto, "ModifySnapshotAttribute")} == {
        snapshot_id,
        copy_snapshot,
    }
    [copied] = sent(moto, "CopyImage")
    assert copied.region == WEST and copied.params["Encrypted"] is True
    copy_tags = {t["Key"]: t["Value"] for t in copied.params["TagSpecifications"][0]["Tags"]}
    assert copy_tags["family"] == family and copy_tags["appversion"] == "hello-1.0-1"
    for action in ("EnableImageDeprecation", "EnableImageDeregistrationProtection"):
        assert [c.params["ImageId"] for c in sent(moto, action)] == [image_id, copy_id]
    # Retention: the unprotected earlier AMI went in both regions with its snapshots; the
    # protected one was skipped, saying why.
    pruned = {d["image_id"]: d for d in baked["pruned"]}
    assert pruned[unprotected[REGION]]["action"] == "removed"
    assert pruned[protected[REGION]]["action"] == "skipped"
    assert "protected from deregistration" in pruned[protected[REGION]]["reason"]
    for region, ec2 in ((REGION, moto.ec2), (WEST, west)):
        left = made_by_bakes(ec2)
        assert unprotected[region] not in left["images"]
        assert protected[region] in left["images"]
        gone = set(earlier_snapshots[region]) - set(left["snapshots"])
        assert len(gone) == 1, f"{region}: one earlier AMI's snapshot is deleted"
    assert made_by_bakes(moto.ec2)["volumes"] == []
