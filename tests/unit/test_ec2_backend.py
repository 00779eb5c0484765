"""The EC2 backend's failure paths, against the moto server of tests/ec2moto.py (no devices
are attached for real here: the udev player has no data for these volumes)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from moto.ec2.exceptions import InvalidParameterValueError
from moto.ec2.models.elastic_block_store import EBSBackend
from moto.ec2.responses.amis import AmisResponse

from aminator_ec2.backend import Ec2Cloud
from aminator_ec2.manifests import ManifestRecords
from aminator_ng.api import (
    BakeTimeoutError,
    CloudError,
    ConfigError,
    ConflictError,
    ImageSpec,
    ManifestEntry,
    NotFoundError,
    RequestError,
    Snapshot,
    file_lock,
)
from tests.ec2moto import (
    ZONE,
    MotoEc2,
    bake_with_backend,
    made_by_bakes,
    moto_ec2,
    policy_actions,
    some_block_device,
)


@pytest.fixture
def moto(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[MotoEc2]:
    with moto_ec2(monkeypatch, tmp_path / "ec2") as server:
        server.instance_id = server.host_instance(monkeypatch)
        server.use_in_process(monkeypatch, tmp_path)
        yield server
        # Everything the backend asked of AWS is allowed by the documented policy.
        assert server.actions() <= policy_actions()


@pytest.fixture
def cloud(moto: MotoEc2, tmp_path: Path) -> Ec2Cloud:
    return moto.backend(tmp_path / "lock")


@pytest.fixture
def base_ami(moto: MotoEc2) -> str:
    return moto.base_image("debian-12-base", None)


def test_an_attachment_point_ec2_refuses_is_skipped_with_one_volume(
    moto: MotoEc2, cloud: Ec2Cloud, base_ami: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = EBSBackend.attach_volume

    def refuse_sdf(self: Any, volume_id: str, instance_id: str, device: str, *a: Any) -> Any:
        if device == "/dev/sdf":
            raise InvalidParameterValueError(f"Attachment point {device} is already in use")
        return original(self, volume_id, instance_id, device, *a)

    monkeypatch.setattr(EBSBackend, "attach_volume", refuse_sdf)
    base = cloud.resolve_base(base_ami)
    with cloud.volume(base, "bake1") as volume:
        volume_ec2 = moto.ec2.describe_volumes(VolumeIds=[volume.volume_id])["Volumes"][0]
        assert volume_ec2["AvailabilityZone"] == ZONE
        with (
            pytest.raises(BakeTimeoutError, match="no block device appeared"),
            cloud.attached(volume, "bake1"),
        ):
            pass
    devices = [request["Device"] for request in moto.requests("AttachVolume")]
    assert devices == ["/dev/sdf", "/dev/sdg"]
    assert len(moto.requests("CreateVolume")) == 1
    assert [r["Device"] for r in moto.requests("DetachVolume")] == ["/dev/sdg"]
    assert made_by_bakes(moto.ec2)["volumes"] == []


def test_no_free_attachment_point_is_a_conflict_naming_each(
    moto: MotoEc2, cloud: Ec2Cloud, base_ami: str, tmp_path: Path
) -> None:
    base = cloud.resolve_base(base_ami)
    with (
        cloud.volume(base, "bake1") as volume,
        every_point_locked(tmp_path / "lock"),
        pytest.raises(ConflictError, match="no free attachment point") as raised,
        cloud.attached(volume, "bake1"),
    ):
        pass
    assert "/dev/sdp (locked by another bake)" in str(raised.value)
    assert moto.requests("AttachVolume") == []


@contextlib.contextmanager
def every_point_locked(lock_dir: Path) -> Iterator[None]:
    with contextlib.ExitStack() as stack:
        for letter in "fghijklmnop":
            stack.enter_context(file_lock(lock_dir / f"aminator-ng-attach-sd{letter}.lock"))
        yield


def test_a_failure_after_registration_deregisters_and_a_lost_answer_too(
    moto: MotoEc2, cloud: Ec2Cloud, base_ami: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = cloud.resolve_base(base_ami)
    snapshot_id = moto.bake_snapshot("bake1")
    spec = ImageSpec("hello-1.0", "hello", {"appversion": "hello-1.0"}, (), base)
    snapshot = Snapshot(snapshot_id, "vol-1", 8 << 30)
    with pytest.raises(RuntimeError), cloud.registered(snapshot, spec, "bake1"):
        raise RuntimeError("publish failed")
    assert made_by_bakes(moto.ec2)["images"] == []

    original = AmisResponse.register_image

    def registered_then_lost(self: Any) -> Any:
        original(self)
        raise InvalidParameterValueError("the answer was lost")

    monkeypatch.setattr(AmisResponse, "register_image", registered_then_lost)
    with (
        pytest.raises(CloudError, match=r"RegisterImage hello-1\.0 failed"),
        cloud.registered(snapshot, spec, "bake2"),
    ):
        pass
    assert made_by_bakes(moto.ec2)["images"] == []
    assert "ec2:DeregisterImage" in moto.actions()


def test_a_name_taken_is_a_conflict(moto: MotoEc2, cloud: Ec2Cloud, base_ami: str) -> None:
    with pytest.raises(ConflictError, match=f"debian-12-base exists already \\({base_ami}\\)"):
        cloud.check_name_available("debian-12-base")
    cloud.check_name_available("hello-1.0")


def test_a_region_other_than_the_hosts_is_refused(
    moto: MotoEc2, cloud: Ec2Cloud, base_ami: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    with pytest.raises(ConfigError, match="eu-west-1 is not this bake host's region us-east-1"):
        cloud.resolve_base(base_ami)


def test_an_ssm_parameter_names_the_base(moto: MotoEc2, cloud: Ec2Cloud, base_ami: str) -> None:
    moto.ssm.put_parameter(Name="/bakery/debian-12", Value=base_ami, Type="String")
    moto.calls.clear()
    assert cloud.resolve_base("resolve:ssm:/bakery/debian-12").image_id == base_ami
    assert "ssm:GetParameter" in moto.actions()


def test_release_commands_name_the_resource_and_region(moto: MotoEc2, cloud: Ec2Cloud) -> None:
    assert cloud.release_command("volume", "vol-1") == (
        "aws ec2 delete-volume --volume-id vol-1 --region us-east-1"
    )
    assert cloud.release_command("snapshot", "snap-1").startswith("aws ec2 delete-snapshot")
    assert cloud.release_command("image", "ami-1").startswith("aws ec2 deregister-image")


def states_then(
    monkeypatch: pytest.MonkeyPatch, states: list[tuple[str, str]]
) -> list[tuple[str, str]]:
    """The new image's states, one per poll, as EC2 would report them (moto's images are
    available at once); the polls are not slept between."""
    asked: list[tuple[str, str]] = []

    def image_state(ec2: object, image_id: str) -> tuple[str, str]:
        asked.append(states[min(len(asked), len(states) - 1)])
        return asked[-1]

    monkeypatch.setattr("aminator_ec2.waiting.image_state", image_state)
    monkeypatch.setattr("aminator_ec2.waiting.time.sleep", lambda seconds: None)
    return asked


def test_the_new_image_is_waited_for_until_it_is_available(
    moto: MotoEc2, cloud: Ec2Cloud, base_ami: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    moto.udev.stand_in = some_block_device()
    asked = states_then(monkeypatch, [("pending", ""), ("pending", ""), ("available", "")])
    image = bake_with_backend(cloud, base_ami, "bake-0001")
    assert len(asked) == 3
    assert image.state == "available"


def test_an_image_ec2_fails_to_make_fails_the_bake_with_its_reason_and_is_released(
    moto: MotoEc2, cloud: Ec2Cloud, base_ami: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    moto.udev.stand_in = some_block_device()
    states_then(monkeypatch, [("pending", ""), ("failed", "Client.InvalidSnapshot.NotFound")])
    with pytest.raises(CloudError, match=r"is failed: Client\.InvalidSnapshot\.NotFound"):
        bake_with_backend(cloud, base_ami, "bake-0001")
    assert moto.requests("DeregisterImage") != []
    assert made_by_bakes(moto.ec2) == {"volumes": [], "snapshots": [], "images": []}


def test_images_rm_deregisters_a_baked_ami_and_deletes_only_its_own_snapshot(
    moto: MotoEc2, cloud: Ec2Cloud, base_ami: str
) -> None:
    moto.udev.stand_in = some_block_device()
    image = bake_with_backend(cloud, base_ami, "bake-0001")
    base_snapshot = moto.ec2.describe_images(ImageIds=[base_ami])["Images"][0][
        "BlockDeviceMappings"
    ][0]["Ebs"]["SnapshotId"]
    assert cloud.remove_image(image.image_id) == 0
    assert moto.requests("DeregisterImage") == [{"ImageId": image.image_id}]
    [deleted] = moto.requests("DeleteSnapshot")
    assert deleted["SnapshotId"] == image.snapshot_id != base_snapshot
    assert made_by_bakes(moto.ec2) == {"volumes": [], "snapshots": [], "images": []}
    # What a bake did not make is left alone.
    with pytest.raises(RequestError, match="was not made by aminator-ng"):
        cloud.remove_image(base_ami)
    with pytest.raises(NotFoundError, match="image not found"):
        cloud.remove_image(image.image_id)


def test_images_rm_refuses_an_ami_that_instances_use(
    moto: MotoEc2, cloud: Ec2Cloud, base_ami: str
) -> None:
    moto.udev.stand_in = some_block_device()
    image = bake_with_backend(cloud, base_ami, "bake-0001")
    [instance] = moto.ec2.run_instances(ImageId=image.image_id, MinCount=1, MaxCount=1)["Instances"]
    moto.ec2.stop_instances(InstanceIds=[instance["InstanceId"]])
    with pytest.raises(ConflictError, match=f"used by {instance['InstanceId']} \\(stopped\\)"):
        cloud.remove_image(image.image_id)
    assert moto.requests("DeregisterImage") == []
    assert made_by_bakes(moto.ec2)["images"] == [image.image_id]


def test_the_manifest_of_a_baked_ami_is_kept_on_the_host_and_gone_when_it_fails(
    tmp_path: Path,
) -> None:
    records = ManifestRecords(tmp_path / "manifests")
    entry = ManifestEntry("hello", "1.0-1", "all", "hello", "1.0-1")
    with records.stored("us-east-1", "ami-1", [entry]):
        pass
    assert records.read("us-east-1", "ami-1") == [entry]
    assert records.read("us-east-1", "ami-2") == []
    with pytest.raises(RuntimeError), records.stored("us-east-1", "ami-2", [entry]):
        raise RuntimeError("registration failed")
    assert not records.path("us-east-1", "ami-2").exists()
    records.forget("us-east-1", "ami-1")
    assert records.read("us-east-1", "ami-1") == []
