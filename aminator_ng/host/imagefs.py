"""Files inside a mounted image, each path resolved against the image root at every use.

openat2(2) with RESOLVE_IN_ROOT resolves every symlink and ``..`` of a path as the image sees it,
so that no path leads out of the image, whatever a package script made of it since the engine
last looked; magic links (/proc/PID/root and the like) are never followed. A change acts on a
descriptor of the directory just resolved (unlinkat, openat with O_NOFOLLOW | O_EXCL, fchmod),
never on a path string resolved earlier. ``root`` is where the engine's process reaches the
image root; ``inside`` a path as the image sees it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from aminator_ng.errors import BakeError, HostError
from aminator_ng.host import syscalls

RESOLVE = syscalls.RESOLVE_IN_ROOT | syscalls.RESOLVE_NO_MAGICLINKS
#: What a missing path (or a file where a directory should be) raises.
_ABSENT = (FileNotFoundError, NotADirectoryError)
COPY_CHUNK = 1024 * 1024


class ImagePathError(BakeError):
    """A path inside the image cannot be used as asked (a directory where a file should be, a
    symlink loop, a special file), or the image changed under the bake."""


Identity = tuple[int, int]


def _relative(inside: str | PurePosixPath) -> str:
    return str(PurePosixPath("/", inside)).lstrip("/") or "."


def _split(inside: str | PurePosixPath) -> tuple[str, str]:
    path = PurePosixPath("/", inside)
    if path.name in ("", ".", ".."):
        raise ImagePathError(f"{inside} does not name an entry inside the image")
    return str(path.parent), path.name


def _open(root: Path, inside: str | PurePosixPath, flags: int, mode: int = 0) -> int:
    root_fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        return syscalls.openat2(root_fd, _relative(inside), flags, mode, RESOLVE)
    except OSError as error:
        if error.errno == errno.ENOSYS:
            raise HostError(
                "this kernel cannot resolve paths inside an image safely (no openat2)",
                hint="bake on Linux 5.6 or later",
            ) from error
        if error.errno == errno.ELOOP:
            raise ImagePathError(
                f"cannot resolve {inside} inside the image: {error.strerror}"
            ) from error
        raise
    finally:
        os.close(root_fd)


@contextlib.contextmanager
def directory(root: Path, inside: str | PurePosixPath) -> Iterator[int]:
    """A descriptor of a directory inside the image, resolved now."""
    fd = _open(root, inside, os.O_RDONLY | os.O_DIRECTORY)
    try:
        yield fd
    finally:
        os.close(fd)


@contextlib.contextmanager
def parent(root: Path, inside: str | PurePosixPath) -> Iterator[tuple[int, str]]:
    """A descriptor of the directory that holds ``inside``, resolved now, and the entry's name."""
    parent_inside, name = _split(inside)
    with directory(root, parent_inside) as fd:
        yield fd, name


def lstat(root: Path, inside: str | PurePosixPath) -> os.stat_result | None:
    """The entry itself (a symlink is not followed), or None when there is none."""
    try:
        with parent(root, inside) as (fd, name):
            return os.stat(name, dir_fd=fd, follow_symlinks=False)
    except _ABSENT:
        return None


def stat_of(root: Path, inside: str | PurePosixPath) -> os.stat_result | None:
    """What the path leads to inside the image (symlinks followed there), or None."""
    try:
        fd = _open(root, inside, os.O_PATH)
    except _ABSENT:
        return None
    try:
        return os.fstat(fd)
    finally:
        os.close(fd)


def identity(root: Path, inside: str | PurePosixPath) -> Identity | None:
    """The (device, inode) the path leads to now, or None."""
    found = stat_of(root, inside)
    return (found.st_dev, found.st_ino) if found is not None else None


def is_file(root: Path, inside: str | PurePosixPath) -> bool:
    found = stat_of(root, inside)
    return found is not None and stat.S_ISREG(found.st_mode)


def is_dir(root: Path, inside: str | PurePosixPath) -> bool:
    found = stat_of(root, inside)
    return found is not None and stat.S_ISDIR(found.st_mode)


