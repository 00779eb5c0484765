"""Sharing, deprecation and protection of a new AMI: the settings checked before anything is
made, and the calls sent once the AMI is available, in an order that never leaves a protected
AMI that a failure could not deregister. moto lacks deprecation, protection and the account's
block public access state: tests/ec2moto.py plays them as EC2 documents them."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from aminator_ec2.plugin import Ec2Settings
from aminator_ec2.publishing import Publishing
from aminator_ng.api import ImageSpec, RequestError
from tests.ec2moto import (
    IAM_POLICY,
    MotoEc2,
    bake_with_backend,
    made_by_bakes,
)
from tests.iampolicy import Evaluator, Policy

NOW = datetime(2026, 12, 1, tzinfo=UTC)
ACCOUNT = "111122223333"
ORGANIZATION = "arn:aws:organizations::123456789012:organization/o-exampleorgid"
UNIT = "arn:aws:organizations::123456789012:ou/o-exampleorgid/ou-ab12-cdefgh34"


@pytest.mark.parametrize(
    ("given", "words"),
    [
        ({"share_with": ("1111-2222-3333",)}, "is not an account"),
        ({"share_with": ("arn:aws:iam::111122223333:root",)}, "is not an account"),
        ({"public": True}, "--public would let every AWS account"),
        ({"deprecate_in": "30d", "deprecate_at": "2027-01-01T00:00Z"}, "both set"),
        ({"deprecate_in": "30 days"}, "is not a duration"),
        ({"deprecate_in": "0d"}, "is not a duration"),
        ({"deprecate_in": "600w"}, "at most ten years ahead"),
        ({"deprecate_at": "2026-11-30T00:00Z"}, "is not in the future"),
        ({"deprecate_at": "next tuesday"}, "is not a time"),
        ({"protect_cooldown": True}, "--protect-cooldown goes with --protect"),
    ],
)
def test_what_cannot_be_published_is_refused(given: dict[str, Any], words: str) -> None:
    with pytest.raises(RequestError, match=words):
        Publishing.from_settings(Ec2Settings(**given), NOW)


def test_targets_durations_and_times_are_read() -> None:
    chosen = Publishing.from_settings(
        Ec2Settings(share_with=(ACCOUNT, ORGANIZATION, UNIT), deprecate_in="12w"), NOW
    )
    assert chosen.launch_permissions() == [
        {"UserId": ACCOUNT},
        {"OrganizationArn": ORGANIZATION},
        {"OrganizationalUnitArn": UNIT},
    ]
    assert chosen.deprecate_at == NOW + timedelta(weeks=12)
    at = Publishing.from_settings(Ec2Settings(deprecate_at="2027-06-30T12:00"), NOW)
    assert at.deprecate_at == datetime(2027, 6, 30, 12, 0, tzinfo=UTC)
    public = Publishing.from_settings(Ec2Settings(public=True, allow_public=True), NOW)
    assert public.launch_permissions() == [{"Group": "all"}]


def test_a_new_ami_is_shared_deprecated_and_then_protected(moto: MotoEc2, tmp_path: Path) -> None:
    base_ami = moto.base_image("debian-12-base", None)
    cloud = moto.backend(
        tmp_path / "lock",
        share_with=(ACCOUNT, ORGANIZATION, UNIT),
        deprecate_in="30d",
        protect=True,
    )
    before = datetime.now(UTC)
    image = bake_with_backend(cloud, base_ami, "bake-0001")
    publishing = [c for c in moto.engine_calls() if c.action not in ("DescribeImages",)][-4:]
    assert [c.action for c in publishing] == [
        "ModifyImageAttribute",
        "ModifySnapshotAttribute",
        "EnableImageDeprecation",
        "EnableImageDeregistrationProtection",
    ]
    [launch] = moto.requests("ModifyImageAttribute")
    assert launch["ImageId"] == image.image_id
    assert launch["LaunchPermission"] == {
        "Add": [
            {"UserId": ACCOUNT},
            {"OrganizationArn": ORGANIZATION},
            {"OrganizationalUnitArn": UNIT},
        ]
    }
    [volumes] = moto.requests("ModifySnapshotAttribute")
    assert volumes == {
        "SnapshotId": image.snapshot_id,
        "Attribute": "createVolumePermission",
        "OperationType": "add",
        "UserIds": [ACCOUNT],
    }
    [deprecation] = moto.requests("EnableImageDeprecation")
    deprecate_at = deprecation["DeprecateAt"]  # moto gives it parsed
    if isinstance(deprecate_at, str):
        deprecate_at = datetime.fromisoformat(deprecate_at.replace("Z", "+00:00"))
    deprecate_at = deprecate_at if deprecate_at.tzinfo else deprecate_at.replace(tzinfo=UTC)
    assert before + timedelta(days=30) <= deprecate_at <= datetime.now(UTC) + timedelta(days=30)
    [protection] = moto.requests("EnableImageDeregistrationProtection")
    assert protection["ImageId"] == image.image_id
    assert protection.get("WithCooldown") in (False, "false", None)
    # What moto's snapshot permissions say (it keeps these two).
    shared = moto.ec2.describe_snapshot_attribute(
        SnapshotId=image.snapshot_id, Attribute="createVolumePermission"
    )["CreateVolumePermissions"]
    assert shared == [{"UserId": ACCOUNT}]
    verdicts = Evaluator(Policy.load(IAM_POLICY)).run(moto.engine_calls(), judged=lambda c: True)
    assert [v.reason for v in verdicts if not v.allowed] == []


def test_a_failure_after_protection_lifts_it_and_deregisters(moto: MotoEc2, tmp_path: Path) -> None:
    base_ami = moto.base_image("debian-12-base", None)
    cloud = moto.backend(tmp_path / "lock", protect=True)
    base = cloud.resolve_base(base_ami)
    with contextlib.ExitStack() as stack:
        volume = stack.enter_context(cloud.volume(base, "bake-0001"))
        spec = ImageSpec("hello-1.0-1-bake-0001", "hello", {}, (), base)
        snapshot = stack.enter_context(cloud.image_snapshot(volume, "bake-0001", spec))
        with pytest.raises(RuntimeError), cloud.registered(snapshot, spec, "bake-0001"):
            raise RuntimeError("a later step failed")
    actions = [c.action for c in moto.engine_calls()]
    lifted = actions.index("DisableImageDeregistrationProtection")
    assert actions.index("EnableImageDeregistrationProtection") < lifted
    assert actions[lifted + 1] == "DeregisterImage"
    assert made_by_bakes(moto.ec2)["images"] == []


def test_public_is_refused_where_the_account_blocks_public_amis(
    moto: MotoEc2, tmp_path: Path
) -> None:
    base_ami = moto.base_image("debian-12-base", None)
    moto.image_block_public_access = "block-new-sharing"
    cloud = moto.backend(tmp_path / "lock", public=True, allow_public=True)
    with pytest.raises(RequestError, match=r"blocks public AMIs .*block-new-sharing"):
        cloud.resolve_base(base_ami)
    assert moto.requests("CreateVolume") == []
    moto.image_block_public_access = "unblocked"
    image = bake_with_backend(cloud, base_ami, "bake-0001")
    [launch] = moto.requests("ModifyImageAttribute")
    assert launch == {"ImageId": image.image_id, "LaunchPermission": {"Add": [{"Group": "all"}]}}
    assert moto.requests("ModifySnapshotAttribute") == []


def test_images_rm_refuses_a_protected_ami_naming_how_to_lift_it(
    moto: MotoEc2, tmp_path: Path
) -> None:
    base_ami = moto.base_image("debian-12-base", None)
    cloud = moto.backend(tmp_path / "lock", protect=True)
    image = bake_with_backend(cloud, base_ami, "bake-0001")
    described = moto.ec2.describe_images(ImageIds=[image.image_id])["Images"][0]
    assert described["DeregistrationProtection"] == "enabled"
    with pytest.raises(RequestError, match="is protected from deregistration") as refused:
        cloud.remove_image(image.image_id)
    assert "disable-image-deregistration-protection" in (refused.value.hint or "")
    assert moto.requests("DeregisterImage") == []
