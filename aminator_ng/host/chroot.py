"""The chroot a bake installs into: commands run in namespaces of their own, files reached
safely, API filesystems, and files replaced for the bake and restored after it.

Every path inside the image is resolved against the image root at every use, symlinks included:
an absolute symlink in the image points into the image, never at the host, and a directory a
package script swapped for a symlink since the engine last looked cannot redirect the engine.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import stat
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from types import TracebackType

from aminator_ng.errors import CleanupError
from aminator_ng.host import imagefs
from aminator_ng.host.imagefs import Identity, ImagePathError
from aminator_ng.host.mount import mount, unmount
from aminator_ng.host.namespace import sandbox_program
from aminator_ng.host.run import Completed, run, run_attached

log = logging.getLogger(__name__)

MAX_SYMLINKS = 40


#: A hostname as sethostname(2) and RFC 1123 take it.
_HOSTNAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,62})(?:\.[A-Za-z0-9-]{1,63})*$")
DEFAULT_HOSTNAME = "localhost"


class UnsafePathError(ImagePathError):
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
    """A mounted image root, and the means to run commands and touch files inside it.

    Every file method resolves its path against the image root when it is called, so a directory
    a package script replaced since never redirects it out of the image.
    """

    #: Where the engine's process (and any command it runs) reaches the image root.
    root: Path
    #: Extra environment for every command run inside (DEBIAN_FRONTEND, say); set by distro plugins.
    environment: Mapping[str, str] = field(default_factory=dict)
    #: The hostname commands inside see (the image's own, from its /etc/hostname).
    hostname: str = DEFAULT_HOSTNAME
    #: The root as the bake's namespace sees it, where commands chroot to; ``root`` if None.
    mount_point: Path | None = None

    def path(self, inside: str | PurePosixPath, *, follow_last: bool = True) -> Path:
        """The host path of a path inside the image, resolved now (see ``resolve_in_root``): for
        reading, or for a host tool, before a package script runs again. Change files with the
        methods below, which resolve the path at the moment they act."""
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
        """Run a command inside the image, in new mount, PID, UTS and IPC namespaces: it sees only
        its own processes, the image's hostname, and whatever it leaves running ends with it."""
        merged = {**self.environment, **(env or {})}
        root = self.mount_point or self.root
        return run(
            sandbox_program("image", str(root), self.hostname, "--", *argv),
            env=merged,
            check=check,
            what=what or " ".join(argv),
            hint=hint,
            timeout=timeout,
        )

    def run_attached(self, argv: Sequence[str], *, env: Mapping[str, str] | None = None) -> int:
        """An interactive command inside the image, as ``run`` isolates it, on the engine's
        terminal; returns its exit status."""
        root = self.mount_point or self.root
        return run_attached(
            sandbox_program("image", "--attached", str(root), self.hostname, "--", *argv),
            env={**self.environment, **(env or {})},
        )

    def with_environment(self, **variables: str) -> Chroot:
        return Chroot(self.root, {**self.environment, **variables}, self.hostname, self.mount_point)

    def command_path(self, inside: str | PurePosixPath) -> Path:
        """A path inside the image as the bake's commands see it (mount targets)."""
        resolved = self.path(inside).relative_to(self.root)
        return (self.mount_point or self.root) / resolved

    # Files, each path resolved inside the image as the call acts.

    def exists(self, inside: str | PurePosixPath) -> bool:
        """Whether there is an entry at ``inside`` (a dangling symlink counts)."""
        return imagefs.lstat(self.root, inside) is not None

    def is_file(self, inside: str | PurePosixPath) -> bool:
        return imagefs.is_file(self.root, inside)

    def is_dir(self, inside: str | PurePosixPath) -> bool:
        return imagefs.is_dir(self.root, inside)

    def lstat(self, inside: str | PurePosixPath) -> os.stat_result | None:
        return imagefs.lstat(self.root, inside)

    def identity(self, inside: str | PurePosixPath) -> Identity | None:
        """(device, inode) of what ``inside`` leads to now; None if nothing."""
        return imagefs.identity(self.root, inside)

    def read_bytes(self, inside: str | PurePosixPath) -> bytes:
        return imagefs.read_bytes(self.root, inside)

    def listdir(self, inside: str | PurePosixPath) -> list[str]:
        """The names in a directory, sorted; [] if there is no such directory."""
        return imagefs.listdir(self.root, inside)

    def write_file(
        self,
        inside: str | PurePosixPath,
        content: bytes | Path,
        *,
        mode: int = 0o644,
        uid: int = 0,
        gid: int = 0,
    ) -> Identity:
        """A new file (bytes, or a copy of a host file), replacing what was there, never written
        through a symlink. Returns its identity."""
        return imagefs.write_file(self.root, inside, content, mode=mode, uid=uid, gid=gid)

    def symlink(self, inside: str | PurePosixPath, target: str) -> None:
        imagefs.symlink(self.root, inside, target)

    def make_directory(self, inside: str | PurePosixPath, mode: int = 0o755) -> Identity:
        return imagefs.make_directory(self.root, inside, mode)

    def remove(self, inside: str | PurePosixPath) -> None:
        """Remove a file, a symlink or a directory tree; no symlink is followed."""
        imagefs.remove(self.root, inside)

    def remove_directory(self, inside: str | PurePosixPath) -> None:
        """Remove an empty directory (OSError if it is not empty); nothing if it is gone."""
        imagefs.remove_directory(self.root, inside)

    def set_owner_and_mode(
        self, inside: str | PurePosixPath, *, uid: int, gid: int, mode: int
    ) -> None:
        imagefs.set_owner_and_mode(self.root, inside, uid=uid, gid=gid, mode=mode)


