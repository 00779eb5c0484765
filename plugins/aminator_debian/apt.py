"""The apt provisioner: local .deb files and package names in one apt transaction."""

from __future__ import annotations

import contextlib
import fnmatch
import logging
import os
import re
import stat
from collections.abc import Iterator, Sequence

from aminator_debian import sbom
from aminator_debian.repository import has_added_repositories, update_failure, written_sources
from aminator_debian.shipped import (
    added_source_uris,
    from_base_repositories,
    installed_names,
    shipped_files,
)
from aminator_debian.version import package_info
from aminator_ng.api import (
    BakeError,
    Chroot,
    CommandError,
    Completed,
    Distro,
    ManifestEntry,
    PackageInfo,
    PackageRequest,
    Provisioner,
    Repository,
    RequestError,
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
]
#: With repositories added, one that cannot be fetched fails the update instead of a warning
#: (``--error-on=any``, written as the option that apt older than 1.9.11 ignores).
STRICT_UPDATE = ["-o", "APT::Update::Error-Mode=any"]
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
_UNLOCATABLE = re.compile(r"E: Unable to locate package (\S+)")
_NO_CANDIDATE = re.compile(r"E: Package '([^']+)' has no installation candidate")
_NO_VERSION = re.compile(r"E: Version '([^']+)' for '([^']+)' was not found")
_DPKG_FAILED = re.compile(r"dpkg: error processing (?:package|archive) (\S+) \(")
_SCRIPT_FAILED = re.compile(
    r"(?:installed|new) \S+ package ((?:pre|post)-(?:installation|removal) script)"
    r" subprocess returned error exit status (\d+)"
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


def _unresolvable(error: CommandError, names: Sequence[str]) -> RequestError:
    text = error.stderr_tail
    version = _NO_VERSION.search(text)
    if version:
        return RequestError(
            f"version {version.group(1)} of package {version.group(2)} not found in the "
            "image's repositories",
            hint="check the version (apt-cache policy NAME lists them), or add a repository",
        )
    for pattern in (_UNLOCATABLE, _NO_CANDIDATE):
        match = pattern.search(text)
        if match:
            return RequestError(
                f"package not found in the image's repositories: {match.group(1)}",
                hint="check the name, or add a repository",
            )
    lines = [line for line in text.splitlines() if line.strip()]
    detail = "; ".join(
        line.strip() for line in lines if not line.startswith("E: Unable to correct")
    )
    return RequestError(
        f"cannot install {', '.join(names)}: {detail[-400:] or 'apt refused the request'}",
        hint="a dependency cannot be met from the image's repositories",
    )


def _install_failure(result: Completed, names: Sequence[str]) -> BakeError:
    """Name the package whose install failed, and why, from apt's and dpkg's output."""
    text = f"{result.stdout}\n{result.stderr}"
    failed = _DPKG_FAILED.search(text)
    script = _SCRIPT_FAILED.search(text)
    package = failed.group(1) if failed else ", ".join(names)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    reason = (
        f"its {script.group(1)} returned exit status {script.group(2)}"
        if script
        else (lines[-1] if lines else f"apt-get exited {result.returncode}")
    )
    return BakeError(f"installing package {package} failed: {reason}", hint="see the bake log")


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

    def required_tools(self) -> list[str]:
        return ["dpkg-deb"]

    def _apt(self, chroot: Chroot) -> Chroot:
        return chroot.with_environment(**APT_ENVIRONMENT)

    def install(self, chroot: Chroot, packages: Sequence[PackageRequest]) -> None:
        apt = self._apt(chroot)
        names = [p.info.name if p.info else p.spec for p in packages]
        options = [
            *APT_OPTIONS,
            "-o",
            f"APT::Install-Recommends={'true' if self.install_recommends else 'false'}",
        ]
        with lists_cleaned(apt):
            self._update(apt)
            with staged_package_files(chroot, packages) as files:
                targets = files + [p.spec for p in packages if not p.is_file]
                try:
                    simulated = apt.run(
                        ["apt-get", "install", "--simulate", *options, *targets],
                        what="resolve packages",
                    )
                except CommandError as exc:
                    raise _unresolvable(exc, names) from exc
                result = apt.run(["apt-get", "install", *options, *targets], check=False)
                if result.returncode != 0:
                    raise _install_failure(result, names)
                # While the package lists are there: which repository gave each package.
                brought_in = installed_names(simulated.stdout)
                if brought_in:
                    policy = apt.run(
                        ["apt-cache", "policy", *brought_in], what="read the packages' origins"
                    )
                    self._from_base = from_base_repositories(policy.stdout, added_source_uris(apt))

    @contextlib.contextmanager
    def added_repositories(
        self, chroot: Chroot, repositories: Sequence[Repository]
    ) -> Iterator[None]:
        for repository in repositories:
            if repository.url is not None:
                raise RequestError(
                    f"apt needs a one-line source, not a bare URL: --repo {repository.spec}",
                    hint=f"write it as --repo 'deb {repository.url} SUITE COMPONENT'",
                )
        apt = self._apt(chroot)
        # Left last: no package lists from the repositories stay, even when install never ran.
        with lists_cleaned(apt), written_sources(apt, repositories):
            yield

    def _update(self, apt: Chroot) -> None:
        """Fetch the package lists when the image has none, or repositories were added."""
        added = has_added_repositories(apt)
        if not added and _has_package_lists(apt):
            return
        try:
            apt.run(
                ["apt-get", "update", *(STRICT_UPDATE if added else [])],
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
