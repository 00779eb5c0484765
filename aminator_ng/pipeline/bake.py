"""The bake: from a base image and packages to a registered image.

The bake is declared once, as ``BAKE_PIPELINE``: its steps in order, the resources they acquire,
when each is released and what a preserved failure keeps (see ``pipeline``). It asks the
machine for everything through a host seam (``host_seam.BakeHost``) and the cloud backend, so that
unit tests prove its order, its teardown and preserve-on-error with fakes of both. The whole
bake runs in namespaces of its own: its mounts are invisible to the host and, like every process
it starts, die with the engine. With ``preserve_on_error`` a failed bake keeps its volume and
its record, and says how to release them; mounts and devices always go.
"""

from __future__ import annotations

import contextlib
import logging
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
from aminator_ng.contract.cloud import CloudBackend
from aminator_ng.contract.model import (
    BakeFacts,
    Distro,
    HygieneOutcome,
    Image,
    ImageSpec,
    ManifestEntry,
    PackageInfo,
    PackageRequest,
    Repository,
    Snapshot,
    Volume,
)
from aminator_ng.contract.plugins import Hooks, require_provisioner
from aminator_ng.contract.provisioner import Provisioner
from aminator_ng.contract.request import BakeRequest
from aminator_ng.contract.settings import EngineSettings
from aminator_ng.errors import (
    AminatorError,
    BakeError,
    ImageKeptError,
    Interrupted,
    NotFoundError,
    RequestError,
)
from aminator_ng.host.chroot import Chroot
from aminator_ng.host.grow import GROW_TOOLS
from aminator_ng.host.osrelease import read_os_release
from aminator_ng.host.run import commands_bounded
from aminator_ng.pipeline.bake_records import BakeRecord
from aminator_ng.pipeline.declared import Kept, Pipeline, Resource, Step
from aminator_ng.pipeline.host_seam import ENGINE_TOOLS, BakeHost, LinuxHost, MountedRoot
from aminator_ng.pipeline.naming import sanitize_image_name
from aminator_ng.pipeline.package_cache import BakeIdentity, CacheUse, PackageCache
from aminator_ng.pipeline.recovery import bake_records, warn_of_dead_bakes
from aminator_ng.pipeline.repositories import (
    mounted_repositories,
    parse_repositories,
    read_repositories,
)
from aminator_ng.pipeline.retention import KEPT, Decision, Retention, image_family, prune
from aminator_ng.pipeline.sbom import Sbom, prepare_meanwhile
from aminator_ng.pipeline.secret_scan import (
    SECRET_KINDS,
    Finding,
    HostTraces,
    Scanner,
    ScanReport,
    judge,
    scan_changed_files,
)
from aminator_ng.pipeline.steps import Steps

log = logging.getLogger(__name__)

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


