"""The EC2 backend keeps a baked AMI's SBOM in the bake host's records and, with ``sbom_bucket``,
puts it in S3; a registration that fails removes both. Against the moto server of
tests/ec2moto.py; what the backend sent to S3 is recorded from its own client, as moto keeps
little of it, and judged against the documented IAM policy."""

from __future__ import annotations

import base64
import hashlib
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aminator_ec2.backend import Ec2Cloud
from aminator_ec2.plugin import Ec2Settings
from aminator_ng.api import CloudError, EngineSettings, ImageSpec, Snapshot
from tests.ec2moto import IAM_POLICY, REGION, Call, MotoEc2, made_by_bakes, moto_ec2
from tests.iampolicy import TEST_SBOM_BUCKET, Evaluator, Policy

SBOM = b'{"bomFormat": "CycloneDX", "specVersion": "1.6", "components": []}\n'
MEDIA_TYPE = "application/vnd.cyclonedx+json"


@pytest.fixture
def moto(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[MotoEc2]:
    with moto_ec2(monkeypatch, tmp_path / "ec2") as server:
        server.instance_id = server.host_instance(monkeypatch)
        server.use_in_process(monkeypatch, tmp_path)
        server.client("s3").create_bucket(Bucket=TEST_SBOM_BUCKET)
        yield server


def backend(moto: MotoEc2, home: Path, **sbom_settings: str) -> Ec2Cloud:
    own = Ec2Settings(lock_dir=home / "lock", **sbom_settings)
    settings = EngineSettings(home=home, typed={Ec2Settings: own})
    return Ec2Cloud(settings)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def cloud(moto: MotoEc2, home: Path) -> Ec2Cloud:
    return backend(moto, home, sbom_bucket=TEST_SBOM_BUCKET)


def sent_to_s3(cloud: Ec2Cloud) -> list[Call]:
    """The S3 calls the backend's client makes from now on, with the parameters it gave."""
    calls: list[Call] = []

    def record(params: dict[str, Any], model: Any, **_: Any) -> None:
        calls.append(Call("s3", model.name, dict(params), status=200))

    cloud.clients.s3.meta.events.register("provide-client-params.s3", record)
    return calls


def spec_for(cloud: Ec2Cloud, base_ami: str, sbom: bytes | None = SBOM) -> ImageSpec:
    base = cloud.resolve_base(base_ami)
    return ImageSpec("hello-1.0", "hello", {"appversion": "hello-1.0"}, (), base, sbom=sbom)


def refused(calls: list[Call]) -> list[str]:
    verdicts = Evaluator(Policy.load(IAM_POLICY)).run(calls, judged=lambda call: True)
    return [verdict.reason for verdict in verdicts if not verdict.allowed]


def objects(moto: MotoEc2) -> list[str]:
    listed = moto.client("s3").list_objects_v2(Bucket=TEST_SBOM_BUCKET)
    return [item["Key"] for item in listed.get("Contents", ())]


def test_the_sbom_is_put_in_the_bucket_and_kept_on_the_host(
    moto: MotoEc2, cloud: Ec2Cloud, home: Path
) -> None:
    spec = spec_for(cloud, moto.base_image("debian-12-base", None))
    snapshot = Snapshot(moto.bake_snapshot("bake1"), "vol-1", 8 << 30)
    calls = sent_to_s3(cloud)
    with cloud.registered(snapshot, spec, "bake1") as image:
        pass
    key = f"sboms/{image.image_id}.cdx.json"
    [put] = calls
    assert put.action == "PutObject"
    assert (put.params["Bucket"], put.params["Key"]) == (TEST_SBOM_BUCKET, key)
    assert put.params["ContentType"] == MEDIA_TYPE
    digest = hashlib.sha256(put.params["Body"]).digest()
    assert digest == hashlib.sha256(SBOM).digest()
    assert put.params["ChecksumSHA256"] == base64.b64encode(digest).decode()
    stored = moto.client("s3").get_object(Bucket=TEST_SBOM_BUCKET, Key=key)
    assert stored["Body"].read() == SBOM and stored["ContentType"] == MEDIA_TYPE

    kept = home / "ec2" / "sboms" / REGION / f"{image.image_id}.cdx.json"
    assert kept.read_bytes() == SBOM
    assert stat.S_IMODE(kept.stat().st_mode) == 0o644
    assert cloud.image_sbom(image.image_id) == SBOM
    assert cloud.sbom_location(image.image_id) == f"s3://{TEST_SBOM_BUCKET}/{key}"
    assert refused(calls) == []


def test_a_failed_registration_removes_the_sbom_from_the_bucket_and_the_host(
    moto: MotoEc2, cloud: Ec2Cloud, home: Path
) -> None:
    spec = spec_for(cloud, moto.base_image("debian-12-base", None))
    snapshot = Snapshot(moto.bake_snapshot("bake1"), "vol-1", 8 << 30)
    calls = sent_to_s3(cloud)
    with pytest.raises(RuntimeError), cloud.registered(snapshot, spec, "bake1") as image:
        assert objects(moto) == [f"sboms/{image.image_id}.cdx.json"]
        raise RuntimeError("publish failed")
    assert [call.action for call in calls] == ["PutObject", "DeleteObject"]
    assert calls[1].params == {"Bucket": TEST_SBOM_BUCKET, "Key": calls[0].params["Key"]}
    assert objects(moto) == []
    assert list((home / "ec2" / "sboms" / REGION).iterdir()) == []
    assert made_by_bakes(moto.ec2)["images"] == []
    assert refused(calls) == []


def test_a_refused_upload_fails_the_registration_and_leaves_nothing(
    moto: MotoEc2, home: Path
) -> None:
    cloud = backend(moto, home, sbom_bucket="no-such-bucket", sbom_prefix="baked/")
    spec = spec_for(cloud, moto.base_image("debian-12-base", None))
    snapshot = Snapshot(moto.bake_snapshot("bake1"), "vol-1", 8 << 30)
    with (
        pytest.raises(CloudError, match=r"PutObject s3://no-such-bucket/baked/ami-\w+\.cdx\.json"),
        cloud.registered(snapshot, spec, "bake1"),
    ):
        pass
    assert made_by_bakes(moto.ec2)["images"] == []
    assert list((home / "ec2" / "sboms" / REGION).iterdir()) == []


def test_without_a_bucket_the_sbom_stays_on_the_host(moto: MotoEc2, home: Path) -> None:
    cloud = backend(moto, home)
    spec = spec_for(cloud, moto.base_image("debian-12-base", None))
    snapshot = Snapshot(moto.bake_snapshot("bake1"), "vol-1", 8 << 30)
    calls = sent_to_s3(cloud)
    with cloud.registered(snapshot, spec, "bake1") as image:
        pass
    kept = home / "ec2" / "sboms" / REGION / f"{image.image_id}.cdx.json"
    assert cloud.sbom_location(image.image_id) == str(kept)
    assert cloud.image_sbom(image.image_id) == SBOM
    assert calls == [] and objects(moto) == []


def test_an_image_without_an_sbom_has_none(moto: MotoEc2, cloud: Ec2Cloud, home: Path) -> None:
    base_ami = moto.base_image("debian-12-base", None)
    spec = spec_for(cloud, base_ami, sbom=None)
    snapshot = Snapshot(moto.bake_snapshot("bake1"), "vol-1", 8 << 30)
    with cloud.registered(snapshot, spec, "bake1") as image:
        pass
    for image_id in (image.image_id, base_ami):
        assert cloud.image_sbom(image_id) is None
        assert cloud.sbom_location(image_id) is None
    assert not (home / "ec2" / "sboms").exists() and objects(moto) == []


def test_the_policy_lets_sboms_go_only_under_the_prefix_of_the_bucket() -> None:
    def put(bucket: str, key: str) -> Call:
        return Call("s3", "PutObject", {"Bucket": bucket, "Key": key}, status=200)

    assert refused([put(TEST_SBOM_BUCKET, "sboms/ami-0123.cdx.json")]) == []
    assert len(refused([put(TEST_SBOM_BUCKET, "elsewhere/ami-0123.cdx.json")])) == 1
    assert len(refused([put("another-bucket", "sboms/ami-0123.cdx.json")])) == 1
    assert "SBOM_BUCKET" in IAM_POLICY.read_text()  # the operator's bucket goes there