def read_bytes(root: Path, inside: str | PurePosixPath) -> bytes:
    """A regular file's content (a FIFO or device is refused, not read)."""
    fd = _open(root, inside, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    with os.fdopen(fd, "rb") as file:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ImagePathError(f"{inside} in the image is not a regular file")
        return file.read()


def listdir(root: Path, inside: str | PurePosixPath) -> list[str]:
    """The names in a directory inside the image; [] when there is no such directory."""
    try:
        with directory(root, inside) as fd:
            return sorted(os.listdir(fd))  # noqa: PTH208 (a descriptor, not a path)
    except _ABSENT:
        return []


def _remove_entry(dir_fd: int, name: str) -> None:
    try:
        found = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(found.st_mode):
        # rmtree's descriptor-based walk never follows a symlink, even one swapped in meanwhile.
        shutil.rmtree(name, dir_fd=dir_fd)
    else:
        os.unlink(name, dir_fd=dir_fd)


def remove(root: Path, inside: str | PurePosixPath) -> None:
    """Remove a file, a symlink (not what it points to) or a directory tree; nothing if absent."""
    try:
        with parent(root, inside) as (fd, name):
            _remove_entry(fd, name)
    except _ABSENT:
        return


def _clear_for_new_entry(dir_fd: int, name: str, inside: str | PurePosixPath) -> None:
    try:
        found = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(found.st_mode):
        raise ImagePathError(f"{inside} is a directory in the image")
    os.unlink(name, dir_fd=dir_fd)


def _fill(fd: int, content: bytes | Path) -> None:
    if isinstance(content, bytes):
        view = memoryview(content)
        while view:
            view = view[os.write(fd, view) :]
        return
    with content.open("rb") as source:
        while chunk := source.read(COPY_CHUNK):
            _fill(fd, chunk)


def write_file(
    root: Path,
    inside: str | PurePosixPath,
    content: bytes | Path,
    *,
    mode: int = 0o644,
    uid: int = 0,
    gid: int = 0,
) -> Identity:
    """A new file at ``inside`` holding ``content`` (bytes, or a host file's content): what was
    there is replaced, never written through. Returns the new file's identity."""
    with parent(root, inside) as (dir_fd, name):
        _clear_for_new_entry(dir_fd, name, inside)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(name, flags, mode, dir_fd=dir_fd)
        try:
            _fill(fd, content)
            os.fchown(fd, uid, gid)
            os.fchmod(fd, mode)
            written = os.fstat(fd)
        finally:
            os.close(fd)
    return written.st_dev, written.st_ino


def symlink(root: Path, inside: str | PurePosixPath, target: str) -> None:
    """A symlink at ``inside`` to ``target``, replacing what was there."""
    with parent(root, inside) as (dir_fd, name):
        _clear_for_new_entry(dir_fd, name, inside)
        os.symlink(target, name, dir_fd=dir_fd)


def make_directory(root: Path, inside: str | PurePosixPath, mode: int = 0o755) -> Identity:
    """A new directory at ``inside`` (its parent must exist); returns its identity."""
    with parent(root, inside) as (dir_fd, name):
        os.mkdir(name, mode, dir_fd=dir_fd)
        fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dir_fd)
        try:
            os.fchmod(fd, mode)  # exactly, whatever the umask
            made = os.fstat(fd)
        finally:
            os.close(fd)
    return made.st_dev, made.st_ino


def remove_directory(root: Path, inside: str | PurePosixPath) -> None:
    """Remove an empty directory; nothing if it is gone already."""
    try:
        with parent(root, inside) as (dir_fd, name):
            os.rmdir(name, dir_fd=dir_fd)
    except _ABSENT:
        return


def set_owner_and_mode(
    root: Path, inside: str | PurePosixPath, *, uid: int, gid: int, mode: int
) -> None:
    """Change an entry's owner and mode; a symlink is refused, never followed."""
    with parent(root, inside) as (dir_fd, name):
        try:
            flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
            fd = os.open(name, flags, dir_fd=dir_fd)
        except OSError as error:
            if error.errno != errno.ELOOP:
                raise
            raise ImagePathError(f"{inside} in the image is a symlink now") from None
        try:
            os.fchown(fd, uid, gid)
            os.fchmod(fd, mode)
        finally:
            os.close(fd)


def make_device(
    root: Path, inside: str | PurePosixPath, kind: int, mode: int, major: int, minor: int
) -> None:
    """A device node (``kind`` is stat.S_IFCHR or S_IFBLK) at ``inside``."""
    with parent(root, inside) as (dir_fd, name):
        os.mknod(name, kind | mode, os.makedev(major, minor), dir_fd=dir_fd)
        os.chmod(name, mode, dir_fd=dir_fd)  # exactly, whatever the umask
