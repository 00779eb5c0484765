"""The chroot a bake installs into: safe paths inside the image, API filesystems, replaced files,
and no process left behind.

Every path inside the image is resolved against the image root, symlinks included: an absolute
symlink in the image points into the image, never at the host.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import stat
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from aminator_ng.errors import BakeError, CleanupError
from aminator_ng.mount import mounted, processes_using
from aminator_ng.run import Completed, run

log = logging.getLogger(__name__)

MAX_SYMLINKS = 40


class UnsafePathError(BakeError):
    """A path inside the image cannot be resolved without leaving it (a symlink loop, say)."""


def resolve_in_root(root: Path, inside: str | PurePosixPath, *, follow_last: bool = True) -> Path:
    """The host path of ``inside`` as the image sees it, every symlink resolved against ``root``.

    With ``follow_last=False`` a symlink in the last component is not followed, so that it can be
    replaced rather than written through.
    """
    pending = list(PurePosixPath("/", inside).parts[1:])
    resolved: list[str] = []
    followed = 0
    while pending:
        part = pending.pop(0)
        if part in ("", "."):
            continue
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = root.joinpath(*resolved, part)
        if candidate.is_symlink() and (pending or follow_last):
            followed += 1
            if followed > MAX_SYMLINKS:
                raise UnsafePathError(f"too many symlinks resolving {inside} in the image")
            target = PurePosixPath(os.readlink(candidate))
            if target.is_absolute():
                resolved = []
            pending = list(target.parts[1:] if target.is_absolute() else target.parts) + pending
            continue
        resolved.append(part)
    return root.joinpath(*resolved)


@dataclass(frozen=True)
class Chroot:
    """A mounted image root, and the means to run commands and touch files inside it."""

    root: Path
    #: Extra environment for every command run inside (DEBIAN_FRONTEND, say); set by distro plugins.
    environment: Mapping[str, str] = field(default_factory=dict)

    def path(self, inside: str | PurePosixPath, *, follow_last: bool = True) -> Path:
        """The host path of a path inside the image (see ``resolve_in_root``)."""
        return resolve_in_root(self.root, inside, follow_last=follow_last)

    def run(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        check: bool = True,
        what: str | None = None,
        hint: str | None = None,
        timeout: float | None = None,
    ) -> Completed:
        """Run a command inside the image; nothing of the image runs on the host."""
        merged = {**self.environment, **(env or {})}
        return run(
            ["chroot", self.root, *argv],
            env=merged,
            check=check,
            what=what,
            hint=hint,
            timeout=timeout,
        )

    def with_environment(self, **variables: str) -> Chroot:
        return Chroot(self.root, {**self.environment, **variables})


@dataclass(frozen=True)
class _SavedFile:
    """What a path inside the image was before the bake touched it."""

    kind: str  # "absent", "symlink" or "file"
    link_target: str = ""
    content: bytes = b""
    mode: int = 0o644
    uid: int = 0
    gid: int = 0


def _save(path: Path) -> _SavedFile:
    try:
        info = path.lstat()
    except FileNotFoundError:
        return _SavedFile("absent")
    if stat.S_ISLNK(info.st_mode):
        return _SavedFile("symlink", link_target=os.readlink(path))
    if not stat.S_ISREG(info.st_mode):
        raise BakeError(f"{path} is neither a file nor a symlink; refusing to replace it")
    return _SavedFile(
        "file",
        content=path.read_bytes(),
        mode=stat.S_IMODE(info.st_mode),
        uid=info.st_uid,
        gid=info.st_gid,
    )


def _remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def _write_new(path: Path, content: bytes, mode: int, uid: int = 0, gid: int = 0) -> None:
    """Write a fresh file where ``path`` was; never through a symlink."""
    _remove(path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        os.write(fd, content)
        os.fchown(fd, uid, gid)
        os.fchmod(fd, mode)
    finally:
        os.close(fd)


def _restore(path: Path, saved: _SavedFile) -> None:
    _remove(path)
    if saved.kind == "symlink":
        path.symlink_to(saved.link_target)
    elif saved.kind == "file":
        _write_new(path, saved.content, saved.mode, saved.uid, saved.gid)


def _still_ours(path: Path, written: os.stat_result) -> bool:
    """Whether ``path`` is still the very file the bake wrote (a package manager installs a
    new file by renaming over it, which changes the inode)."""
    try:
        now = path.lstat()
    except FileNotFoundError:
        return False
    return (now.st_dev, now.st_ino) == (written.st_dev, written.st_ino)


@contextlib.contextmanager
def replaced_file(
    chroot: Chroot,
    inside: str,
    content: bytes,
    *,
    mode: int = 0o644,
    keep_if_replaced: bool = False,
) -> Iterator[Path]:
    """A file inside the image replaced for the context, then restored exactly as it was:
    the same bytes and mode, the same symlink, or absent again.

    With ``keep_if_replaced`` a file that something else (a package's new version) put in
    place of the replacement during the context is kept, not overwritten with the old one.
    """
    path = chroot.path(inside, follow_last=False)
    if not path.parent.is_dir():
        raise BakeError(f"cannot place {inside} in the image: {path.parent} is not a directory")
    saved = _save(path)
    written: os.stat_result | None = None
    try:
        _write_new(path, content, mode)
        written = path.lstat()
        log.debug("replaced %s in the image (was %s)", inside, saved.kind)
        yield path
    finally:
        if keep_if_replaced and written is not None and not _still_ours(path, written):
            log.warning("a package replaced %s during the bake; keeping its version", inside)
        else:
            _restore(path, saved)


def kill_processes_under(root: Path, grace_s: float = 3.0) -> list[tuple[int, str]]:
    """End every process whose root lies inside ``root``: daemons a package script started.

    SIGTERM first, SIGKILL to whatever is left after ``grace_s``. Returns what was found.
    """
    found = [(pid, comm) for pid, comm in processes_using(root) if _rooted_under(pid, root)]
    if not found:
        return []
    log.warning(
        "ending processes left inside the image: %s",
        ", ".join(f"pid {pid} ({comm})" for pid, comm in found),
    )
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid, _ in found:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            if not any(_alive(pid) for pid, _ in found):
                return found
            time.sleep(0.05)
    alive = [f"pid {pid} ({comm})" for pid, comm in found if _alive(pid)]
    if alive:
        raise CleanupError(f"processes inside the image would not end: {', '.join(alive)}")
    return found


def _rooted_under(pid: int, root: Path) -> bool:
    try:
        link = os.readlink(f"/proc/{pid}/root")
    except OSError:
        return False
    return link == str(root) or link.startswith(f"{root}/")


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


@contextlib.contextmanager
def no_process_left(root: Path) -> Iterator[None]:
    """On leaving, end what package scripts left running inside ``root``."""
    try:
        yield
    finally:
        kill_processes_under(root)


def _mount_point(chroot: Chroot, inside: str) -> Path:
    path = chroot.path(inside)
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def api_filesystems(chroot: Chroot) -> Iterator[None]:
    """/proc, /sys, /dev, /dev/pts and a fresh tmpfs /run inside the image, unmounted in reverse."""
    with ExitStack() as stack:
        stack.enter_context(mounted("proc", _mount_point(chroot, "/proc"), fstype="proc"))
        stack.enter_context(mounted("sysfs", _mount_point(chroot, "/sys"), fstype="sysfs"))
        stack.enter_context(mounted("/dev", _mount_point(chroot, "/dev"), bind=True))
        stack.enter_context(mounted("/dev/pts", _mount_point(chroot, "/dev/pts"), bind=True))
        stack.enter_context(
            mounted("tmpfs", _mount_point(chroot, "/run"), fstype="tmpfs", options=["mode=0755"])
        )
        yield


def host_resolv_conf() -> bytes:
    """The host's resolver configuration, for name resolution inside the chroot."""
    try:
        return Path("/etc/resolv.conf").read_bytes()
    except OSError:
        return b""


@contextlib.contextmanager
def created_directories(chroot: Chroot, inside: str) -> Iterator[Path]:
    """A directory inside the image, with whatever parents it lacks; the ones made here are
    removed again on leaving, and must be empty by then."""
    path = chroot.path(inside)
    missing: list[Path] = []
    current = path
    while not current.exists() and current != chroot.root:
        missing.append(current)
        current = current.parent
    try:
        for directory in reversed(missing):
            directory.mkdir(mode=0o755)
        yield path
    finally:
        for directory in missing:
            try:
                directory.rmdir()
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise CleanupError(
                    f"cannot remove {directory} from the image: {exc.strerror}"
                ) from exc
