"""Whole EC2 bakes, the CLI run as a subprocess against a moto server in this process, on real
data: the working volume is a loop device over a copy of the base snapshot's data (see
tests/ec2moto.py), so mount, chroot and apt run for real, and the new snapshot's data is read
back. What the engine asked of EC2 is asserted on the recorded requests, not on moto's record."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from aminator_ng.pipeline.recovery import ENGINE_KINDS
from tests.ec2moto import ZONE, MotoEc2, made_by_bakes, policy_actions
from tests.iampolicy import EBS_KMS_ACTIONS
from tests.integration import rpms
from tests.integration.conftest import (
    BAKE_STEPS,
    Result,
    Workspace,
    assert_one_error_line,
    dpkg_status,
    mounted_image,
    wait_for_postinst,
)

pytestmark = pytest.mark.privileged

UEFI_DATA = "QU1aTlVFRkkAAAAA"
GIB = 1 << 30
BASE_ATTRIBUTES: dict[str, Any] = {
    "BootMode": "uefi-preferred",
    "TpmSupport": "v2.0",
    "ImdsSupport": "v2.0",
    "SriovNetSupport": "simple",
    "UefiData": UEFI_DATA,
}


@pytest.fixture
def space(tmp_path: Path) -> Workspace:
    return Workspace(tmp_path / "workspace")


EPHEMERAL = {"DeviceName": "/dev/sdb", "VirtualName": "ephemeral0"}


@pytest.fixture
def base_ami(moto: MotoEc2, base_raw: Path) -> str:
    return moto.base_image(
        "debian-12-base", base_raw, extra_mappings=(EPHEMERAL,), **BASE_ATTRIBUTES
    )


def aminate(space: Workspace, moto: MotoEc2, *args: str) -> Result:
    return space.aminate(*args, env=moto.environment(space.scratch))


def test_an_ec2_bake_registers_the_new_snapshot_with_the_base_attributes(
    moto: MotoEc2, space: Workspace, base_ami: str, debs: dict[str, Path]
) -> None:
    result = aminate(space, moto, "-b", base_ami, "--output", "json", str(debs["hello"]))
    assert result.returncode == 0, result.stderr
    baked = result.json()
    assert baked["cloud"] == "ec2" and baked["base_image_id"] == base_ami
    bake_id = baked["bake_id"]

    [create_volume] = moto.requests("CreateVolume")
    base_snapshot = moto.ec2.describe_images(ImageIds=[base_ami])["Images"][0][
        "BlockDeviceMappings"
    ][0]["Ebs"]["SnapshotId"]
    assert create_volume["AvailabilityZone"] == ZONE
    assert create_volume["SnapshotId"] == base_snapshot
    assert create_volume["VolumeType"] == "gp3"
    [volume_tags] = [spec["Tags"] for spec in create_volume["TagSpecifications"]]
    assert {"Key": "aminator-ng:bake-id", "Value": bake_id} in volume_tags
    assert {"Key": "aminator-ng:instance-id", "Value": moto.instance_id} in volume_tags
    assert {"Key": "aminator-ng:purpose", "Value": "volume"} in volume_tags

    [attach] = moto.requests("AttachVolume")
    [detach] = moto.requests("DetachVolume")
    assert attach["Device"] == "/dev/sdf" and attach["InstanceId"] == moto.instance_id
    assert detach == {key: attach[key] for key in ("VolumeId", "InstanceId", "Device")}

    [snapshot_request] = moto.requests("CreateSnapshot")
    assert snapshot_request["VolumeId"] == attach["VolumeId"]
    [register] = moto.requests("RegisterImage")
    new_snapshot = register["BlockDeviceMappings"][0]["Ebs"]["SnapshotId"]
    assert new_snapshot != base_snapshot
    assert register["Name"] == baked["name"]
    assert register["Architecture"] == "x86_64"
    assert register["RootDeviceName"] == "/dev/xvda"
    assert register["VirtualizationType"] == "hvm"
    assert register["EnaSupport"] is True
    assert register["BlockDeviceMappings"][0]["DeviceName"] == "/dev/xvda"
    assert register["BlockDeviceMappings"][0]["Ebs"]["VolumeType"] == "gp3"
    assert register["BlockDeviceMappings"][1:] == [EPHEMERAL]
    for key, value in BASE_ATTRIBUTES.items():
        assert register[key] == value, key
    image_tags = {t["Key"]: t["Value"] for t in register["TagSpecifications"][0]["Tags"]}
    assert image_tags["aminator-ng:bake-id"] == bake_id
    assert image_tags["appversion"] == baked["tags"]["appversion"]

    snapshot = moto.ec2.describe_snapshots(SnapshotIds=[new_snapshot])["Snapshots"][0]
    snapshot_tags = {t["Key"]: t["Value"] for t in snapshot["Tags"]}
    assert snapshot_tags["aminator-ng:bake-id"] == bake_id
    assert snapshot_tags["appversion"] == baked["tags"]["appversion"]
    assert snapshot_tags["Name"] == baked["name"]

    left = made_by_bakes(moto.ec2)
    assert left == {"volumes": [], "snapshots": [new_snapshot], "images": [baked["image_id"]]}
    with mounted_image(moto.udev.data[new_snapshot], space.scratch / "baked") as root:
        assert dpkg_status(root, "hello") == "ii"

    # The policy allows nothing a bake does not use: the rest is for failures and SSM names.
    # CreateTags is asked of IAM by the create calls that tag, not called itself; the S3 calls
    # are for an SBOM bucket (sbom_bucket), which this bake has none of.
    unused_here = {"ec2:DeleteSnapshot", "ec2:DeregisterImage", "ssm:GetParameter"}
    unused_here |= {"ec2:CreateTags", "s3:PutObject", "s3:DeleteObject"}
    # EC2 asks KMS itself, in the bake host's name, for an encrypted volume.
    unused_here |= set(EBS_KMS_ACTIONS)
    # Sharing, copies, deprecation and protection are asked for with their flags.
    unused_here |= {
        "ec2:CopyImage",
        "ec2:ModifyImageAttribute",
        "ec2:ModifySnapshotAttribute",
        "ec2:EnableImageDeprecation",
        "ec2:EnableImageDeregistrationProtection",
        "ec2:DisableImageDeregistrationProtection",
        "ec2:GetImageBlockPublicAccessState",
    }
    assert policy_actions() - unused_here == moto.actions()

    listed = aminate(space, moto, "images", "--output", "json")
    assert listed.returncode == 0, listed.stderr
    [image] = listed.json()
    assert image["image_id"] == baked["image_id"] and image["snapshot_id"] == new_snapshot
    assert image["base_image_id"] == base_ami
    shown = aminate(space, moto, "images", "show", baked["image_id"], "--output", "json")
    assert shown.returncode == 0, shown.stderr
    assert shown.json()["name"] == baked["name"]
    # The manifest this host keeps of the AMIs it baked.
    assert shown.json()["manifest"] == baked["manifest"]
    assert shown.json()["package_count"] == len(baked["manifest"]) > 0


def test_an_encrypted_larger_root_of_the_chosen_type_is_made_grown_and_registered(
    moto: MotoEc2, space: Workspace, base_raw: Path, debs: dict[str, Path]
) -> None:
    base_gib = -(-base_raw.stat().st_size // GIB)
    base = moto.base_image("debian-12-small", base_raw, size_gib=base_gib, **BASE_ATTRIBUTES)
    moto.udev.sized_volumes = True
    grown_gib = base_gib + 2
    result = aminate(
        space, moto, "-b", base, "--output", "json", "--root-volume-size", str(grown_gib),
        "--volume-type", "gp3", "--iops", "4000", "--throughput", "250",
        "--encrypt", "--kms-key-id", "alias/bakery", str(debs["hello"]),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    [create] = moto.requests("CreateVolume")
    sent = ("Size", "VolumeType", "Iops", "Throughput", "Encrypted", "KmsKeyId")
    assert {key: create[key] for key in sent} == {
        "Size": grown_gib,
        "VolumeType": "gp3",
        "Iops": 4000,
        "Throughput": 250,
        "Encrypted": True,
        "KmsKeyId": "alias/bakery",
    }
    [register] = moto.requests("RegisterImage")
    root = register["BlockDeviceMappings"][0]["Ebs"]
    assert (root["VolumeSize"], root["VolumeType"], root["Iops"], root["Throughput"]) == (
        grown_gib,
        "gp3",
        4000,
        250,
    )
    # The snapshot's data: the root partition and filesystem fill the larger volume.
    data = moto.udev.data[root["SnapshotId"]]
    assert data.stat().st_size == grown_gib * GIB
    with mounted_image(data, space.scratch / "grown") as mounted:
        usage = os.statvfs(mounted)
        assert usage.f_blocks * usage.f_frsize > (grown_gib - 0.25) * GIB
        assert dpkg_status(mounted, "hello") == "ii"


@pytest.mark.parametrize(
    ("options", "words"),
    [
        (("--volume-type", "io1"), "--volume-type io1 needs --iops"),
        (("--volume-type", "gp2", "--throughput", "250"), "--throughput is not for"),
        (("--volume-type", "st1"), "'st1' is not one of"),
    ],
)
def test_a_volume_ec2_would_refuse_is_refused_before_anything_is_created(
    moto: MotoEc2,
    space: Workspace,
    base_ami: str,
    debs: dict[str, Path],
    options: tuple[str, ...],
    words: str,
) -> None:
    result = aminate(space, moto, "-b", base_ami, *options, str(debs["hello"]))
    assert_one_error_line(result, 2, words)
    assert moto.requests("CreateVolume") == []
    assert made_by_bakes(moto.ec2) == {"volumes": [], "snapshots": [], "images": []}


def test_an_rpm_bake_through_ec2(
    moto: MotoEc2, space: Workspace, rpm_base_raw: Path, rpm_files: dict[str, Path]
) -> None:
    base_ami = moto.base_image("synthel-9-base", rpm_base_raw, **BASE_ATTRIBUTES)
    with mounted_image(rpm_base_raw, space.scratch / "base") as root:
        base_state = rpms.image_state(root)
    result = aminate(space, moto, "-b", base_ami, "--output", "json", str(rpm_files["greeter"]))
    assert result.returncode == 0, result.stderr
    baked = result.json()
    assert baked["name"].startswith("greeter-1.0-1-noarch-")
    assert baked["tags"]["gpgcheck"] == "on"
    [register] = moto.requests("RegisterImage")
    new_snapshot = register["BlockDeviceMappings"][0]["Ebs"]["SnapshotId"]
    image_tags = {t["Key"]: t["Value"] for t in register["TagSpecifications"][0]["Tags"]}
    assert image_tags["appversion"] == "greeter-1.0-1"
    assert made_by_bakes(moto.ec2) == {
        "volumes": [],
        "snapshots": [new_snapshot],
        "images": [baked["image_id"]],
    }
    with mounted_image(moto.udev.data[new_snapshot], space.scratch / "baked") as root:
        assert rpms.rpm_query(root, "greeter", "greeting-lib") == [
            "greeter-1.0-1.noarch",
            "greeting-lib-1.1-1.noarch",
        ]
        assert (root / "var/lib/greeter/post-ran").read_text() == rpms.OS_RELEASE
        assert rpms.image_state(root) == base_state


def test_a_device_that_never_appears_fails_after_the_attach_timeout(
    moto: MotoEc2, space: Workspace, base_ami: str, debs: dict[str, Path]
) -> None:
    moto.udev.mode = "never"
    began = time.monotonic()
    result = aminate(
        space, moto, "-b", base_ami, "--attach-timeout", "3", "--output", "json", str(debs["hello"])
    )
    elapsed = time.monotonic() - began
    assert result.returncode == 1, result.stderr
    [attach] = moto.requests("AttachVolume")
    error = result.json()["error"]
    assert error["step"] == "attach"
    assert attach["VolumeId"] in error["message"] and "/dev/sdf" in error["message"]
    assert "within 3 s" in error["message"]
    assert elapsed >= 3
    assert made_by_bakes(moto.ec2) == {"volumes": [], "snapshots": [], "images": []}
    assert moto.requests("DetachVolume")


def test_two_bakes_at_once_take_different_attachment_points(
    moto: MotoEc2, space: Workspace, base_ami: str, debs: dict[str, Path]
) -> None:
    env = moto.environment(space.scratch)
    processes = [
        space.start("-b", base_ami, "-s", suffix, "--output", "json", str(debs["hello"]), env=env)
        for suffix in ("one", "two")
    ]
    for process in processes:
        _, stderr = process.communicate(timeout=600)
        assert process.returncode == 0, stderr
    devices = [request["Device"] for request in moto.requests("AttachVolume")]
    assert sorted(devices) == ["/dev/sdf", "/dev/sdg"]
    assert len(made_by_bakes(moto.ec2)["images"]) == 2


def test_attachment_points_taken_here_or_in_ec2_are_skipped(
    moto: MotoEc2, space: Workspace, base_ami: str, debs: dict[str, Path]
) -> None:
    other = moto.ec2.create_volume(AvailabilityZone=ZONE, Size=1)["VolumeId"]
    moto.ec2.attach_volume(VolumeId=other, InstanceId=moto.instance_id, Device="/dev/sdf")
    (moto.udev.device_root / "xvdg").touch()  # a device node of something else on this host
    moto.calls.clear()
    result = aminate(space, moto, "-b", base_ami, "--output", "json", str(debs["hello"]))
    assert result.returncode == 0, result.stderr
    assert [request["Device"] for request in moto.requests("AttachVolume")] == ["/dev/sdh"]
    moto.ec2.detach_volume(VolumeId=other, InstanceId=moto.instance_id, Device="/dev/sdf")


def test_preserve_on_error_keeps_the_volume_and_says_how_to_release_it(
    moto: MotoEc2, space: Workspace, base_ami: str, debs: dict[str, Path]
) -> None:
    result = aminate(
        space, moto, "-b", base_ami, "--preserve-on-error", "--output", "json", str(debs["failing"])
    )
    assert result.returncode == 1, result.stderr
    preserved = result.json()["preserved"]
    # The mount went with the bake's namespace, and the volume was detached: it alone stays.
    assert [entry["kind"] for entry in preserved] == ["volume"]
    [kept] = preserved
    [attach] = moto.requests("AttachVolume")
    volume_id = attach["VolumeId"]
    assert [r["VolumeId"] for r in moto.requests("DetachVolume")] == [volume_id]
    assert made_by_bakes(moto.ec2)["volumes"] == [volume_id]
    assert kept["release"] == f"aws ec2 delete-volume --volume-id {volume_id} --region us-east-1"
    cleaned = aminate(space, moto, "cleanup", "--preserved", "--output", "json")
    assert cleaned.returncode == 0, cleaned.stderr
    [bake] = cleaned.json()["bakes"]
    assert bake["bake_id"] == result.json()["bake_id"] and bake["released"]
    assert [r["VolumeId"] for r in moto.requests("DeleteVolume")] == [volume_id]
    assert made_by_bakes(moto.ec2) == {"volumes": [], "snapshots": [], "images": []}
    assert not moto.udev.attached
    assert not list((space.home / "bakes").glob("*"))


@pytest.mark.parametrize("moment", ["install", "register"])
def test_a_killed_ec2_bake_is_released_by_cleanup(
    moto: MotoEc2, space: Workspace, base_ami: str, debs: dict[str, Path], moment: str
) -> None:
    env = moto.environment(space.scratch)
    if moment == "install":
        process = space.start("-b", base_ami, str(debs["slow"]), env=env)
        wait_for_postinst(space, process)
    else:  # the snapshot is complete, the volume deleted, the image not yet registered
        env["AMINATOR_TEST_PAUSE"] = "register:enter"
        process = space.start("-b", base_ami, str(debs["hello"]), env=env)
        deadline = time.monotonic() + 120
        while not moto.requests("DeleteVolume"):
            assert process.poll() is None and time.monotonic() < deadline, process.communicate()
            time.sleep(0.1)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=60)
    left = made_by_bakes(moto.ec2)
    assert left["volumes" if moment == "install" else "snapshots"], left

    listed = aminate(space, moto, "cleanup", "--dry-run", "--output", "json")
    assert listed.returncode == 0, listed.stderr
    [bake] = listed.json()["bakes"]
    # The engine's own (its work directory; lists it was fetching, if it died in the refresh).
    in_ec2 = [
        leftover["kind"] for leftover in bake["leftovers"] if leftover["kind"] not in ENGINE_KINDS
    ]
    assert in_ec2 == (["volume"] if moment == "install" else ["snapshot"]), bake
    cleaned = aminate(space, moto, "cleanup", "--output", "json")
    assert cleaned.returncode == 0, cleaned.stderr
    assert cleaned.json()["bakes"][0]["released"]
    if moment == "install":  # still attached when the bake died: detached first
        assert [r["VolumeId"] for r in moto.requests("DetachVolume")] == left["volumes"]
    assert made_by_bakes(moto.ec2) == {"volumes": [], "snapshots": [], "images": []}
    assert not moto.udev.attached
    assert not list((space.home / "bakes").glob("*"))
    assert not list(space.home.glob("cache/*/index/.new-*"))


def test_sigterm_during_the_install_releases_what_the_bake_made(
    moto: MotoEc2, space: Workspace, base_ami: str, debs: dict[str, Path]
) -> None:
    process = space.start("-b", base_ami, str(debs["slow"]), env=moto.environment(space.scratch))
    wait_for_postinst(space, process)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 143, stderr
    assert "Traceback" not in stderr
    assert moto.requests("DetachVolume") and moto.requests("DeleteVolume")
    assert made_by_bakes(moto.ec2) == {"volumes": [], "snapshots": [], "images": []}
    assert not moto.udev.attached


def test_base_and_export_are_not_supported_on_ec2(moto: MotoEc2, space: Workspace) -> None:
    for args in (
        ("base", "create", "debian-12"),
        ("base", "import", "x", "/dev/null"),
        ("export", "ami-12345678", "x.raw"),
    ):
        result = aminate(space, moto, *args)
        assert result.returncode == 2, result.stderr
        assert "not supported on ec2" in result.stderr
        assert "Traceback" not in result.stderr
    assert moto.calls == []  # refused before anything was asked of AWS


#: Faults around what EC2 holds for a bake (the whole matrix runs over fakes, in the unit tests).
EC2_FAULTS = [
    ("create_volume", "exit"),
    ("attach", "exit"),
    ("install", "exit"),
    ("detach", "enter"),
    ("snapshot", "exit"),
    ("delete_volume", "enter"),
    ("register", "exit"),
    ("publish", "enter"),
]


def test_the_ec2_faults_name_steps_of_the_bake() -> None:
    assert {step for step, _ in EC2_FAULTS} <= set(BAKE_STEPS)


@pytest.mark.parametrize(("step", "when"), EC2_FAULTS)
def test_fault_at_step_of_an_ec2_bake_leaves_nothing(
    moto: MotoEc2, space: Workspace, base_ami: str, debs: dict[str, Path], step: str, when: str
) -> None:
    env = {**moto.environment(space.scratch), "AMINATOR_TEST_FAULT": f"{step}:{when}"}
    result = space.aminate("-b", base_ami, "--output", "json", str(debs["hello"]), env=env)
    assert result.returncode == 1, result.stderr
    error = result.json()["error"]
    assert error["step"] == step
    assert f"fault injected on {when} of step {step}" in error["message"]
    assert made_by_bakes(moto.ec2) == {"volumes": [], "snapshots": [], "images": []}
    assert not moto.udev.attached
