"""The dnf provisioner: local .rpm files and package names in one dnf transaction.

dnf 4 and dnf5 are both driven through the same few subcommands; the image decides which one
runs (dnf5 when it has it). Messages are parsed in the C locale.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from aminator_ng.api import (
    BakeError,
    Chroot,
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
    staged_package_files,
)
from aminator_redhat import rpmdb, sbom, shipped
from aminator_redhat.repository import REPO_ID_PREFIX, parse_repository, written_repositories

log = logging.getLogger(__name__)

DNF_ENVIRONMENT = {"LC_ALL": "C"}
GPG_HINT = (
    "give the repository's signing key with --repo-key, or turn signature checking off, "
    "knowingly, with --no-gpgcheck (recorded in the image's tags)"
)
_NO_MATCH = re.compile(r"(?:No match for argument|Unable to find a match):\s*(\S+)")
_PROBLEM = re.compile(r"^\s*-\s+(.+)$", re.MULTILINE)
_SCRIPTLET_FAILED = re.compile(
    r"%(\w+)\(([^)]+)\) scriptlet failed, (exit status|signal) (\d+)", re.IGNORECASE
)
_NOT_SIGNED = re.compile(
    r"(?:Package (\S+?)(?:\.rpm)? is not signed|Public key for (\S+?)(?:\.rpm)? is not installed"
    r"|(\S+?)(?:\.rpm)?: (?:Header V\d \S+ Signature, key ID \S+: NOKEY|signature verification))"
)
_REPOSITORY_FAILED = re.compile(r"Failed to download metadata for repo '([^']+)'|repo '([^']+)'")


@dataclass(frozen=True)
class DnfCommand:
    """The image's dnf: its path inside the image and how it spells the options used here."""

    path: str
    nogpgcheck: str

    @classmethod
    def of(cls, chroot: Chroot) -> DnfCommand:
        """dnf5 where the image has it, else dnf 4 (``dnf`` or, on some images, only
        ``dnf-3``)."""
        if chroot.is_file("/usr/bin/dnf5"):
            return cls("/usr/bin/dnf5", "--no-gpgchecks")
        if not chroot.is_file("/usr/bin/dnf") and chroot.is_file("/usr/bin/dnf-3"):
            return cls("/usr/bin/dnf-3", "--nogpgcheck")
        return cls("/usr/bin/dnf", "--nogpgcheck")

    def argv(self, subcommand: str, *args: str, gpgcheck: bool = True) -> list[str]:
        checking = [] if gpgcheck else [self.nogpgcheck]
        return [self.path, "--assumeyes", *checking, subcommand, *args]


def dnf_spec(request: PackageRequest) -> str:
    """A PACKAGE name as dnf takes it: ``NAME=VERSION`` becomes the NEVRA form ``NAME-VERSION``."""
    version = request.pinned_version
    return f"{request.name}-{version}" if version else request.spec


def _unique(items: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(items))


def install_failure(
    result: Completed, names: Sequence[str], asked: Mapping[str, str] | None = None
) -> Exception | None:
    """What went wrong in a dnf transaction, from its exit code and output; None when nothing.
    ``asked`` maps what dnf was given back to the PACKAGE arguments, for the messages.

    A failing scriptlet does not fail a dnf transaction (rpm only warns), but it fails the bake.
    """
    asked = asked or {}
    text = f"{result.stdout}\n{result.stderr}"
    scriptlet = _SCRIPTLET_FAILED.search(text)
    if scriptlet:
        kind, package, how, number = scriptlet.groups()
        return BakeError(
            f"installing package {package} failed: its %{kind} scriptlet "
            f"{'exited with status' if how == 'exit status' else 'was killed by signal'} {number}",
            hint="see the bake log",
        )
    if result.returncode == 0:
        return None
    missing = _unique([asked.get(spec, spec) for spec in _NO_MATCH.findall(text)])
    if missing:
        return RequestError(
            f"package not found in the image's repositories: {', '.join(missing)}",
            hint="check the name (and the version of NAME=VERSION), or add a repository",
        )
    unsigned = _NOT_SIGNED.search(text)
    if unsigned or "GPG check FAILED" in text:
        package = next((g for g in unsigned.groups() if g), "") if unsigned else ""
        return RequestError(
            f"package {package or ', '.join(names)} failed its signature check",
            hint=GPG_HINT,
        )
    if re.search(r"^\s*Problem\b", text, re.MULTILINE):
        problems = _unique([p.strip() for p in _PROBLEM.findall(text)])
        return RequestError(
            f"cannot install {', '.join(names)}: {'; '.join(problems)[-400:]}",
            hint="a dependency cannot be met from the image's repositories, or a package is "
            "built for another architecture",
        )
    repository = _REPOSITORY_FAILED.search(text)
    if repository:
        repo_id = next(g for g in repository.groups() if g)
        if repo_id.startswith(REPO_ID_PREFIX):
            return RequestError(
                f"a repository cannot be used: {repo_id} ({_last_error(result)})",
                hint="check --repo (the URL must hold repodata/repomd.xml)",
            )
        return BakeError(
            f"the image's repository {repo_id} cannot be reached: {_last_error(result)}",
            hint="the image's repositories must be reachable from this host",
        )
    return BakeError(
        f"installing {', '.join(names)} failed: {_last_error(result)}", hint="see the bake log"
    )


