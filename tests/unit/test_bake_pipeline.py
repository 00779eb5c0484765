"""The bake's declared pipeline over a fake host and a fake cloud, without root: the order of its
steps, the teardown after a fault at the start or end of any step, after SIGINT, SIGTERM or
SIGHUP at the start, middle or end of any step, and what a preserved failure keeps.

Every outcome is checked against what the fakes still hold: no namespace, mount, chroot or
attachment, and either a complete image (with its snapshot) or nothing at all; and against the
bake records: none left by a bake that ended."""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from aminator_ng.contract.cloud import CloudBackend, Leftover
from aminator_ng.contract.hookspecs import hookimpl
from aminator_ng.contract.model import (
    Distro,
    HygieneOutcome,
    Image,
    ImageSpec,
    ManifestEntry,
    PackageInfo,
    PackageRequest,
    SbomPackage,
    Snapshot,
    Volume,
)
from aminator_ng.contract.plugins import load_plugins
from aminator_ng.contract.provisioner import Provisioner
from aminator_ng.contract.request import BakeRequest
from aminator_ng.contract.settings import EngineSettings
from aminator_ng.errors import (
    EXIT_SIGHUP,
    EXIT_SIGINT,
    EXIT_SIGTERM,
    InjectedFault,
    Interrupted,
    RequestError,
)
from aminator_ng.host.chroot import Chroot
from aminator_ng.host.signals import interrupts_raised
from aminator_ng.pipeline import steps as steps_module
from aminator_ng.pipeline.bake import BAKE_PIPELINE, Bake, SecretFoundError
from aminator_ng.pipeline.host_seam import MountedRoot
from aminator_ng.pipeline.recovery import bake_records
from aminator_ng.pipeline.secret_scan import HostTraces

SIGNALS = {"SIGINT": EXIT_SIGINT, "SIGTERM": EXIT_SIGTERM, "SIGHUP": EXIT_SIGHUP}


@dataclass
class Interrupter:
    """Sends this process a signal when the bake reaches ``point`` ("install:middle", say)."""

    point: str | None = None
    signal_name: str = "SIGTERM"
    reached: list[str] = field(default_factory=list)

    def at(self, point: str) -> None:
        self.reached.append(point)
        if point == self.point:
            os.kill(os.getpid(), getattr(signal, self.signal_name))


@dataclass
class World:
    """What the fakes hold right now."""

    interrupter: Interrupter
    live: set[str] = field(default_factory=set)
    volumes: dict[str, Volume] = field(default_factory=dict)
    snapshots: dict[str, Snapshot] = field(default_factory=dict)
    images: dict[str, Image] = field(default_factory=dict)
    #: What the install writes into the image: path inside it, content.
    installs: dict[str, bytes] = field(default_factory=dict)
    #: What each registered image was registered with.
    specs: dict[str, ImageSpec] = field(default_factory=dict)
    #: Whether the root was grown into its volume when it was mounted.
    grown: bool = False

    @contextlib.contextmanager
    def holding(self, what: str) -> Iterator[None]:
        self.interrupter.at(f"{what}:middle")
        self.live.add(what)
        try:
            yield
        finally:
            self.live.discard(what)
            self.interrupter.at(f"{RELEASES[what]}:middle")


#: The release step of each thing the fakes hold.
RELEASES = {
    "namespace": "namespace_end",
    "attach": "detach",
    "mount": "unmount",
    "chroot_setup": "chroot_teardown",
}


class FakeHost:
    def __init__(self, world: World, root: Path) -> None:
        self.world = world
        self.root = root

    def require(self, action: str, tools: Sequence[str]) -> None:
        pass

    def require_tools(self, tools: Sequence[str]) -> None:
        pass

    @contextlib.contextmanager
    def namespace(self, work_dir: Path) -> Iterator[object]:
        with self.world.holding("namespace"):
            yield object()

    @contextlib.contextmanager
    def mounted_root(
        self, device: Path, mount_point: Path, *, grow: bool = False
    ) -> Iterator[MountedRoot]:
        self.world.grown = grow
        with self.world.holding("mount"):
            yield MountedRoot(device, mount_point, "ext4", self.root)

    @contextlib.contextmanager
    def chroot(self, root: MountedRoot) -> Iterator[Chroot]:
        with self.world.holding("chroot_setup"):
            yield Chroot(root.reached, mount_point=root.mount_point, hostname="fake")

    def traces(self) -> HostTraces:
        self.world.interrupter.at("scan:middle")
        return HostTraces(hostnames=("fake-bake-host",), nameservers=("192.0.2.53",))

    def placed_files(self, chroot: Chroot) -> list[str]:
        return []

    def undo_copies_of_placed_files(self, chroot: Chroot, since: float) -> str:
        return "no copy"