def image_hostname(chroot: Chroot) -> str:
    """The image's own hostname (its /etc/hostname), or ``localhost``."""
    try:
        lines = chroot.read_bytes("/etc/hostname").decode(errors="replace").split()
    except (OSError, ImagePathError):
        return DEFAULT_HOSTNAME
    name = lines[0] if lines else ""
    return name if len(name) <= 64 and _HOSTNAME.match(name) else DEFAULT_HOSTNAME


@dataclass(frozen=True)
class _SavedFile:
    """What a path inside the image was before the bake touched it."""

    kind: str  # "absent", "symlink" or "file"
    link_target: str = ""
    content: bytes = b""
    mode: int = 0o644
    uid: int = 0
    gid: int = 0


def _save(chroot: Chroot, inside: str) -> _SavedFile:
    info = chroot.lstat(inside)
    if info is None:
        return _SavedFile("absent")
    if stat.S_ISLNK(info.st_mode):
        with imagefs.parent(chroot.root, inside) as (fd, name):
            return _SavedFile("symlink", link_target=os.readlink(name, dir_fd=fd))
    if not stat.S_ISREG(info.st_mode):
        raise ImagePathError(
            f"{inside} in the image is neither a file nor a symlink; refusing to replace it"
        )
    return _SavedFile(
        "file",
        content=chroot.read_bytes(inside),
        mode=stat.S_IMODE(info.st_mode),
        uid=info.st_uid,
        gid=info.st_gid,
    )


def _restore(chroot: Chroot, inside: str, saved: _SavedFile) -> None:
    if saved.kind == "symlink":
        chroot.symlink(inside, saved.link_target)
    elif saved.kind == "file":
        chroot.write_file(inside, saved.content, mode=saved.mode, uid=saved.uid, gid=saved.gid)
    else:
        info = chroot.lstat(inside)
        if info is not None and stat.S_ISDIR(info.st_mode):
            raise ImagePathError(f"cannot restore {inside}: it is a directory in the image now")
        chroot.remove(inside)


def _entry_identity(chroot: Chroot, inside: str) -> Identity | None:
    info = chroot.lstat(inside)
    return (info.st_dev, info.st_ino) if info is not None else None


