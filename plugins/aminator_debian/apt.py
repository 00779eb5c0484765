"""The apt provisioner: local .deb files and package names in one apt transaction."""

from __future__ import annotations

import contextlib
import fnmatch
import logging
import os
import stat
from collections.abc import Iterator, Sequence
from pathlib import Path

from aminator_debian import sbom
from aminator_debian.cache import cache_key, verified_lists, vouched_debs
from aminator_debian.failure import install_failure
from aminator_debian.repository import (
    has_added_repositories,
    parse_repository,
    update_failure,
    written_sources,
)
from aminator_debian.shipped import (
    added_source_uris,
    changed_since,
    from_base_repositories,
    installed_versions,
    shipped_files,
)
from aminator_debian.version import package_info
from aminator_ng.api import (
    Chroot,
    CommandError,
    Distro,
    ManifestEntry,
    PackageCacheLayout,
    PackageInfo,
    PackageRequest,
    Provisioner,
    Repository,
    SbomPackage,
    ShippedFile,
    check_unchanged,
    staged_package_files,
)

log = logging.getLogger(__name__)

APT_ENVIRONMENT = {"DEBIAN_FRONTEND": "noninteractive", "DEBCONF_NONINTERACTIVE_SEEN": "true"}
APT_OPTIONS = [
    "-y",
    "-o",
    "Dpkg::Options::=--force-confdef",
    "-o",
    "Dpkg::Options::=--force-confold",
    # No fsync per unpacked file: the engine syncs the whole filesystem before the snapshot.
    "-o",
    "Dpkg::Options::=--force-unsafe-io",
]
#: With repositories added, one that cannot be fetched fails the update instead of a warning
#: (``--error-on=any``, written as the option that apt older than 1.9.11 ignores).
STRICT_UPDATE = ["-o", "APT::Update::Error-Mode=any"]
#: What a bake's lists are fetched as: no translated descriptions, which a bake never reads
#: (a third of bookworm's lists), and gzip before xz, which takes half the CPU to unpack for
#: about the same time on the wire.
UPDATE_OPTIONS = ["-o", "Acquire::Languages=none", "-o", "Acquire::CompressionTypes::Order::=gz"]
MANIFEST_FORMAT = (
    "\\t".join(
        [
            "${Package}",
            "${Version}",
            "${Architecture}",
            "${source:Package}",
            "${source:Version}",
            "${db:Status-Abbrev}",
        ]
    )
    + "\\n"
)
LISTS = "/var/lib/apt/lists"


def _is_directory(info: os.stat_result | None) -> bool:
    return info is not None and stat.S_ISDIR(info.st_mode)


@contextlib.contextmanager
def lists_cleaned(apt: Chroot) -> Iterator[None]:
    """On leaving, no package cache or lists in the image. The directories the lists directory
    held on entering (partial/) are emptied and get their owner and mode back (apt hands them
    to _apt); everything else in it but the lock goes. Every path is resolved inside the image
    as it is used, and a lists directory that a package script replaced is not touched."""
    lists = apt.identity(LISTS) if _is_directory(apt.lstat(LISTS)) else None
    kept = {
        name: info
        for name in apt.listdir(LISTS)
        if _is_directory(info := apt.lstat(f"{LISTS}/{name}"))
    }
    try:
        yield
    finally:
        apt.run(["apt-get", "clean"], check=False)
        if lists is not None:
            check_unchanged(apt, LISTS, lists, "clean the package lists")
            for name in apt.listdir(LISTS):
                _clean_entry(apt, f"{LISTS}/{name}", kept.get(name))


def _clean_entry(apt: Chroot, entry: str, before: os.stat_result | None) -> None:
    if entry.endswith("/lock"):
        return
    if before is None or not _is_directory(apt.lstat(entry)):
        apt.remove(entry)
        return
    for leftover in apt.listdir(entry):
        apt.remove(f"{entry}/{leftover}")
    apt.set_owner_and_mode(
        entry, uid=before.st_uid, gid=before.st_gid, mode=stat.S_IMODE(before.st_mode)
    )


def _has_package_lists(chroot: Chroot) -> bool:
    return any(fnmatch.fnmatch(name, "*_Packages*") for name in chroot.listdir(LISTS))