GIB = 1 << 30
BASE = Image("img-base", "fake-base", datetime(2026, 1, 1, tzinfo=UTC), "snap-base")


class FakeCloud(CloudBackend):
    """Volumes, snapshots and images in memory; each operation may be interrupted midway."""

    name = "fake"

    def __init__(self, world: World) -> None:
        self.world = world

    def resolve_base(self, reference: str) -> Image:
        self.world.interrupter.at("resolve_base:middle")
        return BASE

    def create_volume(self, base: Image, bake_id: str, *, size_bytes: int | None = None) -> Volume:
        volume = Volume("vol-1", base.snapshot_id, size_bytes or 1 << 30)
        self.world.volumes[volume.volume_id] = volume
        self.world.interrupter.at("create_volume:middle")
        return volume

    def delete_volume(self, volume: Volume) -> None:
        self.world.interrupter.at("delete_volume:middle")
        self.world.volumes.pop(volume.volume_id, None)

    @contextlib.contextmanager
    def attached(self, volume: Volume, bake_id: str) -> Iterator[Path]:
        with self.world.holding("attach"):
            yield Path("/dev/fake0")

    @contextlib.contextmanager
    def snapshot(self, volume: Volume, bake_id: str, description: str) -> Iterator[Snapshot]:
        snapshot = Snapshot("snap-1", volume.volume_id, volume.size_bytes)
        self.world.snapshots[snapshot.snapshot_id] = snapshot
        try:
            self.world.interrupter.at("snapshot:middle")
            yield snapshot
        except BaseException:
            self.world.interrupter.at("delete_snapshot:middle")
            del self.world.snapshots[snapshot.snapshot_id]
            raise

    def check_name_available(self, name: str) -> None:
        pass

    @contextlib.contextmanager
    def registered(self, snapshot: Snapshot, spec: ImageSpec, bake_id: str) -> Iterator[Image]:
        image = Image("img-1", spec.name, datetime.now(UTC), snapshot.snapshot_id, tags=spec.tags)
        self.world.images[image.image_id] = image
        self.world.specs[image.image_id] = spec
        try:
            self.world.interrupter.at("register:middle")
            yield image
        except BaseException:
            self.world.interrupter.at("deregister:middle")
            del self.world.images[image.image_id]
            raise

    def list_images(self) -> list[Image]:
        return list(self.world.images.values())

    def get_image(self, image_id: str) -> Image:
        return self.world.images[image_id]

    def leftovers(self, bake_id: str) -> list[Leftover]:
        used = {image.snapshot_id for image in self.world.images.values()}
        return [Leftover("volume", v) for v in self.world.volumes] + [
            Leftover("snapshot", s) for s in self.world.snapshots if s not in used
        ]

    def release_leftover(self, leftover: Leftover) -> None:
        self.world.volumes.pop(leftover.resource_id, None)
        self.world.snapshots.pop(leftover.resource_id, None)


class FakeProvisioner(Provisioner):
    name = "fake"

    def __init__(self, world: World) -> None:
        self.world = world

    def install(self, chroot: Chroot, packages: Sequence[PackageRequest]) -> None:
        self.world.interrupter.at("install:middle")
        for path, content in self.world.installs.items():
            chroot.write_file(path, content)

    def sbom_packages(
        self, chroot: Chroot, distro: Distro, manifest: Sequence[ManifestEntry]
    ) -> list[SbomPackage]:
        self.world.interrupter.at("sbom:middle")
        return super().sbom_packages(chroot, distro, manifest)

    def query(self, chroot: Chroot, names: Sequence[str]) -> list[PackageInfo]:
        self.world.interrupter.at("inspect:middle")
        return [PackageInfo(name, "", "1.0", "1", "all") for name in names]

    def manifest(self, chroot: Chroot) -> list[ManifestEntry]:
        return [ManifestEntry("hello", "1.0-1", "all", "hello", "1.0-1")]


