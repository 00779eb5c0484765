"""No AWS secret reaches what a bake leaves to read: an EC2 bake run with ``--debug`` (the CLI as a
subprocess, against the moto server of tests/ec2moto.py), with credentials from the environment
or from the instance profile, whose every value is a marker found nowhere in its bake log, its
stdout, its stderr, its JSON or the tags it sent."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.ec2moto import MotoEc2, moto_ec2
from tests.integration.conftest import Result, Workspace

pytestmark = pytest.mark.privileged

#: Access key ids in AWS's shape, which moto reads from a request: they tell who signed it.
ACCESS_KEY_ID = {"environment": "AKIASECRETKEYIDENV01", "instance profile": "ASIASECRETKEYIDIMDS1"}
SECRET_ACCESS_KEY = "SECRET-ACCESS-KEY-MARKER-6f1c"
SESSION_TOKEN = "SESSION-TOKEN-MARKER-9a2e"
IMDS_TOKEN = "IMDS-TOKEN-MARKER-3b7d"
#: What must never be written: the credentials, the IMDSv2 token, and the headers that carry them.
NEVER_WRITTEN = (
    *ACCESS_KEY_ID.values(),
    SECRET_ACCESS_KEY,
    SESSION_TOKEN,
    IMDS_TOKEN,
    "authorization",
    "x-amz-security-token",
    "x-aws-ec2-metadata-token",
)
#: A record of the AWS libraries in the bake log (its format: time, level, logger, message).
LIBRARY_RECORD = re.compile(r"^\S+ \S+ (DEBUG|INFO) (botocore|boto3|urllib3|s3transfer)[.:]", re.M)


@pytest.fixture
def moto(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[MotoEc2]:
    with moto_ec2(monkeypatch, tmp_path / "ec2") as server:
        server.instance_id = server.host_instance(monkeypatch)
        # moto's metadata service serves fixed credentials and token: have it serve markers.
        server.instance_profile(
            monkeypatch,
            **{
                "test-secret-key": SECRET_ACCESS_KEY,
                "test-session-token": SESSION_TOKEN,
                "test-key": ACCESS_KEY_ID["instance profile"],
                "fake-imdsv2-token": IMDS_TOKEN,
            },
        )
        yield server


@pytest.fixture
def space(tmp_path: Path) -> Workspace:
    return Workspace(tmp_path / "workspace")


def credentials(source: str, moto: MotoEc2, space: Workspace) -> dict[str, str]:
    env = moto.environment(space.scratch)
    del env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]
    if source == "environment":
        env.update(
            AWS_ACCESS_KEY_ID=ACCESS_KEY_ID[source],
            AWS_SECRET_ACCESS_KEY=SECRET_ACCESS_KEY,
            AWS_SESSION_TOKEN=SESSION_TOKEN,
        )
    return env  # else botocore finds none but the instance profile's


@pytest.mark.parametrize("source", ["environment", "instance profile"])
def test_a_debug_bake_writes_no_credential(
    moto: MotoEc2, space: Workspace, base_raw: Path, debs: dict[str, Path], source: str
) -> None:
    base_ami = moto.base_image("debian-12-base", base_raw)
    result: Result = space.aminate(
        "--debug",
        "-b",
        base_ami,
        "--output",
        "json",
        str(debs["hello"]),
        env=credentials(source, moto, space),
    )
    assert result.returncode == 0, result.stderr
    assert {call.access_key for call in moto.engine_calls()} == {ACCESS_KEY_ID[source]}
    baked = result.json()
    log_path = Path(baked["log_path"])
    log = log_path.read_text()
    sent = json.dumps([call.params for call in moto.engine_calls()])  # tags included
    for name, text in {
        "log": log,
        "stdout": result.stdout,
        "stderr": result.stderr,
        "requests": sent,
    }.items():
        for secret in NEVER_WRITTEN:
            assert secret.lower() not in text.lower(), (name, secret)

    # The log is a DEBUG one, and names each call by its operation and ids, and no more.
    [create_volume] = moto.requests("CreateVolume")
    [delete_volume] = moto.requests("DeleteVolume")
    volume_line = re.compile(
        rf"DEBUG aminator_ec2\.aws: AWS ec2 CreateVolume {create_volume['SnapshotId']} "
        rf"{delete_volume['VolumeId']}: HTTP 200, request \S+$",
        re.M,
    )
    assert volume_line.search(log), log
    assert "AWS ec2 RegisterImage " in log and baked["image_id"] in log
    assert LIBRARY_RECORD.findall(log) == []
    assert "aminator-ng volume of bake" not in log  # a tag value: parameters are not logged

    assert log_path.stat().st_mode & 0o007 == 0, oct(log_path.stat().st_mode)
