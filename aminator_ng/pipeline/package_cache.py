"""The bake host's package cache: package lists and downloaded packages, shared by bakes.

What is cached, and where the image has it, is the provisioner's knowledge
(``Provisioner.package_cache``); the keys, locks and lifetime are the engine's. Layout::

    <cache>/<provisioner>-<key digest>/
        key.json                what determines the content (the provisioner's key)
        index/<ns>-<bake id>/   one generation of package lists, never changed once published
        index/current           a symlink naming the generation bakes use
        packages/               downloaded packages, each vouched for by a published index

A bake binds a generation read through an overlay, so what the image's package manager or a
package script writes there lands in the bake's own upper directory and goes with it: the
cache never holds what a bake's untrusted code wrote. Lists are fetched into a new generation
(one bake at a time per key, under ``refresh.lock``), which is published only when the
provisioner can verify it (signatures and hashes); a generation it cannot verify serves that
bake alone. Readers hold a shared ``flock`` on their generation, so pruning skips it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import shutil
import stat
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from aminator_ng.contract.model import PackageCacheLayout
from aminator_ng.contract.provisioner import Provisioner
from aminator_ng.errors import RequestError
from aminator_ng.host.chroot import Chroot, mounted_inside
from aminator_ng.host.durable import sync_file
from aminator_ng.host.locks import file_lock

log = logging.getLogger(__name__)

INDEX = "index"
CURRENT = "current"
PACKAGES = "packages"
DERIVED = "derived"
KEY_FILE = "key.json"
REFRESH_LOCK = "refresh.lock"
#: Generations being fetched, and generations on their way out.
NEW_PREFIX = ".new-"
TRASH_PREFIX = ".trash-"


def key_digest(provisioner: str, key: Mapping[str, str]) -> str:
    text = json.dumps({"provisioner": provisioner, **key}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def _generation_time(name: str) -> float:
    """When a generation was fetched, from its name (``<ns>-<bake id>``)."""
    return int(name.split("-", 1)[0]) / 1e9


@contextlib.contextmanager
def _shared_lock(directory: Path) -> Iterator[bool]:
    """A shared flock on a generation for the context; False when it is gone (pruned)."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        yield False
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        # Pruning renames a generation before removing it: what we locked must still be there.
        try:
            still = directory.stat().st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            still = False
        yield still
    finally:
        os.close(fd)


def _remove_unless_in_use(directory: Path) -> bool:
    """Remove a generation no bake holds; False (and nothing done) when one does."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        return True
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        trash = directory.with_name(f"{TRASH_PREFIX}{directory.name}")
        directory.rename(trash)
    finally:
        os.close(fd)
    shutil.rmtree(trash, ignore_errors=True)
    return True


def _link_or_copy(source: Path, target: Path) -> None:
    """``target`` holding ``source``'s content, put in place whole (rename)."""
    partial = target.with_name(f".{target.name}.{os.getpid()}")
    partial.unlink(missing_ok=True)
    try:
        os.link(source, partial)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        shutil.copyfile(source, partial)
    partial.replace(target)


def unpublished_lists(cache_dir: Path, bake_id: str) -> list[Path]:
    """The package lists a bake was fetching when it died, never published: for ``aminate
    cleanup`` (the next refresh of the same key removes them too)."""
    return sorted(cache_dir.glob(f"*/{INDEX}/{NEW_PREFIX}{bake_id}"))


def disk_usage(path: Path) -> int:
    """Bytes allocated under ``path``, each hard-linked inode counted once."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for directory, _, files in os.walk(path):  # Path.walk is Python 3.12's
        for name in files:
            with contextlib.suppress(FileNotFoundError):
                info = Path(directory, name).lstat()
                if (info.st_dev, info.st_ino) not in seen:
                    seen.add((info.st_dev, info.st_ino))
                    total += info.st_blocks * 512
    return total


@dataclass(frozen=True)
class CacheEntryUsage:
    """One key's part of the cache, as ``aminate cache show`` prints it."""

    path: Path
    provisioner: str
    key: Mapping[str, str]
    index_fetched: float | None
    packages: int
    size_bytes: int

    def as_dict(self) -> dict[str, object]:
        return {
            "path": str(self.path),
            "provisioner": self.provisioner,
            "key": dict(self.key),
            "index_fetched": self.index_fetched,
            "packages": self.packages,
            "size_bytes": self.size_bytes,
        }