class FakeDistroPlugin:
    """The distro, provisioner and finalizer side of the bake, as a third party's plugin."""

    def __init__(self, world: World) -> None:
        self.world = world

    @hookimpl
    def aminator_check_request(self, request: BakeRequest, settings: EngineSettings) -> None:
        self.world.interrupter.at("read_packages:middle")

    @hookimpl
    def aminator_detect_distro(self, os_release: dict[str, str], root: Path) -> Distro | None:
        self.world.interrupter.at("detect_distro:middle")
        if os_release.get("ID") != "fakeos":
            return None
        return Distro.from_os_release(os_release, family="fake", package_format="fake")

    @hookimpl
    def aminator_provisioner(self, distro: Distro, settings: EngineSettings) -> Provisioner:
        return FakeProvisioner(self.world)

    @hookimpl
    def aminator_clean_image(self, chroot: Chroot) -> list[HygieneOutcome]:
        self.world.interrupter.at("hygiene:middle")
        return [HygieneOutcome("fake_rule", "cleaned")]

    @hookimpl
    def aminator_image_tags(self, facts: Any) -> dict[str, str]:
        self.world.interrupter.at("name:middle")
        return {"fake": "yes"}

    @hookimpl
    def aminator_image_registered(self, image: Image, facts: Any, cloud: Any) -> None:
        self.world.interrupter.at("publish:middle")


@dataclass
class Outcome:
    bake: Bake
    world: World
    error: BaseException | None


@pytest.fixture
def image_root(tmp_path: Path) -> Path:
    root = tmp_path / "image"
    (root / "etc").mkdir(parents=True)
    (root / "etc/os-release").write_text('ID=fakeos\nPRETTY_NAME="Fake OS 1"\n')
    return root


@pytest.fixture
def settings(tmp_path: Path) -> EngineSettings:
    return EngineSettings(home=tmp_path / "home", log_dir=tmp_path / "log", cloud="fake")


