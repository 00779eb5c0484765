"""The documented IAM policy (docs/ec2-iam-policy.json) against the calls a bake makes, judged by
tests/iampolicy.py: what a bake needs is allowed; tagging, detaching and deleting what a bake did
not make is not. Calls signed with PROBE_KEY ask the policy what it would refuse; moto itself
carries out everything, so the judgement is the evaluator's."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import botocore.exceptions
import pytest

from aminator_ec2.backend import Ec2Cloud
from aminator_ng.api import Image
from tests.ec2moto import (
    IAM_POLICY,
    PROBE_KEY,
    ZONE,
    Call,
    MotoEc2,
    bake_with_backend,
)
from tests.iampolicy import Evaluator, NotModelled, Policy, Statement, arn, condition_holds

BAKE_ID = "bake-0001"
BAKE_TAG = "aminator-ng:bake-id"
#: The create calls that tag what they create, and the type of what they create.
CREATED_TYPE = {"CreateVolume": "volume", "CreateSnapshot": "snapshot", "RegisterImage": "image"}
EXAMPLE_ARN = {
    "volume": arn("vol-0123456789abcdef0"),
    "snapshot": arn("snap-0123456789abcdef0"),
    "image": arn("ami-0123456789abcdef0"),
    "instance": arn("i-0123456789abcdef0"),
}


@pytest.fixture
def cloud(moto: MotoEc2, tmp_path: Path) -> Ec2Cloud:
    return moto.backend(tmp_path / "lock")


@pytest.fixture
def base_ami(moto: MotoEc2) -> str:
    return moto.base_image("debian-12-base", None)


@pytest.fixture
def baked(moto: MotoEc2, cloud: Ec2Cloud, base_ami: str) -> Image:
    return bake_with_backend(cloud, base_ami, BAKE_ID)


@pytest.fixture
def policy() -> Policy:
    return Policy.load(IAM_POLICY)


def ask(operation: Callable[..., Any], **params: Any) -> None:
    """Make a probe call; what moto answers does not matter, what the policy says does."""
    with contextlib.suppress(botocore.exceptions.ClientError):
        operation(**params)


def refusals(policy: Policy, moto: MotoEc2) -> list[tuple[str, bool]]:
    """Each probe call as ``(action, allowed)``, in the world the other calls made."""
    verdicts = Evaluator(policy).run(moto.calls, judged=lambda call: call.access_key == PROBE_KEY)
    return [(verdict.call.action, verdict.allowed) for verdict in verdicts]


def bake_tags(resource_type: str, instance_id: str, **changed: str | None) -> dict[str, Any]:
    """The TagSpecification the engine sends for a volume or a snapshot, with ``changed`` tags
    (``bake_id=None``: without the bake id)."""
    tags: dict[str, str | None] = {
        "bake-id": BAKE_ID,
        "instance-id": instance_id,
        "purpose": resource_type,
    }
    tags.update({key.replace("_", "-"): value for key, value in changed.items()})
    return {
        "ResourceType": resource_type,
        "Tags": [{"Key": f"aminator-ng:{k}", "Value": v} for k, v in tags.items() if v is not None],
    }


def bake_calls(moto: MotoEc2) -> list[Call]:
    return [call for call in moto.engine_calls() if call.service == "ec2"]


def test_every_call_of_a_bake_is_allowed(moto: MotoEc2, baked: Image, policy: Policy) -> None:
    calls = moto.engine_calls()
    evaluator = Evaluator(policy)
    verdicts = evaluator.run(calls, judged=lambda call: True)
    assert [verdict.reason for verdict in verdicts if not verdict.allowed] == []
    judged = {verdict.call.action for verdict in verdicts}
    assert {
        "CreateVolume",
        "AttachVolume",
        "DetachVolume",
        "CreateSnapshot",
        "DeleteVolume",
        "RegisterImage",
    } <= judged
    # Tagging at creation was asked of IAM, as EC2 asks it, for each create call.
    evaluator = Evaluator(policy)
    asked = [
        (a.action, a.context.get("ec2:createaction"))
        for c in calls
        for a in evaluator.authorizations(c)
    ]
    for action in CREATED_TYPE:
        assert ("ec2:CreateTags", (action,)) in asked


def test_a_tag_cannot_make_a_volume_a_bakes_to_delete_it(moto: MotoEc2, policy: Policy) -> None:
    others = moto.ec2.create_volume(AvailabilityZone=ZONE, Size=1)["VolumeId"]
    moto.ec2.attach_volume(VolumeId=others, InstanceId=moto.instance_id, Device="/dev/sdk")
    probe = moto.client("ec2", access_key=PROBE_KEY)
    ask(probe.create_tags, Resources=[others], Tags=[{"Key": BAKE_TAG, "Value": BAKE_ID}])
    ask(probe.create_tags, Resources=[others], Tags=[{"Key": "Name", "Value": "mine now"}])
    ask(probe.detach_volume, VolumeId=others, InstanceId=moto.instance_id, Device="/dev/sdk")
    ask(probe.delete_volume, VolumeId=others)
    assert refusals(policy, moto) == [
        ("CreateTags", False),
        ("CreateTags", False),
        ("DetachVolume", False),
        ("DeleteVolume", False),
    ]


def test_what_a_bake_did_not_make_cannot_be_attached_snapshotted_or_deleted(
    moto: MotoEc2, base_ami: str, policy: Policy
) -> None:
    others = moto.ec2.create_volume(AvailabilityZone=ZONE, Size=1)["VolumeId"]
    others_snapshot = moto.ec2.create_snapshot(VolumeId=others)["SnapshotId"]
    probe = moto.client("ec2", access_key=PROBE_KEY)
    point = {"VolumeId": others, "InstanceId": moto.instance_id, "Device": "/dev/sdk"}
    ask(probe.attach_volume, **point)
    ask(probe.detach_volume, **point)
    tags = bake_tags("snapshot", moto.instance_id)
    ask(probe.create_snapshot, VolumeId=others, TagSpecifications=[tags])
    ask(probe.delete_volume, VolumeId=others)
    ask(probe.delete_snapshot, SnapshotId=others_snapshot)
    ask(probe.deregister_image, ImageId=base_ami)
    assert refusals(policy, moto) == [
        ("AttachVolume", False),
        ("DetachVolume", False),
        ("CreateSnapshot", False),
        ("DeleteVolume", False),
        ("DeleteSnapshot", False),
        ("DeregisterImage", False),
    ]


def test_only_volumes_snapshots_and_images_tagged_as_a_bakes_can_be_made(
    moto: MotoEc2, base_ami: str, policy: Policy
) -> None:
    base_snapshot = moto.ec2.describe_images(ImageIds=[base_ami])["Images"][0][
        "BlockDeviceMappings"
    ][0]["Ebs"]["SnapshotId"]
    instance = moto.instance_id
    probe = moto.client("ec2", access_key=PROBE_KEY)

    def create_volume(*specs: dict[str, Any]) -> str:
        return str(
            probe.create_volume(
                AvailabilityZone=ZONE,
                SnapshotId=base_snapshot,
                **({"TagSpecifications": list(specs)} if specs else {}),
            )["VolumeId"]
        )

    create_volume()
    create_volume(bake_tags("volume", instance, bake_id=None))
    create_volume(bake_tags("volume", instance, purpose="snapshot"))
    volume = create_volume(bake_tags("volume", instance))  # as the engine makes it
    ask(probe.create_snapshot, VolumeId=volume)
    snapshot = probe.create_snapshot(
        VolumeId=volume, TagSpecifications=[bake_tags("snapshot", instance)]
    )["SnapshotId"]
    image = {
        "RootDeviceName": "/dev/xvda",
        "BlockDeviceMappings": [{"DeviceName": "/dev/xvda", "Ebs": {"SnapshotId": snapshot}}],
    }
    ask(probe.register_image, Name="untagged", **image)
    image_tags = [{"Key": BAKE_TAG, "Value": BAKE_ID}]
    ask(
        probe.register_image,
        Name="no-base-image-tag",
        TagSpecifications=[{"ResourceType": "image", "Tags": image_tags}],
        **image,
    )
    image_tags.append({"Key": "aminator-ng:base-image-id", "Value": base_ami})
    ask(
        probe.register_image,
        Name="as-the-engine-registers",
        TagSpecifications=[{"ResourceType": "image", "Tags": image_tags}],
        **image,
    )
    assert refusals(policy, moto) == [
        ("CreateVolume", False),
        ("CreateVolume", False),
        ("CreateVolume", False),
        ("CreateVolume", True),
        ("CreateSnapshot", False),
        ("CreateSnapshot", True),
        ("RegisterImage", False),
        ("RegisterImage", False),
        ("RegisterImage", True),
    ]


def test_what_a_bake_made_cannot_be_tagged_afterwards_only_deleted(
    moto: MotoEc2, baked: Image, policy: Policy
) -> None:
    probe = moto.client("ec2", access_key=PROBE_KEY)
    snapshot = [baked.snapshot_id]
    ask(probe.create_tags, Resources=snapshot, Tags=[{"Key": "Name", "Value": "hello"}])
    ask(probe.create_tags, Resources=snapshot, Tags=[{"Key": BAKE_TAG, "Value": "another-bake"}])
    ask(probe.create_tags, Resources=[baked.image_id], Tags=[{"Key": "Name", "Value": "hello"}])
    ask(probe.delete_snapshot, SnapshotId=baked.snapshot_id)
    assert refusals(policy, moto) == [
        ("CreateTags", False),
        ("CreateTags", False),
        ("CreateTags", False),
        ("DeleteSnapshot", True),
    ]


# The policy's statements themselves, so that a change of them is a deliberate one.


def granting(policy: Policy, action: str, resource_type: str) -> list[Statement]:
    """The statements that allow ``action`` on some resource of ``resource_type``."""
    example = EXAMPLE_ARN[resource_type]
    return [statement for statement in policy.granting(action) if statement.covers(example)]


def test_only_reading_is_granted_on_every_resource(policy: Policy) -> None:
    everywhere = [s for s in policy.statements if "*" in s.resources]
    assert [action for s in everywhere for action in s.actions] == [
        "ec2:DescribeImageAttribute",
        "ec2:DescribeImages",
        "ec2:DescribeInstances",
        "ec2:DescribeSnapshots",
        "ec2:DescribeVolumes",
        "ec2:GetImageBlockPublicAccessState",
    ]
    assert all(not s.conditions for s in everywhere)


def test_tags_are_granted_at_creation_only(moto: MotoEc2, baked: Image, policy: Policy) -> None:
    tagged_at_creation = sorted(
        {call.action for call in bake_calls(moto) if call.params.get("TagSpecifications")}
    )
    assert tagged_at_creation == sorted(CREATED_TYPE)
    [at_creation] = policy.granting("ec2:CreateTags")
    # CopyImage too: what a bake with --copy-to makes (judged in test_ec2_copies.py).
    assert at_creation.conditions == {
        "StringEquals": {"ec2:CreateAction": tuple(sorted([*tagged_at_creation, "CopyImage"]))}
    }
    assert sorted(at_creation.resources) == sorted(
        ["arn:aws:ec2:*:*:volume/*", "arn:aws:ec2:*::snapshot/*", "arn:aws:ec2:*::image/*"]
    )
    # A bake tags nothing after creating it: its snapshot is named as its image at creation.
    assert [call for call in bake_calls(moto) if call.action == "CreateTags"] == []
    [snapshot] = [call for call in bake_calls(moto) if call.action == "CreateSnapshot"]
    [given] = snapshot.params["TagSpecifications"]
    assert {"Key": "Name", "Value": baked.name} in given["Tags"]


def test_creating_asks_for_the_tags_the_engine_sends(
    moto: MotoEc2, baked: Image, policy: Policy
) -> None:
    for call in bake_calls(moto):
        if call.action not in CREATED_TYPE:
            continue
        sent = {
            tag["Key"]: tag["Value"]
            for spec in call.params["TagSpecifications"]
            for tag in spec["Tags"]
            if tag["Key"].startswith("aminator-ng:")
        }
        [statement] = granting(policy, f"ec2:{call.action}", CREATED_TYPE[call.action])
        required = {
            key.removeprefix("aws:RequestTag/")
            for key in statement.condition_keys()
            if key.startswith("aws:RequestTag/")
        }
        assert required == set(sent), call.action
        for key, value in sent.items():
            # Present, or the very value the engine sends (a purpose, never a bake id).
            condition = f"aws:RequestTag/{key}"
            assert statement.conditions.get("Null", {}).get(condition) == ("false",) or (
                statement.conditions.get("StringEquals", {}).get(condition) == (value,)
            ), (call.action, key)


@pytest.mark.parametrize(
    ("action", "resource_type"),
    [
        ("ec2:AttachVolume", "volume"),
        ("ec2:DetachVolume", "volume"),
        ("ec2:CreateSnapshot", "volume"),
        ("ec2:DeleteVolume", "volume"),
        ("ec2:DeleteSnapshot", "snapshot"),
        ("ec2:DeregisterImage", "image"),
    ],
)
def test_acting_on_what_exists_requires_the_bakes_tag(
    policy: Policy, action: str, resource_type: str
) -> None:
    statements = granting(policy, action, resource_type)
    assert statements
    for statement in statements:
        assert statement.conditions == {"Null": {f"aws:ResourceTag/{BAKE_TAG}": ("false",)}}


def test_attaching_and_detaching_are_not_limited_by_the_instances_tags(policy: Policy) -> None:
    for action in ("ec2:AttachVolume", "ec2:DetachVolume"):
        [statement] = granting(policy, action, "instance")
        assert statement.resources == ("arn:aws:ec2:*:*:instance/*",)
        assert not statement.conditions


def test_any_snapshot_can_be_the_source_of_a_volume_or_an_image(policy: Policy) -> None:
    # A base AMI's snapshots belong to whoever published it, and carry no tag of ours.
    for action in ("ec2:CreateVolume", "ec2:RegisterImage"):
        [statement] = granting(policy, action, "snapshot")
        assert statement.resources == ("arn:aws:ec2:*::snapshot/*",)
        assert not statement.conditions


# The evaluator's own rules, where IAM's are easy to get wrong.


def test_conditions_evaluate_as_iam_does() -> None:
    tag_keys = {"aws:tagkeys": ("Name", BAKE_TAG)}
    assert not condition_holds(
        "ForAllValues:StringNotLike", "aws:TagKeys", ["aminator-ng:*"], tag_keys
    )
    assert condition_holds(
        "ForAllValues:StringNotLike", "aws:TagKeys", ["aminator-ng:*"], {"aws:tagkeys": ("Name",)}
    )
    assert condition_holds("ForAllValues:StringEquals", "aws:TagKeys", ["x"], {})  # vacuously
    assert not condition_holds("ForAnyValue:StringEquals", "aws:TagKeys", ["x"], {})
    assert condition_holds("Null", f"aws:ResourceTag/{BAKE_TAG}", ["true"], {})
    assert not condition_holds("Null", f"aws:ResourceTag/{BAKE_TAG}", ["false"], {})
    assert condition_holds("StringNotEquals", "ec2:CreateAction", ["RunInstances"], {})
    assert not condition_holds("StringEquals", "ec2:CreateAction", ["RunInstances"], {})
    assert condition_holds(
        "StringLike", "EC2:CreateAction", ["Create*"], {"ec2:createaction": ("CreateVolume",)}
    )
    with pytest.raises(NotModelled):
        condition_holds("StringEqualsIfExists", "ec2:CreateAction", ["x"], {})


def test_removing_a_baked_image_is_allowed(
    moto: MotoEc2, baked: Image, cloud: Ec2Cloud, policy: Policy
) -> None:
    cloud.remove_image(baked.image_id)
    verdicts = Evaluator(policy).run(moto.engine_calls(), judged=lambda call: True)
    assert [verdict.reason for verdict in verdicts if not verdict.allowed] == []
    assert {"DeregisterImage", "DeleteSnapshot", "DescribeInstances"} <= {
        verdict.call.action for verdict in verdicts
    }