class SecretFoundError(BakeError):
    """The secret scan found a secret, or a trace of the bake host, in what the bake changed."""

    #: How many files the message names before it says how many more there are.
    NAMED = 5

    def __init__(self, failures: Sequence[Finding]) -> None:
        named = "; ".join(f.describe() for f in failures[: self.NAMED])
        more = len(failures) - self.NAMED
        traces = any(f.kind.startswith("the bake host's") for f in failures)
        super().__init__(
            f"the image would hold a secret: {named}" + (f"; and {more} more" if more > 0 else ""),
            hint="take it out of the package; if the file is meant to hold it, accept the file "
            "with --scan-allow PATH (scan_allow in [bake])"
            + (", or leave host traces unchecked with --no-scan-host-traces" if traces else ""),
        )
        self.failures = tuple(failures)


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
    hygiene: tuple[HygieneOutcome, ...]
    scan: ScanReport | None
    sbom_path: str | None
    package_cache: CacheUse | None
    steps: list[Any]
    duration_s: float
    log_path: Path | None
    #: With ``--keep``: what retention removed, and what it skipped and why.
    pruned: tuple[Decision, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {
            "bake_id": self.bake_id,
            "image_id": self.image.image_id,
            "name": self.image.name,
            "cloud": self.cloud,
            "images": self.image.everywhere,
            "state": self.image.state,
            "base_image_id": self.base.image_id,
            "base_image_name": self.base.name,
            "tags": self.tags,
            "packages": [p.as_dict() for p in self.packages],
            "manifest": [m.as_dict() for m in self.manifest],
            "hygiene": [h.as_dict() for h in self.hygiene],
            "scan": self.scan.as_dict() if self.scan else None,
            "sbom_path": self.sbom_path,
            "package_cache": self.package_cache.as_dict() if self.package_cache else None,
            "steps": [s.as_dict() for s in self.steps],
            "duration_s": round(self.duration_s, 3),
            "log_path": str(self.log_path) if self.log_path else None,
            "pruned": [d.as_dict() for d in self.pruned if d.action != KEPT],
        }


#: The engine's own hygiene outcome: the copies package scripts made of the host's files it
#: placed in the image for the bake. It is no rule of a plugin, and no tag says it ran.
HOST_FILE_COPIES = "host_file_copies"
GIB = 1 << 30


def hygiene_tag(outcomes: Sequence[HygieneOutcome]) -> dict[str, str]:
    """``hygiene=ok`` when every rule ran, else the rules switched off; none without rules."""
    if not outcomes:
        return {}
    off = sorted(o.rule for o in outcomes if o.switched_off)
    return {"hygiene": "off:" + ",".join(off) if off else "ok"}


def looks_like_file(spec: str, suffixes: tuple[str, ...]) -> bool:
    """A path, an existing file, or a name ending as the plugins' package files do."""
    return "/" in spec or spec.endswith(suffixes) or Path(spec).is_file()


def read_package_requests(hooks: Hooks, specs: Sequence[str]) -> list[PackageRequest]:
    """Check every PACKAGE argument before anything is acquired; read the files' metadata."""
    if not specs:
        raise RequestError("no package to bake", hint="name a package file or a package name")
    requests: list[PackageRequest] = []
    suffixes = hooks.package_file_suffixes()
    for spec in specs:
        if looks_like_file(spec, suffixes):
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
        host: BakeHost | None = None,
    ) -> None:
        self.request = request
        self.settings = settings
        self.hooks = hooks
        self.cloud = cloud
        self.host: BakeHost = host or LinuxHost()
        self.bake_id = bake_id or new_bake_id()
        self.log_path = log_path
        self.started = datetime.now(UTC).replace(microsecond=0)
        self.steps = Steps(on_finished=self._step_finished)
        #: What a preserved failure kept, as the pipeline reported it.
        self.kept_resources: list[Kept] = []
        # What the steps hand on to each other, filled in as they run.
        self.requests: list[PackageRequest] = []
        self.repositories: Sequence[Repository] = ()
        self.base: Image | None = None
        self.volume: Volume | None = None
        self.device: Path | None = None
        self.root: MountedRoot | None = None
        self.distro: Distro | None = None
        self.provisioner: Provisioner | None = None
        self.chroot: Chroot | None = None
        self.packages: tuple[PackageInfo, ...] = ()
        self.manifest: tuple[ManifestEntry, ...] = ()
        self.hygiene: list[HygieneOutcome] = []
        self.scan_report: ScanReport | None = None
        self.cache_use: CacheUse | None = None
        self.sbom: Sbom | None = None
        self.facts: BakeFacts | None = None
        self.spec: ImageSpec | None = None
        self.snapshot: Snapshot | None = None
        self.image: Image | None = None

    @property
    def work_dir(self) -> Path:
        return self.settings.work_dir / self.bake_id

    @property
    def preserved(self) -> bool:
        return bool(self.kept_resources)

    @property
    def kept(self) -> list[KeptResource]:
        """What a preserved failure kept, and how to release it by hand."""
        return [
            KeptResource(
                "volume",
                kept.value.volume_id,
                self.cloud.release_command("volume", kept.value.volume_id),
            )
            for kept in self.kept_resources
            if isinstance(kept.value, Volume)
        ]

    def _released_what_unwinding_missed(self) -> bool:
        """After a failure: release what the backend still holds for this bake (a signal that
        came between an acquisition and its release being registered). False when that fails:
        the bake's record then stays for ``aminate cleanup``."""
        try:
            for leftover in self.cloud.leftovers(self.bake_id):
                log.warning("releasing %s, still held after the bake", leftover.describe())
                self.cloud.release_leftover(leftover)
        except Exception as exc:  # the bake's own failure is what the operator must see
            log.error("cannot release what the bake left (%s): 'aminate cleanup' will", exc)
            return False
        return True

    def _step_finished(self, step: str, duration_s: float, failed: bool) -> None:
        self.hooks.step_finished(self.bake_id, step, duration_s, failed)

    def run(self) -> BakeResult:
        began = time.monotonic()
        self.host.require("aminate bake", [*ENGINE_TOOLS, *self.cloud.required_tools()])
        warn_of_dead_bakes(self.settings)
        record = BakeRecord.of_this_process(self.bake_id, self.cloud.name, self.log_path)
        complete = False
        try:
            with (
                bake_records(self.settings).recorded(record) as recorded,
                self.host.namespace(self.work_dir),
            ):
                try:
                    BAKE_PIPELINE.run(
                        self,
                        self.steps,
                        preserve=lambda: self.request.preserve_on_error,
                        kept=self.kept_resources,
                    )
                except BaseException:
                    if self.kept_resources:
                        recorded.mark_preserved(
                            [k.value for k in self.kept_resources if isinstance(k.value, Volume)]
                        )
                    elif not self._released_what_unwinding_missed():
                        recorded.keep_for_cleanup()
                    raise
                complete = True
        except Interrupted as interrupted:
            if not complete:
                raise
            # The image is whole and registered: the signal came too late to undo it.
            log.warning("%s came after the image was complete; it is kept", interrupted)
        state = self
        assert state.image is not None and state.base is not None
        pruned = self._prune_family(state.image) if self.request.keep is not None else []
        return BakeResult(
            bake_id=self.bake_id,
            image=state.image,
            cloud=self.cloud.name,
            base=state.base,
            tags=dict(state.image.tags),
            packages=state.packages,
            manifest=state.manifest,
            hygiene=tuple(state.hygiene),
            scan=state.scan_report,
            sbom_path=self.cloud.sbom_location(state.image.image_id),
            package_cache=state.cache_use,
            steps=self.steps.timings,
            duration_s=time.monotonic() - began,
            log_path=self.log_path,
            pruned=tuple(pruned),
        )

    def plan(self) -> dict[str, Any]:
        """``--dry-run``: the request checked as the bake would check it before acquiring
        anything, and what the bake would make, as JSON-ready data. Nothing is created,
        attached or mounted; a wrong request raises the error the bake would."""
        self.host.require("aminate bake", [*ENGINE_TOOLS, *self.cloud.required_tools()])
        with self.steps.step("read_packages"):
            self.read_packages()
        with self.steps.step("resolve_base"):
            self.resolve_base()
        base = self.base
        assert base is not None
        size_bytes = self._volume_size_bytes()
        first = self.requests[0]
        # What is known before the install: a named package's version is not, nor the distro.
        known = tuple(
            r.info or PackageInfo(r.name, r.pinned_version or "", "", "") for r in self.requests
        )
        facts = BakeFacts(
            bake_id=self.bake_id,
            started=self.started,
            base=base,
            packages=known,
            manifest=(),
            distro=Distro(family="", os_id=""),
            name_template=self.request.name_template,
            suffix=self.request.suffix,
            extra_tags=dict(self.request.tags),
            engine_version=__version__,
            settings=self.settings,
        )
        name = sanitize_image_name(self.hooks.image_name(facts) or "")
        if first.is_file and name:
            self.cloud.check_name_available(name)
        family_tag = self.settings.family_tag
        tags = {family_tag: image_family(first.name, base, family_tag), **self.request.tags}
        cloud_plan = self.cloud.plan(base, size_bytes=size_bytes, bake_id=self.bake_id)
        would_prune: list[Decision] = []
        if self.request.keep is not None:
            retention = Retention(self.request.keep, family_tag, family=tags[family_tag])
            would_prune = retention.plan(
                self.cloud.list_images(),
                now=datetime.now(UTC),
                refused=self.cloud.removal_refused,
                incoming=1,
            )
        return {
            "dry_run": True,
            "cloud": self.cloud.name,
            "base": base.as_dict(),
            "packages": [r.spec for r in self.requests],
            "repositories": [r.spec for r in self.repositories],
            "root_volume_size_bytes": size_bytes or base.size_bytes,
            "name": name,
            # A named package's version, and the distro, are known only after the install.
            "name_is_final": first.is_file,
            "tags": tags,
            "keep": self.request.keep,
            "would_prune": [d.as_dict() for d in would_prune if d.action != KEPT],
            self.cloud.name: cloud_plan,
        }

    def _prune_family(self, image: Image) -> list[Decision]:
        """``--keep``: the family's older images removed, once the new one is complete. A
        failure leaves the new image as it is, and says so."""
        try:
            with self.steps.step("prune"):
                assert self.request.keep is not None
                retention = Retention(self.request.keep, self.settings.family_tag, self.family)
                decisions = retention.plan(
                    self.cloud.list_images(),
                    now=datetime.now(UTC),
                    refused=self.cloud.removal_refused,
                    spare={image.image_id},
                )
                done = prune(self.cloud, decisions, dry_run=False)
        except AminatorError as error:
            raise ImageKeptError(
                error.message,
                images=image.everywhere,
                hint=f"the new image is complete; prune again with: aminate images prune "
                f"--keep {self.request.keep} --family {self.family}",
            ) from error
        return done  # each removal and skip is logged as it happens

    @property
    def family(self) -> str | None:
        """The family the new image is tagged with, once it is named."""
        return self.spec.tags.get(self.settings.family_tag) if self.spec else None

    # The steps, in the order BAKE_PIPELINE runs them.

    def read_packages(self) -> None:
        if self.request.root_volume_size is not None:
            self.host.require_tools(GROW_TOOLS)
        self.requests = read_package_requests(self.hooks, self.request.packages)
        self.repositories = read_repositories(
            self.request.repositories, self.request.repository_keys
        )
        self.hooks.check_request(self.request, self.settings)

    def resolve_base(self) -> None:
        base = self.cloud.resolve_base(self.request.base)
        log.info("base image %s (%s)", base.image_id, base.name)
        self.base = base

    def _volume_size_bytes(self) -> int | None:
        """The size ``--root-volume-size`` asks for; None: the base's."""
        assert self.base is not None
        size_gib = self.request.root_volume_size
        if size_gib is None:
            return None
        base_size = self.base.size_bytes
        if base_size is not None and size_gib * GIB < base_size:
            raise RequestError(
                f"--root-volume-size {size_gib} is smaller than the base image "
                f"{self.base.image_id}: {base_size / GIB:g} GiB",
                hint="a root volume can only grow",
            )
        return size_gib * GIB

    def create_volume(self) -> Volume:
        assert self.base is not None
        size_bytes = self._volume_size_bytes()
        if size_bytes is None:
            return self.cloud.create_volume(self.base, self.bake_id)
        return self.cloud.create_volume(self.base, self.bake_id, size_bytes=size_bytes)

    def delete_volume(self, volume: Volume) -> None:
        self.cloud.delete_volume(volume)

    def attach(self) -> contextlib.AbstractContextManager[Path]:
        assert self.volume is not None
        return self.cloud.attached(self.volume, self.bake_id)

    def mount(self) -> contextlib.AbstractContextManager[MountedRoot]:
        assert self.device is not None
        grow = self.request.root_volume_size is not None
        return self.host.mounted_root(self.device, self.work_dir / "root", grow=grow)

    def detect_distro(self) -> None:
        assert self.root is not None
        root = self.root.reached
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
        self.host.require_tools(provisioner.required_tools())
        self.repositories = parse_repositories(
            provisioner, self.repositories, self.request.repository_keys
        )
        log.info(
            "distribution %s, provisioner %s", distro.pretty_name or distro.os_id, provisioner.name
        )
        self.distro, self.provisioner = distro, provisioner

    @contextlib.contextmanager
    def set_up_chroot(self) -> Iterator[Chroot]:
        state = self
        assert state.root and state.distro and state.provisioner
        with ExitStack() as stack:
            chroot = stack.enter_context(self.host.chroot(state.root))
            self.hooks.prepare_chroot(chroot, state.distro, stack, self.settings)
            if state.repositories:
                placed = stack.enter_context(mounted_repositories(chroot, state.repositories))
                stack.enter_context(state.provisioner.added_repositories(chroot, placed))
            yield chroot

    def install(self) -> None:
        with commands_bounded(
            self.request.install_timeout,
            "the install",
            hint="a package script may be waiting for something: see the bake log; or raise "
            "--install-timeout (install_timeout in [bake])",
        ):
            self._install()

    def _install(self) -> None:
        state = self
        assert state.provisioner and state.chroot
        prepare_meanwhile()
        layout = (
            state.provisioner.package_cache(state.chroot) if self.request.package_cache else None
        )
        if layout is None:
            state.provisioner.install(state.chroot, state.requests)
            return
        cache = PackageCache(
            self.settings.cache_dir,
            max_age_s=self.request.index_max_age,
            refresh=self.request.refresh,
        )
        assert state.base is not None
        bake = BakeIdentity(self.bake_id, self.started.timestamp(), state.base.image_id)
        with cache.bound(
            state.chroot, state.provisioner, layout, self.work_dir / "package-cache", bake
        ) as use:
            state.provisioner.install_cached(state.chroot, state.requests)
        self.cache_use = use

    def inspect(self) -> None:
        state = self
        assert state.provisioner and state.chroot
        state.packages = self._baked_packages(state.chroot, state.provisioner, state.requests)
        state.manifest = tuple(state.provisioner.manifest(state.chroot))

    def clean(self) -> None:
        assert self.chroot and self.distro and self.provisioner
        self.hygiene = self.hooks.clean_image(
            self.chroot,
            self.distro,
            self.settings,
            self.started,
            self.provisioner.history_files(),
        )
        # The engine's own part: what it put in the image for the bake must not stay in copies.
        copies = self.host.undo_copies_of_placed_files(self.chroot, self.started.timestamp())
        self.hygiene.append(HygieneOutcome(HOST_FILE_COPIES, copies))
        for outcome in self.hygiene:
            log.info("hygiene %s: %s", outcome.rule, outcome.done)

    def scan(self) -> None:
        """Fail the bake, naming each file and what it holds, when what the bake changed holds
        a secret or a trace of the bake host; warn of what the scan accepts, and why."""
        state = self
        assert state.chroot and state.provisioner
        traces = self.host.traces() if self.request.scan_host_traces else HostTraces()
        # The image's own hostname is what package scripts saw: it is the image's, not the host's.
        traces = HostTraces(
            tuple(n for n in traces.hostnames if n != state.chroot.hostname),
            traces.addresses,
            traces.nameservers,
        )
        trace_kinds = traces.kinds()
        scanned, found, too_large = scan_changed_files(
            state.chroot.root,
            self.started.timestamp(),
            Scanner([*SECRET_KINDS, *trace_kinds]),
            host_trace_kinds={kind.name for kind in trace_kinds},
        )
        placed = set(self.host.placed_files(state.chroot))
        found = [f for f in found if f.path not in placed]
        shipped = state.provisioner.shipped_files(state.chroot, sorted({f.path for f in found}))
        asked = {r.name for r in state.requests}
        owners = sorted({s.package for s in shipped.values()} - asked)
        from_base = (
            state.provisioner.from_base_repositories(state.chroot, owners) if owners else set()
        )
        kept_by_rules = {path: o.rule for o in self.hygiene for path in o.kept}
        judged = judge(
            found,
            allowed=self.request.scan_allow,
            kept_by_rules=kept_by_rules,
            shipped=shipped,
            from_base_repositories=from_base - asked,
        )
        with_findings = {f.path for f in judged}
        judged += [
            Finding(path, f"what the hygiene rule {rule} removes", "the rule is switched off")
            for path, rule in kept_by_rules.items()
            if path not in with_findings
        ]
        report = ScanReport(scanned, tuple(judged), tuple(too_large))
        for warning in report.warnings:
            log.warning("secret scan: %s", warning.describe())
        for path in too_large:
            log.warning("secret scan: %s is too large to read; not scanned", path)
        log.info("secret scan: %d changed files read, %d findings", scanned, len(judged))
        state.scan_report = report
        if report.failures:
            raise SecretFoundError(report.failures)

    def describe_contents(self) -> None:
        """The image's SBOM, its summary added to the image's tags."""
        state = self
        assert state.chroot and state.provisioner and state.distro and state.base and state.spec
        packages = state.provisioner.sbom_packages(state.chroot, state.distro, state.manifest)
        if len(packages) != len(state.manifest):
            raise BakeError(
                f"provisioner {state.provisioner.name} described {len(packages)} packages for "
                f"the SBOM, not the manifest's {len(state.manifest)}"
            )
        # Imported here, not with this module: the thread of prepare_meanwhile loaded it.
        from aminator_ng.pipeline.sbom_document import build_sbom

        sbom = build_sbom(
            image_name=state.spec.name,
            image_description=state.spec.description,
            base=state.base,
            packages=packages,
            bake_id=self.bake_id,
            engine_version=__version__,
            created=self.started,
        )
        log.info("SBOM: %d components, sha256 %s", sbom.component_count, sbom.sha256)
        state.sbom = sbom
        # Last: no --tag may give the image another SBOM's digest.
        state.spec = replace(state.spec, tags={**state.spec.tags, **sbom.tags()}, sbom=sbom.data)

    def name_image(self) -> None:
        state = self
        assert state.base and state.distro and state.provisioner
        facts = BakeFacts(
            bake_id=self.bake_id,
            started=self.started,
            base=state.base,
            packages=state.packages,
            manifest=state.manifest,
            distro=state.distro,
            name_template=self.request.name_template,
            suffix=self.request.suffix,
            extra_tags=dict(self.request.tags),
            engine_version=__version__,
            settings=self.settings,
        )
        named = self.hooks.image_name(facts)
        if not named:
            raise RequestError("no finalizer plugin named the image", hint="see 'aminate plugins'")
        name = sanitize_image_name(named)
        self.cloud.check_name_available(name)
        family_tag = self.settings.family_tag
        tags = {
            family_tag: image_family(state.packages[0].name, state.base, family_tag),
            **self.hooks.image_tags(facts),
            **state.provisioner.image_tags(),
            **hygiene_tag([o for o in self.hygiene if o.rule != HOST_FILE_COPIES]),
            **self.request.tags,
        }
        description = self.hooks.image_description(facts) or f"{name}, from {state.base.name}"
        state.facts = facts
        state.spec = ImageSpec(name, description, tags, state.manifest, state.base)

    def take_snapshot(self) -> contextlib.AbstractContextManager[Snapshot]:
        assert self.volume and self.spec
        return self.cloud.image_snapshot(self.volume, self.bake_id, self.spec)

    def register(self) -> contextlib.AbstractContextManager[Image]:
        assert self.snapshot and self.spec
        return self.cloud.registered(self.snapshot, self.spec, self.bake_id)

    def publish(self) -> None:
        assert self.image and self.facts
        log.info("registered %s as %s", self.image.image_id, self.image.name)
        self.hooks.image_registered(self.image, self.facts, self.cloud)

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


