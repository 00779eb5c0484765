"""The bake: from a base image and packages to a registered image.

Every acquisition is a context manager entered on one ExitStack, so that everything is released
in reverse order on success, on error and on a signal. The whole bake runs in namespaces of its
own (``bake_namespace``): its mounts are invisible to the host and, like every process it starts,
die with the engine. With ``preserve_on_error`` a failed bake keeps its volume (and what it made
from it) and says how to release it; mounts and devices always go.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aminator_ng import __version__
from aminator_ng.bakerecords import BakeRecord, RecordedBake
from aminator_ng.blockdev import find_root_filesystem, partition_nodes, wait_until_released
from aminator_ng.chroot import (
    Chroot,
    api_filesystems,
    host_resolv_conf,
    image_hostname,
    replaced_file,
)
from aminator_ng.cloud import CloudBackend
from aminator_ng.config import BakeRequest, EngineSettings
from aminator_ng.errors import BakeError, HostError, NotFoundError, RequestError
from aminator_ng.model import (
    BakeFacts,
    Distro,
    Image,
    ImageSpec,
    ManifestEntry,
    PackageInfo,
    PackageRequest,
    Repository,
)
from aminator_ng.mount import mounted
from aminator_ng.namespace import BakeNamespace, bake_namespace
from aminator_ng.naming import sanitize_image_name
from aminator_ng.osrelease import read_os_release
from aminator_ng.plugin_manager import Hooks, require_provisioner
from aminator_ng.provisioner import Provisioner
from aminator_ng.recovery import bake_records, warn_of_dead_bakes
from aminator_ng.repositories import PACKAGE_FILE_SUFFIXES, mounted_repositories, read_repositories
from aminator_ng.run import require_tools, run
from aminator_ng.steps import Steps

log = logging.getLogger(__name__)

#: Host tools the engine's own Linux layer runs in every bake.
ENGINE_TOOLS = ("blkid", "findmnt", "fstrim", "mount", "nsenter", "partx", "sync", "umount")
#: A package name, optionally pinned to an exact version: ``NAME=[EPOCH:]VERSION``.
PACKAGE_NAME = re.compile(
    r"^[A-Za-z0-9][A-Za-z0-9+._-]*(?:=(?:[0-9]+:)?[A-Za-z0-9][A-Za-z0-9.+~^_-]*)?$"
)
PACKAGE_NAME_HINT = (
    "a name is letters, digits and + . _ -; pin an exact version with NAME=VERSION "
    "(hello=1.0-1, or with an epoch hello=1:1.0-1)"
)


def new_bake_id() -> str:
    return secrets.token_hex(8)


def require_root(action: str) -> None:
    if os.geteuid() != 0:
        raise HostError(f"{action} must run as root", hint="run it with sudo")


@dataclass(frozen=True)
class KeptResource:
    """Something a failed bake kept because of ``--preserve-on-error``."""

    kind: str
    resource_id: str
    release: str

    def as_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "id": self.resource_id, "release": self.release}


@dataclass(frozen=True)
class BakeResult:
    bake_id: str
    image: Image
    cloud: str
    base: Image
    tags: dict[str, str]
    packages: tuple[PackageInfo, ...]
    manifest: tuple[ManifestEntry, ...]
    steps: list[Any]
    duration_s: float
    log_path: Path | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "bake_id": self.bake_id,
            "image_id": self.image.image_id,
            "name": self.image.name,
            "cloud": self.cloud,
            "images": {self.image.region: self.image.image_id},
            "base_image_id": self.base.image_id,
            "base_image_name": self.base.name,
            "tags": self.tags,
            "packages": [p.as_dict() for p in self.packages],
            "manifest": [m.as_dict() for m in self.manifest],
            "steps": [s.as_dict() for s in self.steps],
            "duration_s": round(self.duration_s, 3),
            "log_path": str(self.log_path) if self.log_path else None,
        }


@dataclass
class MountedRoot:
    device: Path
    #: Where the root is mounted in the bake's namespace.
    mount_point: Path
    fstype: str
    #: Where the engine's process reaches it.
    reached: Path


def looks_like_file(spec: str) -> bool:
    return "/" in spec or spec.endswith(PACKAGE_FILE_SUFFIXES) or Path(spec).is_file()


def read_package_requests(hooks: Hooks, specs: Sequence[str]) -> list[PackageRequest]:
    """Check every PACKAGE argument before anything is acquired; read the files' metadata."""
    if not specs:
        raise RequestError("no package to bake", hint="name a package file or a package name")
    requests: list[PackageRequest] = []
    for spec in specs:
        if looks_like_file(spec):
            path = Path(spec).resolve()
            if not path.is_file():
                raise NotFoundError(f"package file not found: {spec}")
            info = hooks.read_package_file(path)
            if info is None:
                raise RequestError(
                    f"not a package file: {spec}",
                    hint="give a package file a loaded plugin can read ('aminate plugins'), "
                    "or a package name from the image's repositories",
                )
            requests.append(PackageRequest(spec, path, info))
        elif PACKAGE_NAME.match(spec):
            requests.append(PackageRequest(spec))
        else:
            raise RequestError(
                f"not a package name or NAME=VERSION: {spec!r}", hint=PACKAGE_NAME_HINT
            )
    return requests