def _replaced_since(chroot: Chroot, inside: str) -> str:
    """How a directory the bake touched looks now, for the error that says it was replaced."""
    info = chroot.lstat(inside)
    if info is None:
        return f"{inside} in the image was removed during the bake"
    if stat.S_ISLNK(info.st_mode):
        with imagefs.parent(chroot.root, inside) as (fd, name):
            target = os.readlink(name, dir_fd=fd)
        return f"{inside} in the image was replaced during the bake by a symlink to {target}"
    return f"{inside} in the image was replaced during the bake"


def check_unchanged(chroot: Chroot, directory: str, identity: Identity, action: str) -> None:
    """Refuse to ``action`` when ``directory`` no longer leads to the directory it led to when
    the bake touched it: a package script moved it, or put a symlink in its place."""
    if chroot.identity(directory) != identity:
        parts = PurePosixPath("/", directory).parts
        # Name the component that changed: the first one that is a symlink now, or the directory.
        for depth in range(2, len(parts) + 1):
            component = str(PurePosixPath(*parts[:depth]))
            info = chroot.lstat(component)
            if info is None or stat.S_ISLNK(info.st_mode):
                raise ImagePathError(f"cannot {action}: {_replaced_since(chroot, component)}")
        raise ImagePathError(f"cannot {action}: {_replaced_since(chroot, directory)}")


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
    If a package script replaced the file's directory meanwhile (a symlink to elsewhere, say),
    nothing is restored and the context ends with an ImagePathError naming it.
    """
    directory = str(PurePosixPath("/", inside).parent)
    home = chroot.identity(directory)
    if home is None or not chroot.is_dir(directory):
        raise ImagePathError(f"cannot place {inside} in the image: {directory} is not a directory")
    saved = _save(chroot, inside)
    written: Identity | None = None
    try:
        written = chroot.write_file(inside, content, mode=mode)
        log.debug("replaced %s in the image (was %s)", inside, saved.kind)
        yield chroot.path(inside, follow_last=False)
    finally:
        check_unchanged(chroot, directory, home, f"restore {inside}")
        if keep_if_replaced and written is not None and _entry_identity(chroot, inside) != written:
            log.warning("a package replaced %s during the bake; keeping its version", inside)
        else:
            _restore(chroot, inside, saved)


SYSFS_OPTIONS = ("ro", "nosuid", "nodev", "noexec")
DEV_OPTIONS = ("mode=0755", "nosuid", "noexec")
#: A devpts instance of the image's own; gid 5 is the tty group on Debian and RPM distributions.
DEVPTS_OPTIONS = ("newinstance", "ptmxmode=0666", "mode=0620", "gid=5", "nosuid", "noexec")
RUN_OPTIONS = ("mode=0755", "nosuid", "nodev")
#: The character devices of the image's /dev: (name, major, minor).
DEVICES = (
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
)
DEV_LINKS = (
    ("ptmx", "pts/ptmx"),
    ("fd", "/proc/self/fd"),
    ("stdin", "/proc/self/fd/0"),
    ("stdout", "/proc/self/fd/1"),
    ("stderr", "/proc/self/fd/2"),
)


@contextlib.contextmanager
def mounted_inside(
    chroot: Chroot,
    inside: str,
    source: str | Path,
    *,
    fstype: str | None = None,
    options: Sequence[str] = (),
    bind: bool = False,
) -> Iterator[None]:
    """``source`` mounted at ``inside`` for the context (in the bake's namespace).

    On leaving, the mount point is resolved inside the image again and unmounted only if it
    still leads to this mount: a package script that moved it, or put a symlink in its place,
    gets an ImagePathError naming it, and nothing is unmounted by a path that now leads
    elsewhere (what stays mounted goes with the image root's recursive unmount). No process of
    the image runs by then (each command's PID namespace ended with it), so what is checked
    stays so until the unmount.
    """
    mount(source, chroot.command_path(inside), fstype=fstype, options=options, bind=bind)
    mounted = chroot.identity(inside)
    assert mounted is not None
    try:
        yield
    finally:
        check_unchanged(chroot, inside, mounted, f"unmount {inside}")
        unmount(chroot.command_path(inside))


@contextlib.contextmanager
def api_filesystems(chroot: Chroot) -> Iterator[None]:
    """/sys (read-only), a /dev of the image's own (a few device nodes, a devpts instance of its
    own) and a fresh tmpfs /run inside the image, unmounted in reverse on leaving. Every command
    in the image gets a /proc of its own PID namespace (see ``Chroot.run``)."""
    with contextlib.ExitStack() as stack:
        for inside in ("/sys", "/dev", "/run"):
            if not chroot.is_dir(inside):
                log.warning("the image has no %s directory; not mounting one", inside)
        if chroot.is_dir("/sys"):
            stack.enter_context(
                mounted_inside(chroot, "/sys", "sysfs", fstype="sysfs", options=SYSFS_OPTIONS)
            )
        if chroot.is_dir("/dev"):
            stack.enter_context(
                mounted_inside(chroot, "/dev", "tmpfs", fstype="tmpfs", options=DEV_OPTIONS)
            )
            _fill_dev(chroot)
            stack.enter_context(
                mounted_inside(
                    chroot, "/dev/pts", "devpts", fstype="devpts", options=DEVPTS_OPTIONS
                )
            )
        if chroot.is_dir("/run"):
            stack.enter_context(
                mounted_inside(chroot, "/run", "tmpfs", fstype="tmpfs", options=RUN_OPTIONS)
            )
        yield


def _fill_dev(chroot: Chroot) -> None:
    """The device nodes, links and directories a package script expects in /dev, and no more:
    no block device of the host is there to be written."""
    for name, major, minor in DEVICES:
        imagefs.make_device(chroot.root, f"/dev/{name}", stat.S_IFCHR, 0o666, major, minor)
    for name, target in DEV_LINKS:
        chroot.symlink(f"/dev/{name}", target)
    chroot.make_directory("/dev/pts", 0o755)
    chroot.make_directory("/dev/shm", 0o1777)


def host_resolv_conf() -> bytes:
    """The host's resolver configuration, for name resolution inside the chroot."""
    try:
        return Path("/etc/resolv.conf").read_bytes()
    except OSError:
        return b""


@contextlib.contextmanager
def created_directories(chroot: Chroot, inside: str) -> Iterator[Path]:
    """A directory inside the image, with whatever parents it lacks; the ones made here are
    removed again on leaving, and must be empty by then. A made directory that a package script
    replaced meanwhile is not touched: the context ends with an ImagePathError naming it."""
    with contextlib.ExitStack() as stack:
        current = PurePosixPath("/")
        for part in PurePosixPath("/", inside).parts[1:]:
            current = current / part
            if chroot.is_dir(str(current)):
                continue
            if chroot.exists(str(current)):
                raise ImagePathError(f"cannot make {current} in the image: it is not a directory")
            made = chroot.make_directory(str(current))
            stack.push(_made_directory_remover(chroot, str(current), made))
        yield chroot.path(inside)


def _made_directory_remover(
    chroot: Chroot, directory: str, made: Identity
) -> Callable[[type[BaseException] | None, BaseException | None, TracebackType | None], bool]:
    def remove(
        kind: type[BaseException] | None,
        failure: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool:
        try:
            check_unchanged(chroot, directory, made, f"remove {directory}")
            chroot.remove_directory(directory)
        except OSError as exc:
            error = CleanupError(f"cannot remove {directory} from the image: {exc.strerror}")
            if failure is None:
                raise error from exc
            # Left full by what failed already (a package script's doing, say): that is the
            # error to report.
            log.warning("%s", error)
        return False

    return remove