@dataclass(frozen=True)
class BakeIdentity:
    """The bake using the cache: its id, when it began, and its base image's id."""

    bake_id: str
    started: float
    base: str


@dataclass(frozen=True)
class CacheUse:
    """What one bake's install got from the cache, for its log and result."""

    entry: Path
    #: "fresh" (cached lists used), "refreshed" (fetched and published), "private" (fetched,
    #: not verifiable, so not shared).
    index: str
    packages_offered: int

    def as_dict(self) -> dict[str, object]:
        return {
            "entry": str(self.entry),
            "index": self.index,
            "packages_offered": self.packages_offered,
        }


class CacheEntry:
    """One key's directory."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.index = path / INDEX
        self.packages = path / PACKAGES

    def derived(self, generation: Path, base: str) -> Path:
        """Where what the package manager derives from a generation is kept for one base
        image (built by that image's own package manager, so trusted for it alone)."""
        return self.path / DERIVED / generation.name / base

    def current(self) -> Path | None:
        try:
            name = os.readlink(self.index / CURRENT)
        except FileNotFoundError:
            return None
        return self.index / name

    def is_fresh(self, generation: Path | None, max_age_s: float, since: float) -> bool:
        """Young enough to use; with a ``since``, fetched at or after that time."""
        if generation is None or max_age_s <= 0:
            return False
        fetched = _generation_time(generation.name)
        return time.time() - fetched < max_age_s and fetched >= since

    def publish(self, fetched: Path, name: str) -> Path:
        """Make a fetched generation the current one, atomically, and prune the others."""
        generation = self.index / name
        fetched.rename(generation)
        link = self.index / f".{CURRENT}.{os.getpid()}"
        link.unlink(missing_ok=True)
        link.symlink_to(name)
        link.replace(self.index / CURRENT)
        self.prune(keep=generation)
        return generation

    def prune(self, keep: Path | None) -> None:
        """Remove every generation but ``keep`` that no bake holds. Called with the refresh
        lock held, so a half-fetched generation left here is a killed bake's."""
        for entry in self.index.iterdir():
            if entry.name == CURRENT or entry == keep:
                continue
            if entry.name.startswith((NEW_PREFIX, TRASH_PREFIX)):
                shutil.rmtree(entry, ignore_errors=True)
            elif entry.is_dir() and not _remove_unless_in_use(entry):
                log.debug("package lists %s are in use; kept", entry)
        derived = self.path / DERIVED
        for made_from in derived.iterdir() if derived.is_dir() else ():
            if not (self.index / made_from.name).is_dir():
                shutil.rmtree(made_from, ignore_errors=True)

    def usage(self) -> CacheEntryUsage:
        try:
            described = json.loads((self.path / KEY_FILE).read_text())
        except (OSError, ValueError):
            described = {}
        current = self.current()
        packages = [p for p in self.packages.glob("*") if not p.name.startswith(".")]
        return CacheEntryUsage(
            self.path,
            str(described.pop("provisioner", self.path.name.rsplit("-", 1)[0])),
            described,
            _generation_time(current.name) if current else None,
            len(packages),
            disk_usage(self.path),
        )


class PackageCache:
    """The cache directory; ``bound`` gives one bake's install its part of it."""

    def __init__(self, directory: Path, *, max_age_s: float = 3600, refresh: bool = False) -> None:
        self.directory = directory
        self.max_age_s = max_age_s
        self.refresh = refresh

    def entries(self) -> list[CacheEntry]:
        if not self.directory.is_dir():
            return []
        return [CacheEntry(p) for p in sorted(self.directory.iterdir()) if p.is_dir()]

    def clear(self) -> tuple[int, list[Path]]:
        """Remove what no bake is using: bytes freed, and the generations kept as in use."""
        freed = 0
        in_use: list[Path] = []
        for entry in self.entries():
            before = disk_usage(entry.path)
            with file_lock(entry.path / REFRESH_LOCK):
                (entry.index / CURRENT).unlink(missing_ok=True)
                if entry.index.is_dir():
                    entry.prune(keep=None)
                    in_use += [g for g in entry.index.iterdir() if not g.name.startswith(".")]
                shutil.rmtree(entry.packages, ignore_errors=True)
            if not in_use:
                shutil.rmtree(entry.path, ignore_errors=True)
            freed += before - (disk_usage(entry.path) if entry.path.exists() else 0)
        return freed, in_use

    @contextlib.contextmanager
    def bound(
        self,
        chroot: Chroot,
        provisioner: Provisioner,
        layout: PackageCacheLayout,
        scratch: Path,
        bake: BakeIdentity,
    ) -> Iterator[CacheUse]:
        """For the context: the provisioner's index (fresh: fetched now when the cached one is
        too old, or when a refresh was asked for) and its cached downloads in the image, each
        through an overlay whose upper directory is ``scratch``'s. Leaving without an error,
        what the bake downloaded and the provisioner vouches for joins the cache first."""
        digest = key_digest(provisioner.name, layout.key)
        entry = CacheEntry(self.directory / f"{provisioner.name}-{digest}")
        for directory in (entry.index, entry.packages):
            directory.mkdir(parents=True, exist_ok=True)
        if not (entry.path / KEY_FILE).exists():
            described = {"provisioner": provisioner.name, **layout.key}
            (entry.path / KEY_FILE).write_text(json.dumps(described, indent=2, sort_keys=True))
        # With --refresh, only lists fetched since this bake began will do.
        since = bake.started if self.refresh else 0.0
        with contextlib.ExitStack() as stack:
            # Last out: the upper directories, and lists fetched for this bake alone.
            stack.callback(shutil.rmtree, scratch, ignore_errors=True)
            generation = self._held_fresh(entry, since, stack)
            how = "fresh"
            offered = scratch / "downloads-lower"
            packages_dir = offered / layout.packages_subdir
            packages_dir.mkdir(parents=True)
            cached = sorted(p for p in entry.packages.iterdir() if not p.name.startswith("."))
            for package in cached:
                _link_or_copy(package, packages_dir / package.name)
            if generation is not None:
                derived = entry.derived(generation, bake.base)
                for name in layout.derived:
                    if (derived / name).is_file():
                        _link_or_copy(derived / name, offered / name)
            # Before the lists: even fetching them writes the package manager's own caches.
            upper = stack.enter_context(
                _overlay(chroot, layout.downloads, offered, scratch / "downloads")
            )
            if generation is None:
                with file_lock(entry.path / REFRESH_LOCK):
                    # Another bake may have fetched them while this one waited for the lock.
                    generation = self._held_fresh(entry, since, stack)
                    if generation is None:
                        generation, how = self._fetch(
                            entry, chroot, provisioner, layout, scratch, bake.bake_id, stack
                        )
            log.info("package lists %s (%s)", how, generation)
            stack.enter_context(_overlay(chroot, layout.index, generation, scratch / "index"))
            if how != "private" and layout.derived:
                self._keep_derived(entry, generation, bake.base, chroot, provisioner, layout, upper)
            yield CacheUse(entry.path, how, len(cached))
            if how != "private":
                self._keep_downloads(entry, generation, provisioner, upper / layout.packages_subdir)

    def _keep_derived(
        self,
        entry: CacheEntry,
        generation: Path,
        base: str,
        chroot: Chroot,
        provisioner: Provisioner,
        layout: PackageCacheLayout,
        upper: Path,
    ) -> None:
        """What the package manager derives from the lists, kept for the next bake of this
        base on these lists: made now, before any package script can write there."""
        derived = entry.derived(generation, base)
        if derived.is_dir():
            return
        if not all((upper / name).is_file() for name in layout.derived):
            provisioner.prepare_index(chroot)
        made = derived.with_name(f"{NEW_PREFIX}{derived.name}.{os.getpid()}")
        made.mkdir(parents=True)
        try:
            for name in layout.derived:
                if (upper / name).is_file():
                    shutil.copyfile(upper / name, made / name)
                    sync_file(made / name)
            made.rename(derived)
        except OSError as exc:  # another bake of this base kept them first, or the disk is full
            log.debug("not keeping %s: %s", derived, exc)
            shutil.rmtree(made, ignore_errors=True)

    def _held_fresh(
        self, entry: CacheEntry, since: float, held: contextlib.ExitStack
    ) -> Path | None:
        """The current generation, shared-locked in ``held``, when it is fresh enough."""
        current = entry.current()
        if current is None or not entry.is_fresh(current, self.max_age_s, since):
            return None
        return current if held.enter_context(_shared_lock(current)) else None

    def _fetch(
        self,
        entry: CacheEntry,
        chroot: Chroot,
        provisioner: Provisioner,
        layout: PackageCacheLayout,
        scratch: Path,
        bake_id: str,
        held: contextlib.ExitStack,
    ) -> tuple[Path, str]:
        """Fetch a new generation (from a copy of the current one, so that the package manager
        asks only for what changed) and publish it if the provisioner can verify it. Called with
        the refresh lock held."""
        current = entry.current()
        entry.prune(keep=current)
        fetched = entry.index / f"{NEW_PREFIX}{bake_id}"
        try:
            if current is not None:
                shutil.copytree(current, fetched, symlinks=True, copy_function=_clone_file)
            else:
                fetched.mkdir()
            with mounted_inside(chroot, layout.index, fetched, bind=True):
                provisioner.refresh_index(chroot)
            if provisioner.verified_index(fetched, scratch):
                generation = entry.publish(fetched, f"{time.time_ns()}-{bake_id}")
                held.enter_context(_shared_lock(generation))
                return generation, "refreshed"
            private = scratch / "index-fetched"
            fetched.rename(private)
        except BaseException:
            shutil.rmtree(fetched, ignore_errors=True)
            raise
        log.warning(
            "the package lists fetched cannot be verified (a repository without a signed "
            "Release file, say): this bake uses them, and they are not cached"
        )
        return private, "private"

    def _keep_downloads(
        self, entry: CacheEntry, generation: Path, provisioner: Provisioner, downloaded: Path
    ) -> None:
        if not downloaded.is_dir():
            return
        new = []
        for path in sorted(downloaded.iterdir()):
            info = path.lstat()
            # A regular file apt wrote (not a link a package script made to something else).
            regular = stat.S_ISREG(info.st_mode) and info.st_nlink == 1
            if regular and not (entry.packages / path.name).exists():
                new.append(path)
        if not new:
            return
        vouched = provisioner.vouched_downloads(generation, new)
        try:
            entry.packages.mkdir(exist_ok=True)  # an 'aminate cache clear' may have run
            for path in vouched:
                sync_file(path)
                _link_or_copy(path, entry.packages / path.name)
        except OSError as exc:  # the bake succeeded: the next one downloads them again
            log.warning("cannot keep the downloaded packages in the cache: %s", exc)
            return
        log.info("%d downloaded packages kept in the cache", len(vouched))


def _clone_file(source: str, target: str) -> None:
    """One file of a generation copied for a refresh: a clone where the filesystem can."""
    with Path(source).open("rb") as reading, Path(target).open("wb") as writing:
        try:
            fcntl.ioctl(writing.fileno(), FICLONE, reading.fileno())
        except OSError:
            shutil.copyfileobj(reading, writing, 1 << 20)
    shutil.copystat(source, target)


#: ioctl(2) FICLONE: share the source's extents (XFS, btrfs).
FICLONE = 0x40049409


@contextlib.contextmanager
def _overlay(chroot: Chroot, inside: str, lower: Path, scratch: Path) -> Iterator[Path]:
    """``lower`` at ``inside`` in the image for the context, writes going to an upper directory
    under ``scratch``, which is returned (removed with the bake's work directory)."""
    upper, work = scratch / "upper", scratch / "work"
    upper.mkdir(parents=True)
    work.mkdir()
    if not chroot.is_dir(inside):
        raise RequestError(
            f"the image has no {inside} directory for the package cache",
            hint="bake with --no-package-cache",
        )
    # volatile: no syncfs of the host's filesystem at unmount; what is kept from the upper
    # directory is synced on its own (sync_file), the rest is thrown away.
    options = [f"lowerdir={lower}", f"upperdir={upper}", f"workdir={work}", "volatile"]
    with mounted_inside(chroot, inside, "overlay", fstype="overlay", options=options):
        yield upper
