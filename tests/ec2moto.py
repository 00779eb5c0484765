"""EC2 as the tests see it: a moto server in this process, with what moto leaves out put back.

- Every call the server answers is recorded with the parameters the client sent, so tests assert
  what the engine asked for (RegisterImage above all: moto keeps only its Name and Description).
- RegisterImage is made to keep what AWS keeps (root device, mappings with their snapshot,
  architecture, boot attributes, tags), so that a registered base AMI describes like a real one.
- ``Udev`` plays the kernel and udev: when the working volume is attached through the API, a loop
  device over a copy of the data behind the volume's source snapshot appears where the engine
  looks for it, and goes on detach; a snapshot of the volume is backed by a copy of its data.
- The instance metadata service answers with a real instance of the server.
- The tests' own client signs with ``FIXTURE_KEY``, so the calls the engine made are told apart
  from the setup. On a clean exit of ``moto_ec2``, every call the engine made must be allowed by
  the documented IAM policy, as tests/iampolicy.py judges it (moto does not evaluate IAM); calls
  signed with ``PROBE_KEY`` are a test's own questions to the policy, judged by the test.

This patches moto 5.2 internals (setup.cfg pins it).
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import subprocess
import threading
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import botocore.config
import pytest
from moto.core.responses import ActionResult, BaseResponse
from moto.ec2.exceptions import InvalidParameterValueError
from moto.ec2.models import ec2_backends
from moto.ec2.models.amis import Ami
from moto.ec2.responses.amis import AmisResponse
from moto.ec2.responses.elastic_block_store import ElasticBlockStore
from moto.instance_metadata import responses as instance_metadata
from moto.instance_metadata import urls as instance_metadata_urls
from moto.server import ThreadedMotoServer

from aminator_ec2.backend import Ec2Cloud
from aminator_ec2.plugin import Ec2Settings
from aminator_ng.api import EngineSettings, Image, ImageSpec

REGION = "us-east-1"
ZONE = "us-east-1b"
#: The access key of the tests' own client; the engine signs with another (``ENGINE_KEY``).
#: moto reads a key from a request only if it has AWS's shape: 20 capitals and digits.
FIXTURE_KEY = "AKIAFIXTURE000000000"
ENGINE_KEY = "AKIAENGINE0000000000"
PROBE_KEY = "AKIAPROBE00000000000"
#: The least-privilege IAM policy of the EC2 backend, as the operator guide gives it.
IAM_POLICY = Path(__file__).resolve().parents[1] / "docs" / "ec2-iam-policy.json"


def policy_actions() -> set[str]:
    policy = json.loads(IAM_POLICY.read_text())
    return {action for statement in policy["Statement"] for action in statement["Action"]}


@dataclass
class Call:
    """One request the server answered: who signed it, what it asked, what it was answered."""

    service: str
    action: str
    params: dict[str, Any]
    access_key: str = ENGINE_KEY
    status: int = 0
    answer: str = ""
    region: str = REGION


@dataclass
class Udev:
    """Block devices for attached volumes, made of files under ``root``.

    ``mode`` is how the device shows: "nvme" (a namespace whose sysfs serial is the volume id),
    "xvd" (the attachment point's Xen name), or "never" (it does not show at all).
    """

    root: Path
    device_root: Path
    sysfs_root: Path
    mode: str = "nvme"
    #: A block device shown for a volume with no data behind it (a test that never reads it).
    stand_in: Path | None = None
    #: Whether a volume's data is as large as the volume, as EBS shows it: the snapshot's data
    #: extended (sparse) to the volume's size. Off, it is the snapshot's data as it is.
    sized_volumes: bool = False
    #: Snapshot id -> the raw file that holds its data.
    data: dict[str, Path] = field(default_factory=dict)
    #: Volume id -> (loop device, the names made for it).
    attached: dict[str, tuple[str, list[Path]]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def volume_file(self, volume_id: str) -> Path:
        return self.root / "volumes" / f"{volume_id}.raw"

    def attach(
        self, volume_id: str, source_snapshot: str | None, point: str, size_gib: int = 0
    ) -> None:
        if self.mode == "never":
            return
        if source_snapshot in self.data:
            size = size_gib << 30 if self.sized_volumes else 0
            device = self._loop_device(volume_id, self.data[source_snapshot], size)
        elif self.stand_in is not None:
            device = str(self.stand_in)
        else:
            return
        with self.lock:
            made: list[Path] = []
            if self.mode == "nvme":
                index = 1 + max((int(p.name[4:-2]) for p in self._namespaces()), default=0)
                namespace = f"nvme{index}n1"
                serial = self.sysfs_root / "block" / namespace / "device" / "serial"
                serial.parent.mkdir(parents=True)
                # The kernel pads the serial with spaces.
                serial.write_text(volume_id.replace("-", "").ljust(20) + "\n")
                made.append(serial.parent.parent)
                name = namespace
            else:
                name = "xvd" + point.removeprefix("/dev/sd")
            node = self.device_root / name
            node.parent.mkdir(parents=True, exist_ok=True)
            node.symlink_to(device)
            made.append(node)
            self.attached[volume_id] = (device, made)

    def _loop_device(self, volume_id: str, source: Path, size_bytes: int) -> str:
        data = self.volume_file(volume_id)
        if not data.exists():
            data.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run(["cp", "--sparse=always", str(source), str(data)], check=True)
            if size_bytes > data.stat().st_size:
                os.truncate(data, size_bytes)
        return subprocess.run(
            ["losetup", "--find", "--show", str(data)], check=True, capture_output=True, text=True
        ).stdout.strip()

    def _namespaces(self) -> list[Path]:
        return list((self.sysfs_root / "block").glob("nvme*n1"))

    def detach(self, volume_id: str) -> None:
        with self.lock:
            loop, made = self.attached.pop(volume_id, ("", []))
            for path in made:
                if path.is_symlink() or path.is_file():
                    path.unlink()
                else:
                    subprocess.run(["rm", "-rf", str(path)], check=True)
        if loop and loop != str(self.stand_in):
            subprocess.run(["partx", "-d", loop], check=False, capture_output=True)
            subprocess.run(["losetup", "-d", loop], check=True)

    def snapshot(self, volume_id: str, snapshot_id: str) -> None:
        source = self.volume_file(volume_id)
        if source.exists():
            copy = self.root / "snapshots" / f"{snapshot_id}.raw"
            copy.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run(["cp", "--sparse=always", str(source), str(copy)], check=True)
            self.data[snapshot_id] = copy

    def delete(self, volume_id: str) -> None:
        self.volume_file(volume_id).unlink(missing_ok=True)

    def release(self) -> None:
        for volume_id in list(self.attached):
            self.detach(volume_id)


def _wrap(
    monkeypatch: pytest.MonkeyPatch,
    cls: type,
    name: str,
    after: Callable[[Any, Any], None],
) -> None:
    """Patch ``cls.name`` to call ``after(response_object, result)`` once the original ran."""
    original = getattr(cls, name)

    def wrapped(self: Any) -> Any:
        result = original(self)
        after(self, result)
        return result

    monkeypatch.setattr(cls, name, wrapped)


def _request_params(response: BaseResponse) -> dict[str, Any]:
    """The parameters of a request: its JSON body for JSON protocols (SSM), else moto's parse."""
    if "json" in str(response.headers.get("Content-Type", "")):
        params: dict[str, Any] = json.loads(response.body or "{}")
        return params
    return dict(response._get_params())


def _tags_of(params: dict[str, Any], resource_type: str) -> dict[str, str]:
    tags: dict[str, str] = {}
    for spec in params.get("TagSpecifications", ()):
        if spec.get("ResourceType") == resource_type:
            tags.update({tag["Key"]: tag["Value"] for tag in spec.get("Tags", ())})
    return tags


class MotoEc2:
    """A moto server for EC2 and SSM with the patches above; see the module docstring."""

    #: The bake host's instance id, for the tests that ran ``host_instance``.
    instance_id: str = ""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, root: Path) -> None:
        self.root = root
        self.calls: list[Call] = []
        #: What GetImageBlockPublicAccessState answers: "unblocked" or "block-new-sharing".
        self.image_block_public_access = "unblocked"
        self.udev = Udev(root / "udev", root / "dev", root / "sys")
        self.udev.device_root.mkdir(parents=True)
        (self.udev.sysfs_root / "block").mkdir(parents=True)
        monkeypatch.setenv("MOTO_EC2_LOAD_DEFAULT_AMIS", "false")
        self._patch(monkeypatch)
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.server.start()
        host, port = self.server.get_host_and_port()
        self.url = f"http://{host}:{port}"
        urllib.request.urlopen(urllib.request.Request(f"{self.url}/moto-api/reset", method="POST"))
        self.ec2 = self.client("ec2")
        self.ssm = self.client("ssm")

    def stop(self) -> None:
        self.udev.release()
        self.server.stop()

    def client(self, service: str, access_key: str = FIXTURE_KEY, region: str = REGION) -> Any:
        """A client for the tests' own calls, signed with ``access_key``."""
        return boto3.client(
            service,
            region_name=region,
            endpoint_url=self.url,
            aws_access_key_id=access_key,
            aws_secret_access_key="testing",
            config=botocore.config.Config(retries={"max_attempts": 1}),
        )

    def environment(self, config_dir: Path) -> dict[str, str]:
        """What ``aminate`` needs to reach this server and play on this host's udev."""
        return {
            "AWS_ENDPOINT_URL": self.url,
            "AWS_EC2_METADATA_SERVICE_ENDPOINT": self.url + "/",
            "AWS_ACCESS_KEY_ID": ENGINE_KEY,
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_MAX_ATTEMPTS": "1",
            "AWS_CONFIG_FILE": str(config_dir / "aws-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(config_dir / "aws-credentials"),
            "AMINATOR_CLOUD": "ec2",
            "AMINATOR_EC2_DEVICE_ROOT": str(self.udev.device_root),
            "AMINATOR_EC2_SYSFS_ROOT": str(self.udev.sysfs_root),
            "AMINATOR_EC2_LOCK_DIR": str(self.root / "lock"),
        }

    def actions(self) -> set[str]:
        """The IAM names of the calls the engine made: ``ec2:CreateVolume``."""
        return {f"{call.service}:{call.action}" for call in self.engine_calls()}

    def requests(self, action: str) -> list[dict[str, Any]]:
        return [call.params for call in self.calls if call.action == action]

    def engine_calls(self) -> list[Call]:
        """The calls not made by the tests' own clients."""
        return [call for call in self.calls if call.access_key not in (FIXTURE_KEY, PROBE_KEY)]

    def use_in_process(self, monkeypatch: pytest.MonkeyPatch, config_dir: Path) -> None:
        """Point this process's AWS settings at the server, as ``environment`` does a CLI's."""
        for name, value in self.environment(config_dir).items():
            monkeypatch.setenv(name, value)
        for name in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE", "AWS_RETRY_MODE"):
            monkeypatch.delenv(name, raising=False)

    def backend(self, lock_dir: Path, **settings: Any) -> Ec2Cloud:
        """The EC2 backend of this process, looking for devices where ``udev`` makes them, with
        other ``[plugins.ec2]`` settings given by name."""
        own = Ec2Settings(
            attach_timeout=1.0,
            device_root=self.udev.device_root,
            sysfs_root=self.udev.sysfs_root,
            lock_dir=lock_dir,
            **settings,
        )
        settings = EngineSettings(typed={Ec2Settings: own})
        return Ec2Cloud(settings)

    def instance_profile(self, monkeypatch: pytest.MonkeyPatch, **replaced: str) -> None:
        """Have the metadata service hand out other instance-profile credentials or IMDSv2 token:
        ``replaced`` maps what moto serves (``test-secret-key``, ``fake-imdsv2-token``...) to
        what to serve instead. Takes effect for a server that has not answered IMDS yet."""
        route = "{0}/(?P<path>.+)"
        original = instance_metadata_urls.url_paths[route]

        def replacing(request: Any, full_url: str, headers: Any) -> Any:
            status, response_headers, body = original(request, full_url, headers)
            text = body.decode() if isinstance(body, bytes) else str(body)
            for served, instead in replaced.items():
                text = text.replace(served, instead)
            return status, response_headers, text

        monkeypatch.setitem(instance_metadata_urls.url_paths, route, replacing)

    # The host and its base images.

    def host_instance(self, monkeypatch: pytest.MonkeyPatch) -> str:
        """Run an instance to be the bake host, and have the metadata service say so."""
        host_image = self.ec2.register_image(
            Name="bake-host",
            RootDeviceName="/dev/xvda",
            BlockDeviceMappings=[{"DeviceName": "/dev/xvda", "Ebs": {"VolumeSize": 8}}],
        )["ImageId"]
        instance = self.ec2.run_instances(
            ImageId=host_image,
            MinCount=1,
            MaxCount=1,
            Placement={"AvailabilityZone": ZONE},
        )["Instances"][0]
        metadata = instance_metadata.INSTANCE_METADATA
        monkeypatch.setitem(metadata, "instance-id", instance["InstanceId"])
        monkeypatch.setitem(metadata, "placement/availability-zone", ZONE)
        monkeypatch.setitem(metadata, "placement/region", REGION)
        self.calls.clear()
        return str(instance["InstanceId"])

    def base_image(
        self,
        name: str,
        raw: Path | None,
        extra_mappings: tuple[dict[str, Any], ...] = (),
        size_gib: int = 8,
        **attributes: Any,
    ) -> str:
        """A base AMI whose root snapshot holds the raw disk ``raw`` (None: no data), of a root
        volume of ``size_gib``."""
        volume = self.ec2.create_volume(AvailabilityZone=ZONE, Size=size_gib)["VolumeId"]
        snapshot = self.ec2.create_snapshot(VolumeId=volume)["SnapshotId"]
        self.ec2.delete_volume(VolumeId=volume)
        if raw is not None:
            self.udev.data[snapshot] = raw
        request: dict[str, Any] = {
            "Name": name,
            "Architecture": "x86_64",
            "RootDeviceName": "/dev/xvda",
            "VirtualizationType": "hvm",
            "BlockDeviceMappings": [
                {
                    "DeviceName": "/dev/xvda",
                    "Ebs": {"SnapshotId": snapshot, "VolumeSize": size_gib, "VolumeType": "gp3"},
                },
                *extra_mappings,
            ],
            "EnaSupport": True,
            **attributes,
        }
        image_id = str(self.ec2.register_image(**request)["ImageId"])
        self.calls.clear()
        return image_id

    def bake_snapshot(self, bake_id: str) -> str:
        """A snapshot with the tags a bake's snapshot gets at its creation, and no data."""
        volume = self.ec2.create_volume(AvailabilityZone=ZONE, Size=8)["VolumeId"]
        tags = [
            {"Key": "aminator-ng:bake-id", "Value": bake_id},
            {"Key": "aminator-ng:purpose", "Value": "snapshot"},
        ]
        snapshot = self.ec2.create_snapshot(
            VolumeId=volume, TagSpecifications=[{"ResourceType": "snapshot", "Tags": tags}]
        )["SnapshotId"]
        self.ec2.delete_volume(VolumeId=volume)
        return str(snapshot)

    # The patches.

    def _patch_publishing(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """The calls moto 5.2 lacks, played as EC2 documents them: deprecation and
        deregistration protection kept on moto's image (a protected image cannot be
        deregistered), and the account's image block public access state."""
        server = self

        def enable_image_deprecation(response: Any) -> ActionResult:
            ami = response.ec2_backend.amis[response._get_param("ImageId")]
            ami.deprecation_time = response._get_param("DeprecateAt")
            return ActionResult({"Return": True})

        def enable_image_deregistration_protection(response: Any) -> ActionResult:
            ami = response.ec2_backend.amis[response._get_param("ImageId")]
            cooldown = response._get_param("WithCooldown") in (True, "true")
            ami.deregistration_protection = "enabled-with-cooldown" if cooldown else "enabled"
            return ActionResult({"Return": "enabled"})

        def disable_image_deregistration_protection(response: Any) -> ActionResult:
            ami = response.ec2_backend.amis[response._get_param("ImageId")]
            if getattr(ami, "deregistration_protection", "") != "enabled-with-cooldown":
                ami.deregistration_protection = "disabled"
            return ActionResult({"Return": "disabled"})

        def get_image_block_public_access_state(response: Any) -> ActionResult:
            return ActionResult({"ImageBlockPublicAccessState": server.image_block_public_access})

        for handler in (
            enable_image_deprecation,
            enable_image_deregistration_protection,
            disable_image_deregistration_protection,
            get_image_block_public_access_state,
        ):
            monkeypatch.setattr(AmisResponse, handler.__name__, handler, raising=False)

        original_deregister = AmisResponse.deregister_image

        def deregister_image(response: Any) -> Any:
            ami = response.ec2_backend.amis.get(response._get_param("ImageId"))
            if getattr(ami, "deregistration_protection", "disabled") != "disabled":
                raise InvalidParameterValueError(f"Image {ami.id} is protected from deregistration")
            return original_deregister(response)

        monkeypatch.setattr(AmisResponse, "deregister_image", deregister_image)

    def _patch(self, monkeypatch: pytest.MonkeyPatch) -> None:
        original_call_action = BaseResponse.call_action
        calls = self.calls

        def recorded(response: BaseResponse) -> Any:
            call = None
            with contextlib.suppress(Exception):
                call = Call(
                    str(response.service_name),
                    response._get_action(),
                    _request_params(response),
                    access_key=response.get_access_key(),
                    region=str(response.region),
                )
                calls.append(call)
            answer = original_call_action(response)
            if call is not None and isinstance(answer, tuple) and len(answer) == 3:
                status, _headers, body = answer
                call.status = int(status)
                call.answer = body.decode() if isinstance(body, bytes) else str(body)
            return answer

        monkeypatch.setattr(BaseResponse, "call_action", recorded)

        def registered(response: Any, result: Any) -> None:
            params = response._get_params()
            ami = response.ec2_backend.amis[result.result["ImageId"]]
            ami.architecture = params.get("Architecture", "x86_64")
            ami.root_device_name = params.get("RootDeviceName", "/dev/sda1")
            ami.root_device_type = "ebs"
            ami.virtualization_type = params.get("VirtualizationType", "hvm")
            ami.boot_mode = params.get("BootMode")
            ami.ena_support = params.get("EnaSupport", False)
            ami.sriov = ami.sriov_net_support = params.get("SriovNetSupport")
            ami.tpm_support = ami.tmp = params.get("TpmSupport")
            ami.imds_support = ami.imds = params.get("ImdsSupport")
            ami.uefi = params.get("UefiData")
            ami.registered_mappings = params.get("BlockDeviceMappings", [])
            ami.add_tags(_tags_of(params, "image"))

        _wrap(monkeypatch, AmisResponse, "register_image", registered)

        def copied(response: Any, result: Any) -> None:
            # moto's CopyImage keeps only the name and description: the copy gets the source's
            # root device and attributes, its mappings on the copy's own snapshot, and the tags
            # and encryption asked for.
            params = response._get_params()
            ami = response.ec2_backend.amis[result.result["ImageId"]]
            source = ec2_backends[response.current_account][params["SourceRegion"]].amis[
                params["SourceImageId"]
            ]
            for attribute in ("root_device_name", "boot_mode", "ena_support", "sriov"):
                setattr(ami, attribute, getattr(source, attribute, None))
            ami.root_device_type = "ebs"
            ami.registered_mappings = [
                {**m, "Ebs": {**m.get("Ebs", {}), "SnapshotId": ami.ebs_snapshot.id}}
                if m.get("DeviceName") == source.root_device_name
                else m
                for m in getattr(source, "registered_mappings", [])
            ]
            ami.add_tags(_tags_of(params, "image"))
            ami.ebs_snapshot.add_tags(_tags_of(params, "snapshot"))
            ami.ebs_snapshot.encrypted = params.get("Encrypted") in (True, "true")
            ami.ebs_snapshot.kms_key_id = params.get("KmsKeyId")

        _wrap(monkeypatch, AmisResponse, "copy_image", copied)

        def mappings(ami: Any) -> list[dict[str, Any]]:
            recorded_mappings = getattr(ami, "registered_mappings", None)
            return recorded_mappings or original_mappings.fget(ami)

        original_mappings = Ami.block_device_mappings
        monkeypatch.setattr(Ami, "block_device_mappings", property(mappings))

        udev = self.udev

        def attached(response: Any, result: Any) -> None:
            volume = response.ec2_backend.volumes[response._get_param("VolumeId")]
            udev.attach(volume.id, volume.snapshot_id, response._get_param("Device"), volume.size)

        def detached(response: Any, result: Any) -> None:
            udev.detach(response._get_param("VolumeId"))

        def snapshotted(response: Any, result: Any) -> None:
            udev.snapshot(response._get_param("VolumeId"), result.result.id)

        def deleted(response: Any, result: Any) -> None:
            udev.delete(response._get_param("VolumeId"))

        self._patch_publishing(monkeypatch)
        _wrap(monkeypatch, ElasticBlockStore, "attach_volume", attached)
        _wrap(monkeypatch, ElasticBlockStore, "detach_volume", detached)
        _wrap(monkeypatch, ElasticBlockStore, "create_snapshot", snapshotted)
        _wrap(monkeypatch, ElasticBlockStore, "delete_volume", deleted)


@contextlib.contextmanager
def moto_ec2(monkeypatch: pytest.MonkeyPatch, root: Path) -> Iterator[MotoEc2]:
    moto = MotoEc2(monkeypatch, root)
    try:
        yield moto
        refused = refused_calls(moto)
        assert not refused, "the IAM policy refuses calls the engine made:\n" + "\n".join(refused)
    finally:
        moto.stop()


@contextlib.contextmanager
def moto_on_this_host(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[MotoEc2]:
    """The server of ``moto_ec2`` with this process as its bake host: an instance of its own,
    a stand-in block device for every attached volume, and the engine's clients in-process."""
    with moto_ec2(monkeypatch, tmp_path / "ec2") as server:
        server.instance_id = server.host_instance(monkeypatch)
        server.udev.stand_in = some_block_device()
        server.use_in_process(monkeypatch, tmp_path)
        yield server


def refused_calls(moto: MotoEc2) -> list[str]:
    """What the documented IAM policy would refuse of the calls the engine made, each saying why.
    The fixtures' calls are the world the engine's act on, never judged; probes are left out."""
    # Imported here: tests/iampolicy.py imports this module's Call.
    from tests.iampolicy import Evaluator, Policy

    engine = {id(call) for call in moto.engine_calls()}
    calls = [call for call in moto.calls if call.access_key != PROBE_KEY]
    verdicts = Evaluator(Policy.load(IAM_POLICY)).run(calls, judged=lambda c: id(c) in engine)
    return [verdict.reason for verdict in verdicts if not verdict.allowed]


def some_block_device() -> Path:
    """Any block device of this host (to stand in for a volume nothing reads), else a skip."""
    for candidate in sorted(Path("/dev").iterdir()):
        try:
            if stat.S_ISBLK(candidate.stat().st_mode):
                return candidate
        except OSError:
            continue
    pytest.skip("this host shows no block device in /dev")


def bake_with_backend(cloud: Ec2Cloud, base_ami: str, bake_id: str) -> Image:
    """What a bake asks of the EC2 backend, in the order aminator_ng/pipeline/bake.py asks it, with
    nothing mounted or installed: the volume is deleted once snapshotted, the rest is kept."""
    base = cloud.resolve_base(base_ami)
    name = f"hello-1.0-1-{bake_id}"
    description = f"{name}, from {base.name}"
    with contextlib.ExitStack() as stack:
        volume_stack = stack.enter_context(contextlib.ExitStack())
        volume = volume_stack.enter_context(cloud.volume(base, bake_id))
        with cloud.attached(volume, bake_id):
            cloud.check_name_available(name)
        tags = {"appversion": "hello-1.0-1", "base_image_id": base.image_id}
        spec = ImageSpec(name, description, tags, (), base)
        snapshot = stack.enter_context(cloud.image_snapshot(volume, bake_id, spec))
        volume_stack.close()
        return stack.enter_context(cloud.registered(snapshot, spec, bake_id))


def made_by_bakes(ec2: Any) -> dict[str, list[str]]:
    """What carries the engine's bake-id tag: volumes, snapshots and images."""
    tagged = [{"Name": "tag-key", "Values": ["aminator-ng:bake-id"]}]
    return {
        "volumes": [v["VolumeId"] for v in ec2.describe_volumes(Filters=tagged)["Volumes"]],
        "snapshots": [
            s["SnapshotId"]
            for s in ec2.describe_snapshots(OwnerIds=["self"], Filters=tagged)["Snapshots"]
        ],
        "images": [
            i["ImageId"] for i in ec2.describe_images(Owners=["self"], Filters=tagged)["Images"]
        ],
    }
