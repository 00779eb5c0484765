"""Base AMI resolution of the EC2 plugin, against moto in-process.

moto's gaps: RegisterImage keeps only Name and Description, so every image comes back without
an architecture, with RootDeviceType "standard" and a CreationDate of whole seconds.
``image()`` below registers through the API, then sets those attributes on moto's own record
(this patches moto 5.2 internals). Ties of CreationDate and states other than "available" are
tested on plain dicts against the pure ``choose_newest``/``check_usable``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from moto import mock_aws
from moto.core import DEFAULT_ACCOUNT_ID
from moto.ec2.models import ec2_backends

from aminator_ec2.images import (
    BaseImage,
    check_usable,
    choose_newest,
    ec2_architecture,
    ec2_clients,
    resolve_base_image,
)
from aminator_ng.api import CloudError, ConfigError, NotFoundError, RequestError

REGION = "us-east-1"
T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture(autouse=True)
def aws_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("AWS_PROFILE", "AWS_RETRY_MODE", "AWS_MAX_ATTEMPTS", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL_EC2", raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("MOTO_EC2_LOAD_DEFAULT_AMIS", "false")


@pytest.fixture
def aws() -> Any:
    with mock_aws():
        yield ec2_clients(REGION)


def image(
    clients: Any,
    name: str,
    *,
    created: datetime = T0,
    architecture: str = "x86_64",
    root_device_type: str = "ebs",
    owner_alias: str | None = None,
    owner_id: str | None = None,
) -> str:
    image_id = str(clients.ec2.register_image(Name=name)["ImageId"])
    ami = ec2_backends[DEFAULT_ACCOUNT_ID][REGION].amis[image_id]
    ami.architecture = architecture
    ami.root_device_type = root_device_type
    ami.creation_date = created
    ami.owner_alias = owner_alias
    if owner_id is not None:
        ami.owner_id = owner_id
    return image_id


def resolve(clients: Any, reference: str, **kwargs: Any) -> BaseImage:
    kwargs.setdefault("host_architecture", "x86_64")
    return resolve_base_image(clients.ec2, clients.ssm, reference, **kwargs)


def test_by_id(aws: Any) -> None:
    image_id = image(aws, "debian-12", created=T0)
    base = resolve(aws, image_id)
    assert (base.image_id, base.name, base.architecture) == (image_id, "debian-12", "x86_64")
    assert base.root_snapshot_id.startswith("snap-")
    assert base.as_image(REGION).created == T0
    assert base.as_image(REGION).snapshot_id == base.root_snapshot_id


def test_by_name_the_newest(aws: Any) -> None:
    image(aws, "debian-12", created=T0)
    newest = image(aws, "debian-12", created=T0 + timedelta(days=2))
    image(aws, "debian-12", created=T0 + timedelta(days=1))
    image(aws, "debian-13", created=T0 + timedelta(days=3))
    assert resolve(aws, "debian-12").image_id == newest


def test_by_name_and_filters(aws: Any) -> None:
    wanted = image(aws, "debian-12", created=T0)
    image(aws, "debian-12", created=T0 + timedelta(days=1), architecture="arm64")
    base = resolve(aws, "debian-12", filters={"architecture": "x86_64"})
    assert base.image_id == wanted


def test_by_filters_alone(aws: Any) -> None:
    image(aws, "debian-12", created=T0)
    newest = image(aws, "ubuntu-24.04", created=T0 + timedelta(days=1))
    assert resolve(aws, "", filters={"architecture": "x86_64"}).image_id == newest


def test_owners_default_to_self_and_amazon(aws: Any) -> None:
    other_account = "210987654321"
    ours = image(aws, "debian-12", created=T0)
    amazons = image(aws, "al2023", created=T0, owner_alias="amazon", owner_id="137112412989")
    image(aws, "debian-12", created=T0 + timedelta(days=1), owner_id=other_account)
    assert resolve(aws, "debian-12").image_id == ours
    assert resolve(aws, "al2023").image_id == amazons
    with pytest.raises(NotFoundError):
        resolve(aws, "al2023", owners=["self"])
    newest = resolve(aws, "debian-12", owners=[other_account]).image_id
    assert newest != ours


def test_by_ssm_parameter(aws: Any) -> None:
    image_id = image(aws, "al2023-ami-kernel-default-x86_64")
    # moto, like AWS, refuses to put parameters under /aws/: the rule is the same for any path.
    path = "/bakery/base/al2023-ami-kernel-default-x86_64"
    aws.ssm.put_parameter(Name=path, Value=image_id, Type="String", DataType="aws:ec2:image")
    assert resolve(aws, f"resolve:ssm:{path}").image_id == image_id


def test_a_missing_ssm_parameter_is_not_found(aws: Any) -> None:
    with pytest.raises(NotFoundError, match="/aws/service/nothing") as raised:
        resolve(aws, "resolve:ssm:/aws/service/nothing")
    assert raised.value.exit_code == 2


def test_an_ssm_parameter_without_an_image_id_is_refused(aws: Any) -> None:
    aws.ssm.put_parameter(Name="/not/an/ami", Value="hello", Type="String")
    with pytest.raises(RequestError, match="not an image id"):
        resolve(aws, "resolve:ssm:/not/an/ami")


def test_unknown_and_malformed_ids(aws: Any) -> None:
    with pytest.raises(NotFoundError, match="ami-12345678") as raised:
        resolve(aws, "ami-12345678")
    assert raised.value.exit_code == 2
    with pytest.raises(RequestError, match="ami-nope") as bad:
        resolve(aws, "ami-nope")
    assert bad.value.exit_code == 2


def test_an_unknown_name_names_the_name_owners_and_filters(aws: Any) -> None:
    with pytest.raises(NotFoundError) as raised:
        resolve(aws, "debian-99", filters={"architecture": "arm64"})
    message = raised.value.message
    assert "name=debian-99" in message
    assert "architecture=arm64" in message
    assert "self, amazon" in message
    assert raised.value.exit_code == 2


def test_no_owners_is_refused(aws: Any) -> None:
    with pytest.raises(ConfigError):
        resolve(aws, "debian-12", owners=[])


def test_an_instance_store_image_is_refused(aws: Any) -> None:
    image_id = image(aws, "old", root_device_type="instance-store")
    with pytest.raises(RequestError, match="not EBS-backed") as raised:
        resolve(aws, image_id)
    assert raised.value.exit_code == 2


@pytest.mark.parametrize("machine", ["x86_64", "aarch64"])
def test_an_image_of_another_architecture_is_refused(aws: Any, machine: str) -> None:
    image_arch = "arm64" if machine == "x86_64" else "x86_64"
    image_id = image(aws, "base", architecture=image_arch)
    with pytest.raises(RequestError, match=f"is {image_arch}; this host runs"):
        resolve(aws, image_id, host_architecture=machine)


def test_an_arm64_image_on_an_aarch64_host(aws: Any) -> None:
    image_id = image(aws, "base", architecture="arm64")
    assert resolve(aws, image_id, host_architecture="aarch64").architecture == "arm64"


def test_other_aws_errors_are_cloud_errors(aws: Any) -> None:
    with Stubber(aws.ec2) as stub:
        stub.add_client_error("describe_images", "UnauthorizedOperation", "not allowed")
        with pytest.raises(CloudError, match="UnauthorizedOperation: not allowed") as raised:
            resolve(aws, "ami-0123456789abcdef0")
    assert raised.value.exit_code == 1


# moto cannot register two images with one CreationDate on demand, nor hold one in another
# state than "available": these rules are tested on DescribeImages dicts.


def described(image_id: str, created: str, **extra: Any) -> dict[str, Any]:
    return {
        "ImageId": image_id,
        "Name": "base",
        "CreationDate": created,
        "State": "available",
        "Architecture": "x86_64",
        "RootDeviceType": "ebs",
        "RootDeviceName": "/dev/xvda",
        "BlockDeviceMappings": [{"DeviceName": "/dev/xvda", "Ebs": {"SnapshotId": "snap-1"}}],
        **extra,
    }


def test_the_newest_two_tying_is_refused_naming_both() -> None:
    images = [
        described("ami-old", "2026-01-01T00:00:00.000Z"),
        described("ami-a", "2026-02-01T00:00:00.000Z"),
        described("ami-b", "2026-02-01T00:00:00.000Z"),
    ]
    with pytest.raises(RequestError) as raised:
        choose_newest(images, "name=base")
    assert "ami-a" in raised.value.message and "ami-b" in raised.value.message
    assert raised.value.hint is not None and "-B ami-" in raised.value.hint
    assert raised.value.exit_code == 2


def test_an_older_tie_does_not_matter() -> None:
    images = [
        described("ami-a", "2026-01-01T00:00:00.000Z"),
        described("ami-b", "2026-01-01T00:00:00.000Z"),
        described("ami-new", "2026-01-01T00:00:01.000Z"),
    ]
    assert choose_newest(images, "name=base")["ImageId"] == "ami-new"


@pytest.mark.parametrize("state", ["pending", "failed", "deregistered", "disabled"])
def test_an_image_that_is_not_available_is_refused(state: str) -> None:
    with pytest.raises(RequestError, match=f"is {state}, not available"):
        check_usable(described("ami-a", "2026-01-01T00:00:00Z", State=state), "x86_64")


def test_an_image_without_a_root_snapshot_is_refused() -> None:
    image = described("ami-a", "2026-01-01T00:00:00Z", BlockDeviceMappings=[])
    with pytest.raises(RequestError, match="no snapshot"):
        check_usable(image, "x86_64")


def test_base_image_keeps_the_attributes_registration_inherits() -> None:
    image = described(
        "ami-a",
        "2026-01-01T00:00:00Z",
        EnaSupport=True,
        SriovNetSupport="simple",
        BootMode="uefi-preferred",
        TpmSupport="v2.0",
        ImdsSupport="v2.0",
        VirtualizationType="hvm",
        Tags=[{"Key": "os", "Value": "debian"}],
    )
    image["BlockDeviceMappings"][0]["Ebs"]["VolumeSize"] = 8
    base = BaseImage.from_description(image)
    assert base.ena_support and base.sriov_net_support == "simple"
    assert (base.boot_mode, base.tpm_support, base.imds_support) == (
        "uefi-preferred",
        "v2.0",
        "v2.0",
    )
    assert base.root_volume_size_gib == 8
    assert base.tags == {"os": "debian"}


def test_ec2_architecture_names() -> None:
    assert ec2_architecture("x86_64") == "x86_64"
    assert ec2_architecture("aarch64") == "arm64"


def test_clients_default_to_standard_retries() -> None:
    clients = ec2_clients(REGION)
    assert clients.ec2.meta.config.retries["mode"] == "standard"
    assert clients.region == REGION


def test_clients_honour_the_retry_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_RETRY_MODE", "adaptive")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "7")
    clients = ec2_clients(REGION)
    assert clients.ec2.meta.config.retries["mode"] == "adaptive"
    assert clients.ec2.meta.config.retries["total_max_attempts"] == 7


def test_clients_honour_endpoint_urls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:5000")
    monkeypatch.setenv("AWS_ENDPOINT_URL_EC2", "http://127.0.0.1:5001")
    clients = ec2_clients(REGION)
    assert clients.ec2.meta.endpoint_url == "http://127.0.0.1:5001"
    assert clients.ssm.meta.endpoint_url == "http://127.0.0.1:5000"


def test_an_unknown_profile_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_PROFILE", "no-such-profile")
    with pytest.raises(ConfigError) as raised:
        ec2_clients(REGION, session=None)
    assert raised.value.exit_code == 2


def test_boto3_is_what_builds_the_session() -> None:
    session = boto3.session.Session(region_name=REGION)
    assert ec2_clients(None, session=session).region == REGION
