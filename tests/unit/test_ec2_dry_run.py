"""``--dry-run`` on ec2: the plan, with EC2 asked (DryRun=True) whether the bake host may make
what a bake makes, and nothing made. moto answers every DryRun as allowed, so the refusal is
played with botocore's Stubber, as EC2 answers it (UnauthorizedOperation)."""

from __future__ import annotations

from pathlib import Path

import pytest
from botocore.stub import ANY, Stubber

from aminator_ng.api import HostError
from tests.ec2moto import REGION, MotoEc2, made_by_bakes

NOTHING = {"volumes": [], "snapshots": [], "images": []}


def test_the_plan_asks_ec2_about_each_creating_call_and_makes_nothing(
    moto: MotoEc2, tmp_path: Path
) -> None:
    base_ami = moto.base_image("debian-12-base", None)
    cloud = moto.backend(
        tmp_path / "lock",
        encrypt=True,
        kms_key_id="alias/x",
        volume_type="gp3",
        copy_to=("us-west-2",),
        share_with=("111122223333",),
        deprecate_in="30d",
        protect=True,
    )
    base = cloud.resolve_base(base_ami)
    plan = cloud.plan(base, size_bytes=10 << 30, bake_id="bake-0001")
    asked = [(c.action, c.region, c.params.get("DryRun")) for c in moto.engine_calls()]
    assert [a for a in asked if a[2]] == [
        ("CreateVolume", REGION, True),
        ("RegisterImage", REGION, True),
        ("CopyImage", "us-west-2", True),
    ]
    assert plan["permissions_checked"] == [
        "ec2:CreateVolume in us-east-1",
        "ec2:RegisterImage in us-east-1",
        "ec2:CopyImage in us-west-2",
    ]
    assert plan["volume"] == {
        "size_gib": 10,
        "type": "gp3",
        "iops": None,
        "throughput": None,
        "encrypted": True,
        "kms_key_id": "alias/x",
    }
    assert plan["copies"] == {"us-west-2": {"Encrypted": True}}
    assert plan["launch_permissions"] == [{"UserId": "111122223333"}]
    assert plan["protect"] is True and plan["deprecate_at"].endswith("Z")
    for region in (REGION, "us-west-2"):
        assert made_by_bakes(moto.client("ec2", region=region)) == NOTHING


def test_a_call_the_bake_host_may_not_make_is_named(moto: MotoEc2, tmp_path: Path) -> None:
    base_ami = moto.base_image("debian-12-base", None)
    cloud = moto.backend(tmp_path / "lock")
    base = cloud.resolve_base(base_ami)
    with Stubber(cloud.ec2) as stubbed:
        stubbed.add_response(
            "describe_snapshots", {"Snapshots": [{"Encrypted": False}]}, {"SnapshotIds": ANY}
        )
        stubbed.add_client_error(
            "create_volume",
            service_error_code="UnauthorizedOperation",
            service_message="You are not authorized to perform this operation.",
            http_status_code=403,
        )
        with pytest.raises(
            HostError, match="may not ec2:CreateVolume in us-east-1: You are not"
        ) as refused:
            cloud.plan(base, size_bytes=None, bake_id="bake-0001")
        stubbed.assert_no_pending_responses()
    assert refused.value.exit_code == 2
    assert "docs/ec2-iam-policy.json" in (refused.value.hint or "")
