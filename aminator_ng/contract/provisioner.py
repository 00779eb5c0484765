"""The interface of a provisioner: how packages get into a mounted image."""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import ClassVar
from urllib.parse import quote

from aminator_ng.contract.model import (
    Distro,
    ManifestEntry,
    PackageCacheLayout,
    PackageInfo,
    PackageRequest,
    Repository,
    SbomPackage,
    ShippedFile,
)
from aminator_ng.errors import RequestError
from aminator_ng.host.chroot import Chroot, check_unchanged, created_directories
from aminator_ng.host.imagefs import Identity


class Provisioner(abc.ABC):
    """Installs packages into a chroot and reports what is installed there."""

    #: The name environments and logs use ("apt", "dnf").
    name: ClassVar[str]

    def required_tools(self) -> list[str]:
        """Host tools this provisioner runs, checked before a bake acquires anything."""
        return []

    def parse_repository(self, spec: str, keys: Sequence[Path]) -> Repository:
        """A ``--repo`` spec that is not a directory, as this provisioner reads it: a
        Repository with ``parsed`` set (any type of the provisioner's own), and the ``keys``
        (the bake's ``--repo-key`` files) that sign it, if it takes them. Raise RequestError
        naming the spec, and saying how to write one, when it is not a repository here.

        Called in step ``detect_distro``, once the provisioner is known. The default refuses:
        a provisioner without repository support says so."""
        raise RequestError(
            f"provisioner {self.name} cannot add repositories: --repo {spec}",
            hint="leave out --repo (and repo in [bake]), or use a provisioner that can",
        )

    def added_repositories(
        self, chroot: Chroot, repositories: Sequence[Repository]
    ) -> AbstractContextManager[None]:
        """The bake's ``--repo`` repositories known to the package manager for the context, and
        every trace of them (sources, keys, indexes, package lists) gone from the image after it.

        Entered in chroot setup, only when the bake has repositories, before ``install``; left
        in chroot teardown. A directory repository is bind-mounted read-only at ``mounted_at``
        by the engine, which removes the directories it made once the context is left. The
        default refuses repositories, so that a provisioner without support says so.
        """
        if repositories:
            raise RequestError(
                f"provisioner {self.name} cannot add repositories",
                hint="leave out --repo (and repo in [bake]), or use a provisioner that can",
            )
        return contextlib.nullcontext()

    def satisfies_pin(self, installed: PackageInfo, pinned: str) -> bool:
        """Whether the installed package is the version a ``NAME=VERSION`` spec asked for.

        Checked after the install, for every pinned name. The default wants the exact
        ``[epoch:]version[-release]``, an epoch of 0 being no epoch.
        """
        return pinned.removeprefix("0:") == installed.full_version

    def history_files(self) -> Sequence[str]:
        """The package manager's own history of what it installed (paths inside the image),
        which the hygiene rule ``logs`` keeps when ``keep_package_history`` says so."""
        return ()

    def image_tags(self) -> Mapping[str, str]:
        """Tags that record how this provisioner installed (signature checking turned off,
        say). Merged over the finalizers' tags; ``--tag`` still overrides them."""
        return {}

    @abc.abstractmethod
    def install(self, chroot: Chroot, packages: Sequence[PackageRequest]) -> None:
        """Install package files and names in one transaction, dependencies included.

        Raise RequestError (exit 2) for a package the repositories do not have or whose
        dependencies cannot be met, and BakeError (exit 1) when the install itself fails
        (a failing maintainer script), naming the package; either quoting the package
        manager's own reason.

        With the package cache in use (see ``package_cache``), the engine calls
        ``install_cached`` instead.
        """

    def package_cache(self, chroot: Chroot) -> PackageCacheLayout | None:
        """What of this provisioner's work the bake host's package cache keeps, read from the
        image (its sources, keys and architectures make the key). None, the default: no cache.

        A provisioner that returns a layout implements ``refresh_index``, ``verified_index``,
        ``vouched_downloads`` and ``install_cached`` too.
        """
        return None

    def refresh_index(self, chroot: Chroot) -> None:
        """Fetch the package lists (``apt-get update``) into the layout's index directory,
        which the engine has bound, empty or holding the previous lists, in the image."""
        raise NotImplementedError

    def verified_index(self, index: Path, scratch: Path) -> bool:
        """Whether every file of a fetched index (a host directory) is what the repositories
        signed, checked on the host against the keys read by ``package_cache``; only then is
        it shared with other bakes. ``scratch`` is the bake's, for temporary files."""
        return False

    def vouched_downloads(self, index: Path, downloads: Sequence[Path]) -> list[Path]:
        """Of the package files a bake downloaded (host paths), those whose digest a verified
        ``index`` lists: only they join the cache."""
        return []

    def prepare_index(self, chroot: Chroot) -> None:
        """Make the layout's ``derived`` files from the index now (apt: ``apt-cache
        gencaches``), so that the engine keeps them before any package script runs. Needed
        only with ``derived`` files in the layout."""
        raise NotImplementedError

    def install_cached(self, chroot: Chroot, packages: Sequence[PackageRequest]) -> None:
        """``install``, with the index fresh and the cached downloads in place in the image:
        neither fetch the index nor clean the downloads (the engine's overlays take them away)."""
        raise NotImplementedError

    @abc.abstractmethod
    def query(self, chroot: Chroot, names: Sequence[str]) -> list[PackageInfo]:
        """The installed packages of these names, from the image's package database."""

    @abc.abstractmethod
    def manifest(self, chroot: Chroot) -> list[ManifestEntry]:
        """Every package installed in the image."""

    def sbom_packages(
        self, chroot: Chroot, distro: Distro, manifest: Sequence[ManifestEntry]
    ) -> list[SbomPackage]:
        """One SBOM component per manifest row, in the manifest's order: its package URL and
        the licences it declares. The default gives ``pkg:generic`` URLs and no licences."""
        return [
            SbomPackage(
                entry.name,
                entry.version,
                entry.arch,
                f"pkg:generic/{quote(entry.name)}@{quote(entry.version)}?arch={quote(entry.arch)}",
            )
            for entry in manifest
        ]

    def shipped_files(self, chroot: Chroot, paths: Sequence[str]) -> dict[str, ShippedFile]:
        """Of these image paths, those an installed package owns, with the digest it shipped.
        The secret scan asks for the files it found something in. The default knows none."""
        return {}

    def from_base_repositories(self, chroot: Chroot, packages: Sequence[str]) -> set[str]:
        """Of these installed packages, those the image's own repositories gave (not a package
        file, not a ``--repo`` of the bake). The default claims none, so that every finding of
        the secret scan counts."""
        return set()


#: Where package files are copied inside the image for the install, then removed: on the bake's
#: own tmpfs /run, so that not even a killed bake leaves them on the image's disk.
STAGING_DIR = "/run/aminator-ng/packages"


@contextlib.contextmanager
def staged_package_files(chroot: Chroot, packages: Sequence[PackageRequest]) -> Iterator[list[str]]:
    """The requests' package files copied into the image for the context, as paths the chroot
    sees (in request order); removed again on leaving, with the directories made for them."""
    files = [p.path for p in packages if p.path is not None]
    if not files:
        yield []
        return
    with created_directories(chroot, STAGING_DIR), contextlib.ExitStack() as stack:
        staging = chroot.identity(STAGING_DIR)
        assert staging is not None
        inside: list[str] = []
        for index, path in enumerate(files):
            staged = f"{STAGING_DIR}/{index:02d}-{path.name}"
            stack.callback(_remove_staged, chroot, staging, staged)
            chroot.write_file(staged, path)
            inside.append(staged)
        yield inside


def _remove_staged(chroot: Chroot, staging: Identity, staged: str) -> None:
    check_unchanged(chroot, STAGING_DIR, staging, f"remove {staged}")
    chroot.remove(staged)