#: The bake, in order. Devices, mounts and the chroot are let go before the snapshot; the volume
#: once the snapshot is made; a snapshot and image are kept when the bake succeeds (leaving them
#: then releases nothing) and released when it fails. A preserved failure keeps the volume.
BAKE_PIPELINE: Pipeline[Bake] = Pipeline(
    [
        Step("read_packages", Bake.read_packages),
        Step("resolve_base", Bake.resolve_base),
        Resource(
            "create_volume",
            "delete_volume",
            acquire=Bake.create_volume,
            release_by=Bake.delete_volume,
            until="register",
            keep_on_preserve=True,
            stored_as="volume",
        ),
        Resource("attach", "detach", enter=Bake.attach, until="snapshot", stored_as="device"),
        Resource("mount", "unmount", enter=Bake.mount, until="snapshot", stored_as="root"),
        Step("detect_distro", Bake.detect_distro),
        Resource(
            "chroot_setup",
            "chroot_teardown",
            enter=Bake.set_up_chroot,
            until="snapshot",
            stored_as="chroot",
        ),
        Step("install", Bake.install),
        Step("inspect", Bake.inspect),
        Step("hygiene", Bake.clean),
        Step("scan", Bake.scan),
        Step("name", Bake.name_image),
        Step("sbom", Bake.describe_contents),
        Resource(
            "snapshot",
            "delete_snapshot",
            enter=Bake.take_snapshot,
            release_step_on_success=False,
            stored_as="snapshot",
        ),
        Resource(
            "register",
            "deregister",
            enter=Bake.register,
            release_step_on_success=False,
            stored_as="image",
        ),
        Step("publish", Bake.publish),
    ]
)