class Bake:
    """One bake. Its id, steps and kept resources stay readable after it fails."""

    def __init__(
        self,
        request: BakeRequest,
        settings: EngineSettings,
        hooks: Hooks,
        cloud: CloudBackend,
        *,
        bake_id: str | None = None,
        log_path: Path | None = None,
    ) -> None:
        self.request = request
        self.settings = settings
        self.hooks = hooks
        self.cloud = cloud
        self.bake_id = bake_id or new_bake_id()
        self.log_path = log_path
        self.started = datetime.now(UTC).replace(microsecond=0)
        self.steps = Steps(on_finished=self._step_finished)
        self.kept: list[KeptResource] = []
        #: What a preserved failure keeps alive; never closed (see ``run``).
        self._kept_stack: ExitStack | None = None
        #: The devices, mounts and chroot of the running bake, released even when preserving.
        self._device_stack: ExitStack | None = None
        self._namespace: BakeNamespace | None = None
        self._record: RecordedBake | None = None

    def _step_finished(self, step: str, duration_s: float, failed: bool) -> None:
        self.hooks.step_finished(self.bake_id, step, duration_s, failed)

    def _facts(
        self,
        base: Image,
        packages: Sequence[PackageInfo],
        manifest: Sequence[ManifestEntry],
        distro: Distro,
    ) -> BakeFacts:
        return BakeFacts(
            bake_id=self.bake_id,
            started=self.started,
            base=base,
            packages=tuple(packages),
            manifest=tuple(manifest),
            distro=distro,
            name_template=self.request.name_template,
            suffix=self.request.suffix,
            extra_tags=dict(self.request.tags),
            engine_version=__version__,
            settings=self.settings,
        )

    def _image_name(self, facts: BakeFacts) -> str:
        name = self.hooks.image_name(facts)
        if not name:
            raise RequestError("no finalizer plugin named the image", hint="see 'aminate plugins'")
        return sanitize_image_name(name)

    def run(self) -> BakeResult:
        began = time.monotonic()
        require_root("aminate bake")
        require_tools([*ENGINE_TOOLS, *self.cloud.required_tools()])
        work_dir = self.settings.work_dir / self.bake_id
        warn_of_dead_bakes(self.settings)
        record = BakeRecord.of_this_process(self.bake_id, self.cloud.name, self.log_path)
        with (
            bake_records(self.settings).recorded(record) as self._record,
            bake_namespace(work_dir) as namespace,
            ExitStack() as stack,
        ):
            self._namespace = namespace
            with self.steps.step("read_packages"):
                requests = read_package_requests(self.hooks, self.request.packages)
                repositories = read_repositories(
                    self.request.repositories, self.request.repository_keys
                )
                self.hooks.check_request(self.request, self.settings)
            try:
                result = self._bake(stack, requests, repositories)
            except BaseException as failure:
                if self.request.preserve_on_error and self.kept:
                    self._preserve(stack, failure)
                raise
        return BakeResult(
            bake_id=self.bake_id,
            image=result[0],
            cloud=self.cloud.name,
            base=result[1],
            tags=dict(result[0].tags),
            packages=result[2],
            manifest=result[3],
            steps=self.steps.timings,
            duration_s=time.monotonic() - began,
            log_path=self.log_path,
        )

    @property
    def preserved(self) -> bool:
        return self._kept_stack is not None

    def _preserve(self, stack: ExitStack, failure: BaseException) -> None:
        """Release the chroot, mounts and devices, and keep the rest: ownership of the volume
        (and what was made from it) moves out of the stack, and the CLI exits without running
        finalizers, so that nothing is released later either."""
        try:
            if self._device_stack is not None:
                self._device_stack.__exit__(type(failure), failure, failure.__traceback__)
        finally:
            self._kept_stack = stack.pop_all()
            assert self._record is not None
            self._record.mark_preserved()

    def _track(self, stack: ExitStack, kind: str, resource_id: str, release: str) -> None:
        """Remember a resource until ``stack`` releases it; what a preserved failure kept stays."""
        entry = KeptResource(kind, resource_id, release)
        self.kept.append(entry)
        stack.callback(self.kept.remove, entry)

    def _bake(
        self,
        stack: ExitStack,
        requests: list[PackageRequest],
        repositories: Sequence[Repository],
    ) -> tuple[Image, Image, tuple[PackageInfo, ...], tuple[ManifestEntry, ...]]:
        steps, cloud = self.steps, self.cloud
        with steps.step("resolve_base"):
            base = cloud.resolve_base(self.request.base)
        log.info("base image %s (%s)", base.image_id, base.name)

        volume_stack = stack.enter_context(ExitStack())
        volume = volume_stack.enter_context(
            steps.resource("create_volume", "delete_volume", cloud.volume(base, self.bake_id))
        )
        self._track(
            volume_stack,
            "volume",
            volume.volume_id,
            cloud.release_command("volume", volume.volume_id),
        )

        device_stack = volume_stack.enter_context(ExitStack())
        self._device_stack = device_stack
        device = device_stack.enter_context(
            steps.resource("attach", "detach", cloud.attached(volume, self.bake_id))
        )
        root = device_stack.enter_context(
            steps.resource("mount", "unmount", self._mounted_root(device))
        )

        with steps.step("detect_distro"):
            distro, provisioner = self._detect(root.reached)
        chroot = device_stack.enter_context(
            steps.resource(
                "chroot_setup",
                "chroot_teardown",
                self._chroot(root, distro, provisioner, repositories),
            )
        )
        with steps.step("install"):
            provisioner.install(chroot, requests)
        with steps.step("inspect"):
            packages = self._baked_packages(chroot, provisioner, requests)
            manifest = tuple(provisioner.manifest(chroot))
        with steps.step("name"):
            facts = self._facts(base, packages, manifest, distro)
            name = self._image_name(facts)
            cloud.check_name_available(name)
            tags = {
                **self.hooks.image_tags(facts),
                **provisioner.image_tags(),
                **self.request.tags,
            }
            description = self.hooks.image_description(facts) or f"{name}, from {base.name}"
            spec = ImageSpec(name, description, tags, manifest, base)
        device_stack.close()  # chroot_teardown, unmount, detach

        with steps.step("snapshot"):
            snapshot = stack.enter_context(cloud.image_snapshot(volume, self.bake_id, spec))
        self._track(
            stack,
            "snapshot",
            snapshot.snapshot_id,
            cloud.release_command("snapshot", snapshot.snapshot_id),
        )
        volume_stack.close()  # delete_volume: the snapshot no longer needs it

        with steps.step("register"):
            image = stack.enter_context(cloud.registered(snapshot, spec, self.bake_id))
        self._track(stack, "image", image.image_id, cloud.release_command("image", image.image_id))
        log.info("registered %s as %s", image.image_id, image.name)
        with steps.step("publish"):
            self.hooks.image_registered(image, facts, cloud)
        return image, base, packages, manifest

    @contextlib.contextmanager
    def _mounted_root(self, device: Path) -> Iterator[MountedRoot]:
        """The root filesystem mounted in the bake's namespace. Leaving unmounts it with whatever
        is still mounted below it, by the paths the kernel's mount table holds then."""
        assert self._namespace is not None
        mount_point = self.settings.work_dir / self.bake_id / "root"
        with ExitStack() as stack:
            parts = stack.enter_context(partition_nodes(device))
            root_fs = find_root_filesystem(device, parts)
            mount_point.mkdir(parents=True, exist_ok=True)
            stack.callback(_remove_empty_dirs, mount_point, self.settings.work_dir)
            # Left after the unmount: the filesystem is shut down before anything goes on.
            stack.callback(wait_until_released, root_fs.device)
            options = ["nouuid"] if root_fs.fstype == "xfs" else []
            stack.enter_context(
                mounted(
                    root_fs.device,
                    mount_point,
                    fstype=root_fs.fstype,
                    options=options,
                    recursive_unmount=True,
                )
            )
            log.info("mounted %s (%s) on %s", root_fs.device, root_fs.fstype, mount_point)
            reached = self._namespace.reach(mount_point)
            yield MountedRoot(root_fs.device, mount_point, root_fs.fstype, reached)
            # Only on success: flush, then let the loop device punch holes for freed blocks so
            # that the snapshot stays small.
            run(["sync", "-f", mount_point], what=f"sync {mount_point}")
            run(["fstrim", mount_point], what=f"trim {mount_point}", check=False)

    def _detect(self, root: Path) -> tuple[Distro, Provisioner]:
        os_release = read_os_release(root)
        distro = self.hooks.detect_distro(os_release, root, self.settings)
        if distro is None:
            described = (
                os_release.get("PRETTY_NAME") or os_release.get("ID") or "no /etc/os-release"
            )
            raise RequestError(
                f"no distro plugin recognises the base image's distribution ({described})",
                hint="install a plugin for it; 'aminate plugins' lists the loaded ones",
            )
        provisioner = require_provisioner(self.hooks, distro, self.settings)
        require_tools(provisioner.required_tools())
        log.info(
            "distribution %s, provisioner %s", distro.pretty_name or distro.os_id, provisioner.name
        )
        return distro, provisioner

    @contextlib.contextmanager
    def _chroot(
        self,
        root: MountedRoot,
        distro: Distro,
        provisioner: Provisioner,
        repositories: Sequence[Repository],
    ) -> Iterator[Chroot]:
        # No process of the image outlives its command (each runs in a PID namespace of its
        # own), so none is left to end here.
        chroot = Chroot(root.reached, mount_point=root.mount_point)
        chroot = replace(chroot, hostname=image_hostname(chroot))
        with ExitStack() as stack:
            stack.enter_context(api_filesystems(chroot))
            stack.enter_context(replaced_file(chroot, "/etc/resolv.conf", host_resolv_conf()))
            self.hooks.prepare_chroot(chroot, distro, stack, self.settings)
            if repositories:
                placed = stack.enter_context(mounted_repositories(chroot, repositories))
                stack.enter_context(provisioner.added_repositories(chroot, placed))
            yield chroot

    def _baked_packages(
        self, chroot: Chroot, provisioner: Provisioner, requests: list[PackageRequest]
    ) -> tuple[PackageInfo, ...]:
        by_name = [r.name for r in requests if not r.is_file]
        queried = {p.name: p for p in provisioner.query(chroot, by_name)} if by_name else {}
        baked: list[PackageInfo] = []
        for request in requests:
            if request.info is not None:
                baked.append(request.info)
                continue
            info = queried.get(request.name)
            if info is None:
                raise RequestError(f"package {request.name} is not installed after the install")
            pinned = request.pinned_version
            if pinned is not None and not provisioner.satisfies_pin(info, pinned):
                raise BakeError(
                    f"package {request.name} is at version {info.full_version} after the "
                    f"install, not the pinned {pinned}"
                )
            baked.append(info)
        return tuple(baked)


def _remove_empty_dirs(path: Path, stop: Path) -> None:
    """Remove ``path`` and its parents up to (not including) ``stop`` while they are empty."""
    current = path
    while current != stop and stop in current.parents:
        try:
            current.rmdir()
        except OSError:
            return
        current = current.parent
