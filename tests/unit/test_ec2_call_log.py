"""What the EC2 plugin logs of its AWS calls: one line each, with the operation, the resource ids,
the HTTP status, the request id and the error code; never the AWS libraries' own DEBUG records,
which hold signed headers, session tokens and bodies."""

from __future__ import annotations

import logging
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from aminator_ec2.aws import AWS_LIBRARY_LOGGERS, MAX_LOGGED_IDS, call, resource_ids
from aminator_ec2.images import ec2_clients
from aminator_ng.api import CloudError
from tests.ec2moto import REGION, ZONE, MotoEc2, bake_with_backend, moto_on_this_host

SECRET = "secret-access-key-MARKER-6f1c"
SESSION_TOKEN = "session-token-MARKER-9a2e"
CALL_LOG = "aminator_ec2.aws"
REQUEST_ID = r"request [0-9A-Za-z-]{8,}"


@pytest.fixture
def moto(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[MotoEc2]:
    with moto_on_this_host(monkeypatch, tmp_path) as server:
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
        monkeypatch.setenv("AWS_SESSION_TOKEN", SESSION_TOKEN)
        yield server


@pytest.fixture
def base(moto: MotoEc2) -> tuple[str, str]:
    """A base AMI and its root snapshot, made before the log is watched."""
    image_id = moto.base_image("debian-12-base", None)
    image = moto.ec2.describe_images(ImageIds=[image_id])["Images"][0]
    return image_id, image["BlockDeviceMappings"][0]["Ebs"]["SnapshotId"]


@pytest.fixture
def debug_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Everything logged at DEBUG, with the AWS libraries' loggers as a fresh process has them."""
    for name in AWS_LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET)
    caplog.set_level(logging.DEBUG)
    assert logging.getLogger("botocore.endpoint").isEnabledFor(logging.DEBUG)
    return caplog


def call_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name == CALL_LOG]


def test_a_bake_logs_each_call_once_and_nothing_of_the_libraries(
    moto: MotoEc2, tmp_path: Path, base: tuple[str, str], debug_log: pytest.LogCaptureFixture
) -> None:
    base_ami, base_snapshot = base
    image = bake_with_backend(moto.backend(tmp_path / "lock"), base_ami, "b1")

    lines = call_lines(debug_log)
    engine_calls = moto.engine_calls()
    assert [line.split(" ")[2].rstrip(":") for line in lines] == [c.action for c in engine_calls]
    [volume] = [c.params["VolumeId"] for c in engine_calls if c.action == "DeleteVolume"]
    [create_volume] = [line for line in lines if " CreateVolume " in line]
    assert re.fullmatch(
        rf"AWS ec2 CreateVolume {base_snapshot} {volume}: HTTP 200, {REQUEST_ID}", create_volume
    )
    [register] = [line for line in lines if " RegisterImage " in line]
    assert re.fullmatch(
        rf"AWS ec2 RegisterImage {image.snapshot_id} {image.image_id}: HTTP 200, {REQUEST_ID}",
        register,
    )
    [attach] = [line for line in lines if " AttachVolume " in line]
    assert attach.startswith(f"AWS ec2 AttachVolume {volume} {moto.instance_id}: HTTP 200")

    libraries = tuple(AWS_LIBRARY_LOGGERS)
    assert [r.name for r in debug_log.records if r.name.split(".")[0] in libraries] == []
    for secret in (SECRET, SESSION_TOKEN, "Authorization", "X-Amz-Security-Token"):
        assert secret.lower() not in debug_log.text.lower()
    # Tags and descriptions are parameters, and parameters are never logged.
    assert "aminator-ng volume of bake" not in debug_log.text
    assert "hello-1.0-1-b1, from" not in debug_log.text


def test_a_refused_call_logs_its_error_code_but_not_the_message(
    moto: MotoEc2, debug_log: pytest.LogCaptureFixture
) -> None:
    ec2 = ec2_clients(REGION).ec2
    with pytest.raises(CloudError, match=r"InvalidVolume\.NotFound") as raised:
        call(ec2.describe_volumes, "vol-0000000000000000a", VolumeIds=["vol-0000000000000000a"])
    [line] = call_lines(debug_log)
    assert re.fullmatch(
        rf"AWS ec2 DescribeVolumes vol-0000000000000000a: HTTP 400 InvalidVolume[.]NotFound, "
        rf"{REQUEST_ID}",
        line,
    )
    message = str(raised.value).partition("InvalidVolume.NotFound: ")[2]
    assert message and message not in line


def test_a_call_without_an_answer_logs_what_went_wrong(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, debug_log: pytest.LogCaptureFixture
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{closed}")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAENGINE0000000000")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_EC2"):
        monkeypatch.delenv(name, raising=False)
    ec2 = ec2_clients(REGION).ec2
    with pytest.raises(CloudError):
        call(ec2.describe_images, "ami-0123456789abcdef0", ImageIds=["ami-0123456789abcdef0"])
    assert call_lines(debug_log) == [
        "AWS ec2 DescribeImages ami-0123456789abcdef0: no answer (EndpointConnectionError)"
    ]
    assert SECRET not in debug_log.text


def test_a_long_answer_names_its_first_ids(
    moto: MotoEc2, debug_log: pytest.LogCaptureFixture
) -> None:
    for _ in range(MAX_LOGGED_IDS + 2):
        moto.ec2.create_volume(AvailabilityZone=ZONE, Size=1)
    volumes = moto.ec2.describe_volumes()["Volumes"]
    involved = {v["VolumeId"] for v in volumes} | {
        a["InstanceId"] for v in volumes for a in v.get("Attachments", ())
    }
    debug_log.clear()
    ec2_clients(REGION).ec2.describe_volumes()
    [line] = call_lines(debug_log)
    named = re.fullmatch(r"AWS ec2 DescribeVolumes (.*) \(\+(\d+) more\): HTTP 200, .*", line)
    assert named is not None, line
    ids = named.group(1).split(" ")
    assert len(ids) == MAX_LOGGED_IDS and set(ids) <= involved
    assert int(named.group(2)) == len(involved) - MAX_LOGGED_IDS


def test_only_resource_ids_are_taken_from_requests_and_answers() -> None:
    request = {
        "VolumeId": "vol-0a1b",
        "Filters": [{"Name": "tag:owner", "Values": ["i-0abc"]}],
        "TagSpecifications": [{"Tags": [{"Key": "aminator-ng:instance-id", "Value": "i-0abc"}]}],
        "Description": "from snap-0c0d",
    }
    answer = {
        "Reservations": [{"Instances": [{"InstanceId": "i-0e0f", "ImageId": "ami-01"}]}],
        "VolumeId": "vol-0a1b",
        "SnapshotId": "not-an-id",
        "Resources": ["snap-02", "sg-03"],
    }
    assert resource_ids(request, answer) == ["vol-0a1b", "i-0e0f", "ami-01", "snap-02"]