class AptProvisioner(Provisioner):
    name = "apt"
    #: apt's and dpkg's record of every install (not their terminal output).
    HISTORY = ("/var/log/apt/history.log", "/var/log/dpkg.log")

    def history_files(self) -> Sequence[str]:
        return self.HISTORY

    def __init__(self, *, install_recommends: bool = True) -> None:
        self.install_recommends = install_recommends
        #: Of the packages the install brought in, those the image's own repositories gave.
        self._from_base: set[str] = set()
        #: The keys apt trusted when the cache's key was read (``package_cache``).
        self._keyrings: tuple[bytes, ...] = ()

    def required_tools(self) -> list[str]:
        return ["dpkg-deb", "gpgv"]

    def _apt(self, chroot: Chroot) -> Chroot:
        return chroot.with_environment(**APT_ENVIRONMENT)

    def install(self, chroot: Chroot, packages: Sequence[PackageRequest]) -> None:
        apt = self._apt(chroot)
        with lists_cleaned(apt):
            if has_added_repositories(apt) or not _has_package_lists(apt):
                self.refresh_index(chroot)
            self._install(apt, packages)

    def install_cached(self, chroot: Chroot, packages: Sequence[PackageRequest]) -> None:
        self._install(self._apt(chroot), packages)

    def _install(self, apt: Chroot, packages: Sequence[PackageRequest]) -> None:
        names = [p.info.name if p.info else p.spec for p in packages]
        options = [
            *APT_OPTIONS,
            "-o",
            f"APT::Install-Recommends={'true' if self.install_recommends else 'false'}",
        ]
        with staged_package_files(apt, packages) as files:
            targets = files + [p.spec for p in packages if not p.is_file]
            before = installed_versions(apt)
            # One transaction: apt resolves, downloads and installs, and its own output says
            # why when it cannot.
            result = apt.run(["apt-get", "install", *options, *targets], check=False)
            failure = install_failure(result, names)
            if failure is not None:
                raise failure
            # While the package lists are there: which repository gave each package.
            brought_in = changed_since(before, installed_versions(apt))
            if brought_in:
                policy = apt.run(
                    ["apt-cache", "policy", *brought_in], what="read the packages' origins"
                )
                self._from_base = from_base_repositories(policy.stdout, added_source_uris(apt))

    def package_cache(self, chroot: Chroot) -> PackageCacheLayout:
        key = cache_key(chroot)
        # Kept for verifying what the fetch brings: the keys as they were before it ran.
        self._keyrings = key.keyrings
        return key.layout

    def verified_index(self, index: Path, scratch: Path) -> bool:
        return verified_lists(index, self._keyrings, scratch / "keyrings")

    def vouched_downloads(self, index: Path, downloads: Sequence[Path]) -> list[Path]:
        return vouched_debs(index, downloads)

    def prepare_index(self, chroot: Chroot) -> None:
        self._apt(chroot).run(["apt-cache", "gencaches"], what="build apt's package cache")

    def parse_repository(self, spec: str, keys: Sequence[Path]) -> Repository:
        return parse_repository(spec, keys)

    @contextlib.contextmanager
    def added_repositories(
        self, chroot: Chroot, repositories: Sequence[Repository]
    ) -> Iterator[None]:
        apt = self._apt(chroot)
        # Left last: no package lists from the repositories stay, even when install never ran.
        with lists_cleaned(apt), written_sources(apt, repositories):
            yield

    def refresh_index(self, chroot: Chroot) -> None:
        """apt-get update; with repositories added, one that cannot be fetched fails it."""
        apt = self._apt(chroot)
        added = has_added_repositories(apt)
        try:
            apt.run(
                ["apt-get", "update", *UPDATE_OPTIONS, *(STRICT_UPDATE if added else [])],
                what="apt-get update in the image",
                hint="the image's apt sources must be reachable from this host",
            )
        except CommandError as exc:
            if not added:
                raise
            failure = update_failure(exc)
            if failure is exc:
                raise
            raise failure from exc

    def shipped_files(self, chroot: Chroot, paths: Sequence[str]) -> dict[str, ShippedFile]:
        return shipped_files(chroot, paths)

    def from_base_repositories(self, chroot: Chroot, packages: Sequence[str]) -> set[str]:
        return self._from_base.intersection(packages)

    def query(self, chroot: Chroot, names: Sequence[str]) -> list[PackageInfo]:
        result = chroot.run(
            ["dpkg-query", "-W", "-f", "${Package}\\t${Version}\\t${Architecture}\\n", *names],
            check=False,
        )
        found = []
        for line in result.stdout.splitlines():
            name, version, arch = line.split("\t")
            found.append(package_info(name, version, arch))
        return found

    def manifest(self, chroot: Chroot) -> list[ManifestEntry]:
        result = chroot.run(
            ["dpkg-query", "-W", "-f", MANIFEST_FORMAT], what="list installed packages"
        )
        entries = []
        for line in result.stdout.splitlines():
            name, version, arch, source, source_version, status = line.split("\t")
            if not status.startswith("ii"):
                continue
            entries.append(
                ManifestEntry(name, version, arch, source or name, source_version or version)
            )
        return sorted(entries, key=lambda e: e.name)

    def sbom_packages(
        self, chroot: Chroot, distro: Distro, manifest: Sequence[ManifestEntry]
    ) -> list[SbomPackage]:
        """Debian package URLs, and the licences of the packages' machine-readable copyright
        files."""
        return sbom.sbom_packages(chroot, distro, manifest)
