"""The working volume's EBS options: each type takes what EC2 lets it take, refused before
anything is created; the choice is sent in CreateVolume and kept by the AMI's root mapping; an
encrypted volume's KMS use is what the documented policy allows, through EC2 only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from aminator_ec2.backend import Ec2Cloud
from aminator_ec2.plugin import Ec2Settings
from aminator_ec2.volumes import RootVolume, check_volume_settings
from aminator_ng.api import CloudError, ConfigError, RequestError, Setting
from aminator_ng.contract.settings import settings_of
from tests.ec2moto import (
    IAM_POLICY,
    MotoEc2,
    bake_with_backend,
    made_by_bakes,
)
from tests.iampolicy import EBS_KMS_ACTIONS, Authorization, Evaluator, Policy, kms_key_arn


def setting(name: str) -> Setting:
    return next(s for s in settings_of(Ec2Settings) if s.name == name)


@pytest.mark.parametrize(
    ("given", "words"),
    [
        ({"volume_type": "io1"}, "--volume-type io1 needs --iops"),
        ({"volume_type": "io2"}, "--volume-type io2 needs --iops"),
        ({"volume_type": "gp2", "iops": 3000}, "--iops is not for --volume-type gp2"),
        (
            {"volume_type": "io1", "iops": 500, "throughput": 250},
            "--throughput is not for --volume-type io1",
        ),
        ({"volume_type": "gp3", "iops": 1000}, "--iops 1000 is out of range for --volume-type gp3"),
        ({"volume_type": "gp3", "throughput": 5000}, "--throughput 5000 is out of range"),
    ],
)
def test_what_a_volume_type_does_not_take_or_lacks_is_refused(
    given: dict[str, Any], words: str
) -> None:
    with pytest.raises(RequestError, match=words):
        check_volume_settings(Ec2Settings(**given))


@pytest.mark.parametrize("kind", ["st1", "sc1", "standard"])
def test_a_type_that_cannot_be_a_root_volume_is_refused_where_it_is_set(kind: str) -> None:
    with pytest.raises(ConfigError, match=f"'{kind}' is not one of gp3, gp2, io1, io2"):
        setting("volume_type").check(kind, "--volume-type")


def test_what_fits_passes() -> None:
    for given in (
        {},
        {"volume_type": "gp3", "iops": 16000, "throughput": 1000},
        {"volume_type": "io2", "iops": 256000},
        {"volume_type": "gp2"},
    ):
        check_volume_settings(Ec2Settings(**given))


def test_without_a_type_the_base_roots_type_and_performance_are_kept() -> None:
    base_root = {"VolumeType": "io1", "Iops": 5000, "VolumeSize": 8}
    assert RootVolume.chosen(Ec2Settings(), base_root).performance() == {
        "VolumeType": "io1",
        "Iops": 5000,
    }
    # Another type drops what the base's type had.
    gp3 = {"VolumeType": "gp3", "Iops": 4000, "Throughput": 300}
    assert RootVolume.chosen(Ec2Settings(volume_type="gp2"), gp3).performance() == {
        "VolumeType": "gp2"
    }
    # A base of a type no root may have (a magnetic one) makes a gp3 volume.
    assert RootVolume.chosen(Ec2Settings(), {"VolumeType": "standard"}).kind.name == "gp3"
    with pytest.raises(RequestError, match="needs --iops"):
        RootVolume.chosen(Ec2Settings(), {"VolumeType": "io2"}).check()


def test_the_chosen_volume_is_created_encrypted_and_kept_by_the_ami(
    moto: MotoEc2, tmp_path: Path
) -> None:
    base_ami = moto.base_image("debian-12-base", None)
    cloud = moto.backend(
        tmp_path / "lock",
        volume_type="gp3",
        iops=4000,
        throughput=250,
        encrypt=True,
        kms_key_id="alias/bakery",
    )
    bake_with_backend(cloud, base_ami, "bake-0001")
    [create] = moto.requests("CreateVolume")
    assert {
        k: create[k] for k in ("VolumeType", "Iops", "Throughput", "Encrypted", "KmsKeyId")
    } == {
        "VolumeType": "gp3",
        "Iops": 4000,
        "Throughput": 250,
        "Encrypted": True,
        "KmsKeyId": "alias/bakery",
    }
    [register] = moto.requests("RegisterImage")
    root = register["BlockDeviceMappings"][0]["Ebs"]
    assert {k: root[k] for k in ("VolumeType", "Iops", "Throughput")} == {
        "VolumeType": "gp3",
        "Iops": 4000,
        "Throughput": 250,
    }
    # Encryption follows from the snapshot: RegisterImage takes no Encrypted with a SnapshotId.
    assert "Encrypted" not in root and "KmsKeyId" not in root

    # EC2 uses the key in the bake host's name; the documented policy allows that through EC2.
    verdicts = Evaluator(Policy.load(IAM_POLICY)).run(moto.engine_calls(), judged=lambda c: True)
    assert [v.reason for v in verdicts if not v.allowed] == []
    asked = Evaluator(Policy.load(IAM_POLICY)).authorizations(
        next(c for c in moto.engine_calls() if c.action == "CreateVolume")
    )
    assert {a.action for a in asked if a.action.startswith("kms:")} == set(EBS_KMS_ACTIONS)
    assert {a.resource for a in asked if a.action.startswith("kms:")} == {
        kms_key_arn("alias/bakery")
    }


def test_an_unencrypted_request_sends_no_encryption(moto: MotoEc2, tmp_path: Path) -> None:
    base_ami = moto.base_image("debian-12-base", None)
    bake_with_backend(moto.backend(tmp_path / "lock"), base_ami, "bake-0001")
    [create] = moto.requests("CreateVolume")
    assert create["VolumeType"] == "gp3"
    assert not {"Encrypted", "KmsKeyId", "Iops", "Throughput"} & set(create)


def test_the_policy_grants_kms_only_through_ec2() -> None:
    policy = Policy.load(IAM_POLICY)
    key = kms_key_arn("1234abcd-12ab-34cd-56ef-1234567890ab")
    through_ec2 = {"kms:viaservice": ("ec2.us-east-1.amazonaws.com",)}
    for action in EBS_KMS_ACTIONS:
        extra = {"kms:grantisforawsresource": ("true",)} if action == "kms:CreateGrant" else {}
        assert policy.allows(Authorization(action, key, {**through_ec2, **extra})), action
        assert not policy.allows(Authorization(action, key, extra)), action
    # A grant for anything but an AWS resource, and any other use of a key, are refused.
    assert not policy.allows(
        Authorization(
            "kms:CreateGrant", key, {**through_ec2, "kms:grantisforawsresource": ("false",)}
        )
    )
    for action in ("kms:Encrypt", "kms:CreateKey", "kms:ScheduleKeyDeletion", "kms:PutKeyPolicy"):
        assert not policy.allows(Authorization(action, key, through_ec2)), action


@pytest.mark.parametrize("state", ["error", "deleted"])
def test_a_volume_ec2_could_not_make_fails_the_bake_at_once_and_is_released(
    moto: MotoEc2, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, state: str
) -> None:
    base_ami = moto.base_image("debian-12-base", None)
    cloud = moto.backend(tmp_path / "lock", kms_key_id="alias/not-ours")
    # moto makes every volume available; EC2 ends one whose key it may not use.
    monkeypatch.setattr(Ec2Cloud, "_volume_state", lambda self, volume_id: state)
    with pytest.raises(CloudError, match=f"failed: it is {state}, not available") as failed:
        cloud.create_volume(cloud.resolve_base(base_ami), "bake-0001")
    assert "KMS key" in (failed.value.hint or "")
    assert made_by_bakes(moto.ec2)["volumes"] == []
