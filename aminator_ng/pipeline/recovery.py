"""``aminate cleanup``: releasing what bakes that no longer run left behind.

A bake that died (SIGKILL, the OOM killer, a crash, a reboot) had no chance to release what it
held; a bake that failed with ``--preserve-on-error`` kept its volume on purpose. Their records
(see ``bakerecords``) name them. The bake's mounts and loop devices normally went with its
namespace, and its processes with its PID namespace; what is left is in the cloud backend (a
volume, a snapshot no image uses) and, on a host where that failed, processes, mounts and
devices, which are looked for too. Nothing of a running bake is ever touched: its record is
locked.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aminator_ng.contract.cloud import CloudBackend, Leftover
from aminator_ng.contract.settings import EngineSettings
from aminator_ng.errors import ConflictError
from aminator_ng.host.mount import processes_using, unmount
from aminator_ng.pipeline.bake_records import BakeRecord, BakeRecords
from aminator_ng.pipeline.package_cache import unpublished_lists

log = logging.getLogger(__name__)


def bake_records(settings: EngineSettings) -> BakeRecords:
    return BakeRecords(settings.home / "bakes")


@dataclass
class BakeCleanup:
    """What one bake left, and whether it was released."""

    record: BakeRecord
    leftovers: list[Leftover] = field(default_factory=list)
    released: bool = False
    #: Why the bake was skipped (another cloud's, or claimed by another cleanup).
    skipped: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "bake_id": self.record.bake_id,
            "cloud": self.record.cloud,
            "preserved": self.record.preserved,
            "started": self.record.started,
            "leftovers": [leftover.as_dict() for leftover in self.leftovers],
            "released": self.released,
            "skipped": self.skipped,
        }

    def describe(self, dry_run: bool) -> list[str]:
        what = "preserved bake" if self.record.preserved else "bake"
        head = f"{what} {self.record.bake_id} (started {self.record.started})"
        if self.skipped:
            return [f"{head}: skipped, {self.skipped}"]
        if not self.leftovers:
            return [f"{head}: nothing left"]
        verb = "would release" if dry_run else "released"
        return [f"{head}:"] + [f"  {verb} {leftover.describe()}" for leftover in self.leftovers]


def _mounts_under(directory: Path) -> list[Path]:
    """Mount points under ``directory`` in the engine's mount namespace, outermost first."""
    found: list[Path] = []
    with Path("/proc/self/mountinfo").open() as table:
        for line in table:
            point = Path(line.split()[4].encode().decode("unicode_escape"))
            if point == directory or directory in point.parents:
                found.append(point)
    outermost = [p for p in found if not any(q in p.parents for q in found)]
    return sorted(set(outermost))


def engine_leftovers(settings: EngineSettings, bake_id: str) -> list[Leftover]:
    """Processes, mounts, package lists it was fetching and the work directory of a bake on
    this host (normally none but the directory: the rest went with the bake's namespaces)."""
    work_dir = settings.work_dir / bake_id
    found = [
        Leftover("process", str(pid), f"{comm}, inside {work_dir}")
        for pid, comm in processes_using(work_dir)
    ]
    found += [Leftover("mount", str(point)) for point in _mounts_under(work_dir)]
    found += [
        Leftover("package lists", str(path), "fetched for the package cache, never published")
        for path in unpublished_lists(settings.cache_dir, bake_id)
    ]
    if work_dir.exists():
        found.append(Leftover("work directory", str(work_dir)))
    return found


def _end_process(pid: int, work_dir: Path) -> None:
    """SIGKILL a process, if it is still one that uses ``work_dir`` (pids are reused)."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        if any(p == pid for p, _ in processes_using(work_dir)):
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
    finally:
        os.close(pidfd)


def _remove_work_dir(work_dir: Path) -> None:
    """Remove a dead bake's work directory: mount points, or a base create's scratch space
    (its bootstrapped tree and disk). Its processes and mounts were released before; no
    symlink in it is followed."""
    shutil.rmtree(work_dir)


def release_engine_leftover(settings: EngineSettings, bake_id: str, leftover: Leftover) -> None:
    work_dir = settings.work_dir / bake_id
    if leftover.kind == "process":
        _end_process(int(leftover.resource_id), work_dir)
    elif leftover.kind == "mount":
        unmount(Path(leftover.resource_id), recursive=True)
    elif leftover.kind == "package lists":
        shutil.rmtree(leftover.resource_id)
    elif leftover.kind == "work directory":
        _remove_work_dir(work_dir)


ENGINE_KINDS = ("process", "mount", "package lists", "work directory")


def clean_up(
    cloud: CloudBackend,
    settings: EngineSettings,
    *,
    preserved: bool,
    dry_run: bool,
) -> list[BakeCleanup]:
    """Find the bakes that died (or, with ``preserved``, the preserved ones) and release what
    each left: processes and mounts first, then the backend's devices, volumes and snapshots,
    then the work directory. A bake of another cloud backend is skipped, saying so."""
    records = bake_records(settings)
    chosen = records.preserved() if preserved else records.dead()
    results: list[BakeCleanup] = []
    for record in chosen:
        result = BakeCleanup(record)
        results.append(result)
        if record.cloud != cloud.name:
            result.skipped = (
                f"it baked on {record.cloud}: run aminate --cloud {record.cloud} cleanup"
            )
            continue
        try:
            with records.claimed(record.bake_id) if not dry_run else contextlib.nullcontext(record):
                result.leftovers = _leftovers(cloud, settings, record.bake_id)
                if dry_run:
                    continue
                for leftover in result.leftovers:
                    log.info("releasing %s of bake %s", leftover.describe(), record.bake_id)
                    if leftover.kind in ENGINE_KINDS:
                        release_engine_leftover(settings, record.bake_id, leftover)
                    else:
                        cloud.release_leftover(leftover)
                result.released = True
        except ConflictError as exc:
            result.skipped = exc.message
    for partial in records.stray_partials():
        if not dry_run:
            partial.unlink(missing_ok=True)
    return results


def _leftovers(cloud: CloudBackend, settings: EngineSettings, bake_id: str) -> list[Leftover]:
    """In the order they are released: what runs and is mounted before what it uses."""
    engine = engine_leftovers(settings, bake_id)
    work = [leftover for leftover in engine if leftover.kind == "work directory"]
    return [*(e for e in engine if e not in work), *cloud.leftovers(bake_id), *work]


def warn_of_dead_bakes(settings: EngineSettings) -> None:
    """Say, as a bake starts, that bakes which died left something for ``aminate cleanup``."""
    with contextlib.suppress(Exception):  # a warning must never stop the bake
        dead = bake_records(settings).dead()
        if dead:
            ids = ", ".join(record.bake_id for record in dead)
            log.warning(
                "%d bake(s) that died left resources behind (%s); 'aminate cleanup' releases them",
                len(dead),
                ids,
            )