@pytest.fixture
def run_bake(settings: EngineSettings, image_root: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    def run(
        interrupter: Interrupter | None = None,
        *,
        preserve: bool = False,
        fault: str = "",
        installs: dict[str, bytes] | None = None,
        scan_allow: tuple[str, ...] = (),
        scan_host_traces: bool = True,
        root_volume_size: int | None = None,
    ) -> Outcome:
        world = World(interrupter or Interrupter(), installs=installs or {})
        if fault:
            monkeypatch.setenv(steps_module.FAULT_VARIABLE, fault)
        real_maybe_fail = steps_module.Steps._maybe_fail

        def maybe_fail(steps: steps_module.Steps, name: str, when: str) -> None:
            world.interrupter.at(f"{name}:{when}")
            real_maybe_fail(steps, name, when)

        monkeypatch.setattr(steps_module.Steps, "_maybe_fail", maybe_fail)
        hooks = load_plugins(
            extra=[("fake", FakeDistroPlugin(world))],
            environ={"AMINATOR_DISABLE_PLUGINS": "debian,redhat,local,ec2"},
        )
        request = BakeRequest(
            base="fake-base",
            packages=("hello",),
            preserve_on_error=preserve,
            scan_allow=scan_allow,
            scan_host_traces=scan_host_traces,
            root_volume_size=root_volume_size,
        )
        bake = Bake(request, settings, hooks, FakeCloud(world), host=FakeHost(world, image_root))
        error: BaseException | None = None
        try:
            with interrupts_raised():
                bake.run()
        except (Exception, Interrupted) as exc:
            error = exc
        return Outcome(bake, world, error)

    return run


def assert_nothing_held(outcome: Outcome, settings: EngineSettings) -> None:
    world = outcome.world
    assert world.live == set(), world.live
    assert bake_records(settings).all() == []


def assert_complete_image_or_nothing(outcome: Outcome) -> None:
    world = outcome.world
    assert world.volumes == {}
    if outcome.error is None:
        [image] = world.images.values()
        assert list(world.snapshots) == [image.snapshot_id]
    else:
        assert world.images == {} and world.snapshots == {}


def test_a_larger_root_volume_is_asked_of_the_backend_and_grown_into(
    run_bake: Any, settings: EngineSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(FakeCloud, "resolve_base", lambda self, ref: replace(BASE, size_bytes=GIB))
    outcome = run_bake(root_volume_size=3)
    assert outcome.error is None, outcome.error
    assert outcome.world.grown
    [image] = outcome.world.images.values()
    assert outcome.world.snapshots[image.snapshot_id].size_bytes == 3 * GIB
    assert run_bake().world.grown is False


def test_a_root_volume_smaller_than_the_base_is_refused_before_anything_is_made(
    run_bake: Any, settings: EngineSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        FakeCloud, "resolve_base", lambda self, ref: replace(BASE, size_bytes=2 * GIB)
    )
    outcome = run_bake(root_volume_size=1)
    assert isinstance(outcome.error, RequestError)
    assert str(outcome.error.message) == (
        "--root-volume-size 1 is smaller than the base image img-base: 2 GiB"
    )
    assert outcome.world.volumes == {} and outcome.world.images == {}
    assert_nothing_held(outcome, settings)


def test_a_bake_runs_its_steps_in_the_declared_order(
    run_bake: Any, settings: EngineSettings
) -> None:
    outcome = run_bake()
    assert outcome.error is None, outcome.error
    names = [timing.name for timing in outcome.bake.steps.timings]
    assert (
        names
        == BAKE_PIPELINE.step_names
        == [
            "read_packages",
            "resolve_base",
            "create_volume",
            "attach",
            "mount",
            "detect_distro",
            "chroot_setup",
            "install",
            "inspect",
            "hygiene",
            "scan",
            "name",
            "sbom",
            "chroot_teardown",
            "unmount",
            "detach",
            "snapshot",
            "delete_volume",
            "register",
            "publish",
        ]
    )
    assert_nothing_held(outcome, settings)
    assert_complete_image_or_nothing(outcome)
    assert outcome.world.images["img-1"].tags["fake"] == "yes"


ALL_STEPS = BAKE_PIPELINE.step_names


@pytest.mark.parametrize("when", ["enter", "exit"])
@pytest.mark.parametrize("step", ALL_STEPS)
def test_a_fault_at_any_step_releases_everything(
    run_bake: Any, settings: EngineSettings, step: str, when: str
) -> None:
    outcome = run_bake(fault=f"{step}:{when}")
    assert isinstance(outcome.error, InjectedFault), outcome.error
    assert outcome.error.step == step
    assert_nothing_held(outcome, settings)
    assert_complete_image_or_nothing(outcome)
    # What it released went in reverse order of acquisition.
    done = [timing.name for timing in outcome.bake.steps.timings]
    released = [name for name in done if name in ("chroot_teardown", "unmount", "detach")]
    assert released == sorted(released, key=["chroot_teardown", "unmount", "detach"].index)


#: Every point a signal may land at: the start, the middle and the end of each step (a release
#: step's middle is the fake's own release).
POINTS = [f"{step}:{when}" for step in ALL_STEPS for when in ("enter", "middle", "exit")] + [
    "deregister:middle",
    "delete_snapshot:middle",
]


@pytest.mark.parametrize("name", list(SIGNALS))
def test_a_signal_after_the_image_is_complete_keeps_it(
    run_bake: Any, settings: EngineSettings, name: str
) -> None:
    """As the bake's namespace ends: nothing is left to undo, and the image is the answer."""
    interrupter = Interrupter("namespace_end:middle", name)
    outcome = run_bake(interrupter)
    assert "namespace_end:middle" in interrupter.reached
    assert outcome.error is None
    assert_nothing_held(outcome, settings)
    assert_complete_image_or_nothing(outcome)


@pytest.mark.parametrize("name", list(SIGNALS))
@pytest.mark.parametrize("point", POINTS)
def test_a_signal_at_any_point_gives_its_exit_code_and_a_complete_image_or_nothing(
    run_bake: Any, settings: EngineSettings, point: str, name: str
) -> None:
    if point.startswith(("deregister", "delete_snapshot")):
        # Reached only while failing: a fault at publish makes the bake release its image.
        interrupter = Interrupter(point, name)
        outcome = run_bake(interrupter, fault="publish:exit")
        assert point in interrupter.reached
        assert isinstance(outcome.error, (InjectedFault, Interrupted))
    else:
        interrupter = Interrupter(point, name)
        outcome = run_bake(interrupter)
        assert point in interrupter.reached, f"the bake never reached {point}"
        assert isinstance(outcome.error, Interrupted), outcome.error
        assert outcome.error.exit_code == SIGNALS[name]
    assert_nothing_held(outcome, settings)
    assert_complete_image_or_nothing(outcome)


@pytest.mark.parametrize("step", ["attach", "install", "chroot_teardown", "snapshot"])
def test_a_preserved_failure_keeps_the_volume_and_its_record_only(
    run_bake: Any, settings: EngineSettings, step: str
) -> None:
    outcome = run_bake(preserve=True, fault=f"{step}:exit")
    assert isinstance(outcome.error, InjectedFault)
    world = outcome.world
    assert world.live == set()  # mounts, devices and the chroot always go
    assert list(world.volumes) == ["vol-1"] and world.snapshots == {} and world.images == {}
    assert outcome.bake.preserved
    assert [(k.kind, k.resource_id) for k in outcome.bake.kept] == [("volume", "vol-1")]
    [record] = bake_records(settings).preserved()
    assert record.bake_id == outcome.bake.bake_id


@pytest.mark.parametrize("step", ["resolve_base", "delete_volume", "register", "publish"])
def test_a_preserved_failure_without_a_volume_keeps_nothing(
    run_bake: Any, settings: EngineSettings, step: str
) -> None:
    """Before the volume is made, or once it is deleted (its snapshot made)."""
    outcome = run_bake(preserve=True, fault=f"{step}:exit")
    assert_complete_image_or_nothing(outcome)
    assert not outcome.bake.preserved and outcome.bake.kept == []
    assert_nothing_held(outcome, settings)


def test_a_preserved_bake_interrupted_keeps_its_volume(
    run_bake: Any, settings: EngineSettings
) -> None:
    outcome = run_bake(Interrupter("install:middle", "SIGINT"), preserve=True)
    assert isinstance(outcome.error, Interrupted) and outcome.error.exit_code == EXIT_SIGINT
    assert list(outcome.world.volumes) == ["vol-1"] and outcome.world.live == set()


AWS_CREDENTIALS = (
    b"[default]\naws_secret_access_key = " + b"wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY" + b"\n"
)


def test_a_secret_the_install_left_fails_the_scan_and_nothing_is_registered(
    run_bake: Any, settings: EngineSettings
) -> None:
    outcome = run_bake(installs={"/etc/credentials": AWS_CREDENTIALS})
    error = outcome.error
    assert isinstance(error, SecretFoundError) and error.step == "scan"
    assert error.exit_code == 1
    assert (
        str(error)
        == "the image would hold a secret: /etc/credentials holds an AWS secret access key"
    )
    assert b"wJalr" not in str(error).encode() and "--scan-allow" in (error.hint or "")
    assert outcome.world.images == {} and outcome.world.snapshots == {}
    assert_nothing_held(outcome, settings)


def test_a_trace_of_the_host_fails_the_scan_naming_it(run_bake: Any) -> None:
    outcome = run_bake(installs={"/etc/mailname": b"fake-bake-host\n"})
    assert isinstance(outcome.error, SecretFoundError)
    assert "/etc/mailname holds the bake host's hostname fake-bake-host" in str(outcome.error)
    assert "--no-scan-host-traces" in (outcome.error.hint or "")
    unchecked = run_bake(installs={"/etc/mailname": b"fake-bake-host\n"}, scan_host_traces=False)
    assert unchecked.error is None, unchecked.error


def test_an_allow_listed_secret_is_a_warning_and_the_image_has_its_sbom(run_bake: Any) -> None:
    outcome = run_bake(installs={"/etc/credentials": AWS_CREDENTIALS}, scan_allow=("/etc/cred*",))
    assert outcome.error is None, outcome.error
    report = outcome.bake.scan_report
    assert [f.as_dict() for f in report.findings] == [
        {
            "path": "/etc/credentials",
            "kind": "an AWS secret access key",
            "fails": False,
            "warning": "allow-listed",
        }
    ]
    spec = outcome.world.specs["img-1"]
    assert spec.sbom is not None and spec.tags["sbom_components"] == "1"
    assert spec.tags["sbom_sha256"] == hashlib.sha256(spec.sbom).hexdigest()
