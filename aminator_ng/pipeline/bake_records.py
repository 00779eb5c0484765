"""Bake records: every bake writes one on the host before it acquires anything, so that after a
crash ``aminate cleanup`` can tell the bakes that died from the ones still running.

A record is ``$AMINATOR_HOME/bakes/<bake_id>.json``. Its bake holds an exclusive ``flock`` on it
for as long as it runs; the kernel drops the lock when the process ends, however it ends
(SIGKILL, the OOM killer), so a record whose lock can be taken belongs to a bake that died. No pid
is trusted for that (pids are reused); the pid and its start time are kept for the operator.

A bake that ends, well or badly, removes its record once it has released what it held. A bake
that fails with ``--preserve-on-error`` marks its record preserved instead: it stays until
``aminate cleanup --preserved`` releases what the bake kept.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aminator_ng.contract.model import Volume
from aminator_ng.errors import BakeError, ConflictError, HostError, NotFoundError
from aminator_ng.host.signals import deferred

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BakeRecord:
    """What the host knows of one bake."""

    bake_id: str
    #: The cloud backend the bake used: its cleanup asks that backend.
    cloud: str
    pid: int
    #: The process's start time (field 22 of /proc/PID/stat), telling a reused pid apart.
    pid_start: str
    started: str
    log_path: str | None = None
    #: A failed bake's resources kept by ``--preserve-on-error``.
    preserved: bool = False
    #: What it kept: the fields of each kept ``Volume``.
    kept_volumes: tuple[dict[str, Any], ...] = ()

    @classmethod
    def of_this_process(cls, bake_id: str, cloud: str, log_path: Path | None) -> BakeRecord:
        pid = os.getpid()
        return cls(
            bake_id=bake_id,
            cloud=cloud,
            pid=pid,
            pid_start=process_start_time(pid) or "",
            started=datetime.now(UTC).replace(microsecond=0).isoformat(),
            log_path=str(log_path) if log_path else None,
        )


def process_start_time(pid: int) -> str | None:
    """The start time of a live process, in clock ticks since boot; None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses; the start time is field 22.
    return stat.rsplit(")", 1)[1].split()[19]


class RecordedBake:
    """The running bake's hold on its record."""

    def __init__(self, records: BakeRecords, record: BakeRecord, fd: int) -> None:
        self.record = record
        self._records = records
        self._fd = fd
        self.preserved = False
        self.kept = False

    def keep_for_cleanup(self) -> None:
        """Leave the record when the bake ends: something it held could not be released, and
        ``aminate cleanup`` finds it (unlocked) among the dead bakes' records."""
        self.kept = True

    def mark_preserved(self, volumes: Sequence[Volume]) -> None:
        """Keep the record after the bake, as a preserved one that kept ``volumes``."""
        self.record = replace(
            self.record, preserved=True, kept_volumes=tuple(asdict(v) for v in volumes)
        )
        self._records.rewrite(self.record, self._fd)
        self.preserved = True


class BakeRecords:
    """The records under ``directory``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def path(self, bake_id: str) -> Path:
        return self.directory / f"{bake_id}.json"

    def _write_locked(self, record: BakeRecord) -> int:
        """Write ``record`` whole, as a locked temporary file renamed into place; return the
        descriptor that holds its lock. A reader never finds the record half-written or
        unlocked."""
        path = self.path(record.bake_id)
        partial = path.with_name(f".{path.name}.partial")
        try:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise self._unwritable(path, exc) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.write(fd, (json.dumps(asdict(record), indent=1) + "\n").encode())
            os.fsync(fd)
            partial.rename(path)
        except BaseException as exc:
            os.close(fd)
            partial.unlink(missing_ok=True)
            if isinstance(exc, OSError):
                raise self._unwritable(path, exc) from exc
            raise
        return fd

    @staticmethod
    def _unwritable(path: Path, error: OSError) -> HostError:
        return HostError(
            f"cannot write the bake's record {path}: {error.strerror}",
            hint="free space there (a bake records itself before it starts), "
            "or set AMINATOR_HOME elsewhere",
        )

    def rewrite(self, record: BakeRecord, holding: int) -> None:
        """Replace a held record; ``holding`` then holds the new file's lock (the old file's
        lock is dropped only once the new one is in place)."""
        fd = self._write_locked(record)
        os.dup2(fd, holding, inheritable=False)
        os.close(fd)

    @contextlib.contextmanager
    def recorded(self, record: BakeRecord) -> Iterator[RecordedBake]:
        """Hold ``record`` for the context; removed at the end unless marked preserved."""
        fd = self._write_locked(record)
        held = RecordedBake(self, record, fd)
        try:
            yield held
        finally:
            with deferred():
                if not (held.preserved or held.kept):
                    # While still locked: no cleanup can claim it after us.
                    self.path(record.bake_id).unlink(missing_ok=True)
                os.close(fd)

    def _read(self, path: Path) -> BakeRecord | None:
        try:
            data = json.loads(path.read_text())
            return BakeRecord(**data)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError) as exc:
            raise BakeError(
                f"unreadable bake record {path}: {exc}",
                hint="look at it, and remove it once nothing of that bake is left",
            ) from exc

    def all(self) -> list[BakeRecord]:
        """Every record, live or not, oldest first."""
        if not self.directory.is_dir():
            return []
        found = [self._read(path) for path in sorted(self.directory.glob("*.json"))]
        return sorted((r for r in found if r is not None), key=lambda r: r.started)

    def is_live(self, bake_id: str) -> bool:
        """Whether the bake of this record still runs (its lock is held)."""
        try:
            fd = os.open(self.path(bake_id), os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False

    def dead(self) -> list[BakeRecord]:
        """Records of bakes that died without releasing what they held (not preserved ones)."""
        return [r for r in self.all() if not r.preserved and not self.is_live(r.bake_id)]

    def preserved(self) -> list[BakeRecord]:
        return [r for r in self.all() if r.preserved]

    @contextlib.contextmanager
    def claimed(self, bake_id: str) -> Iterator[BakeRecord]:
        """Take a dead or preserved bake's record for releasing what it left; the record is
        removed when the context ends without an error. Raises ConflictError while the bake
        runs, or while another cleanup has it."""
        path = self.path(bake_id)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise ConflictError(f"bake {bake_id} was released by another cleanup") from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise ConflictError(
                    f"bake {bake_id} is running, or another cleanup is releasing it"
                ) from None
            record = self._read(path)
            if record is None or path.stat().st_ino != os.fstat(fd).st_ino:
                raise ConflictError(f"bake {bake_id} was released by another cleanup")
            yield record
            path.unlink()
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def held(self, bake_id: str) -> Iterator[BakeRecord]:
        """Hold a preserved bake's record for the context (``aminate shell``), so that no
        cleanup releases what it kept meanwhile."""
        try:
            fd = os.open(self.path(bake_id), os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise NotFoundError(
                f"no preserved bake {bake_id}",
                hint="'aminate cleanup --preserved --dry-run' lists the preserved bakes",
            ) from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise ConflictError(f"bake {bake_id} is in use (a shell, or a cleanup)") from None
            record = self._read(self.path(bake_id))
            if record is None or not record.preserved:
                raise NotFoundError(f"no preserved bake {bake_id}")
            yield record
        finally:
            os.close(fd)

    def stray_partials(self) -> list[Path]:
        """Half-written records (a bake killed while writing its record); none is locked."""
        if not self.directory.is_dir():
            return []
        return sorted(self.directory.glob(".*.json.partial"))