def _last_error(result: Completed) -> str:
    lines = [line.strip() for line in result.stderr.splitlines() if line.strip()]
    return lines[-1] if lines else f"dnf exited {result.returncode}"


@contextlib.contextmanager
def cache_cleaned(chroot: Chroot, dnf: DnfCommand) -> Iterator[None]:
    """On leaving, ``dnf clean all``, and nothing left in dnf's cache directories."""
    try:
        yield
    finally:
        chroot.run(dnf.argv("clean", "all"), check=False)
        for inside in ("/var/cache/dnf", "/var/cache/libdnf5"):
            for entry in chroot.listdir(inside):
                chroot.remove(f"{inside}/{entry}")


class DnfProvisioner(Provisioner):
    name = "dnf"
    #: dnf's record of every package it installed or removed.
    HISTORY = ("/var/log/dnf.rpm.log",)

    def history_files(self) -> Sequence[str]:
        return self.HISTORY

    def __init__(self, *, gpgcheck: bool = True) -> None:
        self.gpgcheck = gpgcheck
        #: Of the packages the install brought in, those the image's own repositories gave.
        self._from_base: set[str] = set()

    def _dnf(self, chroot: Chroot) -> tuple[Chroot, DnfCommand]:
        return chroot.with_environment(**DNF_ENVIRONMENT), DnfCommand.of(chroot)

    def install(self, chroot: Chroot, packages: Sequence[PackageRequest]) -> None:
        inside, dnf = self._dnf(chroot)
        names = [p.info.name if p.info else p.spec for p in packages]
        if not self.gpgcheck:
            log.warning("package signatures are not checked in this bake (--no-gpgcheck)")
        with cache_cleaned(inside, dnf), staged_package_files(chroot, packages) as files:
            asked = {dnf_spec(p): p.spec for p in packages if not p.is_file}
            targets = files + list(asked)
            result = inside.run(dnf.argv("install", *targets, gpgcheck=self.gpgcheck), check=False)
            failure = install_failure(result, names, asked)
            if failure is not None:
                raise failure
            self._from_base = shipped.from_base_repositories(result.stdout, REPO_ID_PREFIX)

    def parse_repository(self, spec: str, keys: Sequence[Path]) -> Repository:
        return parse_repository(spec, keys)

    @contextlib.contextmanager
    def added_repositories(
        self, chroot: Chroot, repositories: Sequence[Repository]
    ) -> Iterator[None]:
        inside, dnf = self._dnf(chroot)
        # Left last: no metadata of the added repositories stays in the cache.
        with cache_cleaned(inside, dnf), written_repositories(inside, repositories):
            yield

    def satisfies_pin(self, installed: PackageInfo, pinned: str) -> bool:
        """As dnf matches ``NAME-VERSION``: a pin without a release (``hello=1.0``) is met by any
        release of that version, and a pin without an epoch by any epoch."""
        epoch, has_epoch, rest = pinned.rpartition(":")
        if has_epoch and (epoch or "0") != (installed.epoch or "0"):
            return False
        version, has_release, release = rest.partition("-")
        if has_release and release != installed.release:
            return False
        return version == installed.version

    def image_tags(self) -> Mapping[str, str]:
        return {"gpgcheck": "on" if self.gpgcheck else "off"}

    def shipped_files(self, chroot: Chroot, paths: Sequence[str]) -> dict[str, ShippedFile]:
        return shipped.shipped_files(chroot, paths)

    def from_base_repositories(self, chroot: Chroot, packages: Sequence[str]) -> set[str]:
        return self._from_base.intersection(packages)

    def query(self, chroot: Chroot, names: Sequence[str]) -> list[PackageInfo]:
        return rpmdb.installed_packages(chroot, names)

    def manifest(self, chroot: Chroot) -> list[ManifestEntry]:
        return rpmdb.manifest(chroot)

    def sbom_packages(
        self, chroot: Chroot, distro: Distro, manifest: Sequence[ManifestEntry]
    ) -> list[SbomPackage]:
        """RPM package URLs, and each package's LICENSE tag (one query of the rpm database)."""
        return sbom.sbom_packages(chroot, distro, manifest)
