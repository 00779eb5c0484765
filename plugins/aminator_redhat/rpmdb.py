"""RPM metadata: package files read on the host with ``rpm -qp``, installed packages read from
the image's own rpm database with ``rpm -q`` inside the chroot."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

from aminator_ng.api import Chroot, ManifestEntry, PackageInfo, RequestError, run

#: The first bytes of every RPM file (the lead).
RPM_MAGIC = b"\xed\xab\xee\xdb"
#: name, epoch (empty when none), version, release, arch, and whether it is a binary package.
INFO_FORMAT = (
    "%{NAME}\\t%|EPOCH?{%{EPOCH}}:{}|\\t%{VERSION}\\t%{RELEASE}\\t%{ARCH}"
    "\\t%|SOURCERPM?{binary}:{source}|\\n"
)
#: name, [epoch:]version-release, arch, source rpm file name (empty when none).
MANIFEST_FORMAT = (
    "%{NAME}\\t%|EPOCH?{%{EPOCH}:}:{}|%{VERSION}-%{RELEASE}\\t%{ARCH}"
    "\\t%|SOURCERPM?{%{SOURCERPM}}:{}|\\n"
)
#: The rpm database lists imported signing keys as packages of this name; they are not packages.
PUBKEY_NAME = "gpg-pubkey"
_SOURCE_SUFFIXES = (".src.rpm", ".nosrc.rpm")


def is_rpm_file(path: Path) -> bool:
    try:
        with path.open("rb") as file:
            return file.read(len(RPM_MAGIC)) == RPM_MAGIC
    except OSError:
        return False


def _info(fields: Sequence[str]) -> PackageInfo:
    name, epoch, version, release, arch = fields[:5]
    # An explicit epoch of 0 is no epoch, as rpm compares versions.
    epoch = "" if epoch == "0" else epoch
    return PackageInfo(name=name, version=version, release=release, arch=arch, epoch=epoch)


def read_rpm_file(path: Path) -> PackageInfo:
    """A package file's metadata; RequestError when it is damaged or a source package."""
    # An empty database of our own: the host's rpm (Debian's keeps one under ~/.rpmdb) is
    # neither read nor created.
    with tempfile.TemporaryDirectory(prefix="aminator-ng-rpmdb-") as dbpath:
        result = run(
            ["rpm", "--dbpath", dbpath, "--query", "--package", "--queryformat", INFO_FORMAT, path],
            check=False,
        )
    fields = result.stdout.rstrip("\n").split("\t")
    if result.returncode != 0 or len(fields) != 6 or not fields[0]:
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        said = errors[-1].removeprefix("error: ").removeprefix(f"{path}: ") if errors else ""
        raise RequestError(
            f"not a valid .rpm package: {path}",
            hint=f"rpm says: {said}" if said else "the file is damaged or not an .rpm",
        )
    if fields[5] != "binary":
        raise RequestError(
            f"{path} is a source package, which cannot be installed",
            hint="build the binary package from it with rpmbuild --rebuild",
        )
    return _info(fields)


def installed_packages(chroot: Chroot, names: Sequence[str]) -> list[PackageInfo]:
    """The installed packages of these names (the newest last when several are installed)."""
    result = chroot.run(["rpm", "--query", "--queryformat", INFO_FORMAT, *names], check=False)
    lines = [line.split("\t") for line in result.stdout.splitlines()]
    return [_info(fields) for fields in lines if len(fields) == 6]


def source_of(source_rpm: str) -> tuple[str, str] | None:
    """(name, version-release) of a source rpm file name such as ``bash-5.1.8-9.el9.src.rpm``."""
    for suffix in _SOURCE_SUFFIXES:
        if source_rpm.endswith(suffix):
            parts = source_rpm.removesuffix(suffix).rsplit("-", 2)
            if len(parts) == 3 and all(parts):
                return parts[0], f"{parts[1]}-{parts[2]}"
    return None


def parse_manifest(text: str) -> list[ManifestEntry]:
    """Manifest entries from ``rpm -qa`` output in MANIFEST_FORMAT; signing keys are left out.

    The source version carries the binary's epoch: a source rpm's file name has none, and the
    epoch is the spec file's, shared by every package built from it.
    """
    entries = []
    for line in text.splitlines():
        fields = line.split("\t")
        if len(fields) != 4 or fields[0] == PUBKEY_NAME:
            continue
        name, version, arch, source_rpm = fields
        version = version.removeprefix("0:")
        epoch = version.partition(":")[0] + ":" if ":" in version else ""
        source = source_of(source_rpm)
        if source is None:
            entries.append(ManifestEntry(name, version, arch, name, version))
        else:
            entries.append(ManifestEntry(name, version, arch, source[0], epoch + source[1]))
    return sorted(entries, key=lambda e: (e.name, e.arch, e.version))


def manifest(chroot: Chroot) -> list[ManifestEntry]:
    result = chroot.run(
        ["rpm", "--query", "--all", "--queryformat", MANIFEST_FORMAT],
        what="list installed packages",
    )
    return parse_manifest(result.stdout)


def signing_keys(chroot: Chroot) -> set[str]:
    """The signing keys in the image's rpm database, as ``gpg-pubkey-VERSION-RELEASE``."""
    result = chroot.run(
        ["rpm", "--query", "--queryformat", "%{NAME}-%{VERSION}-%{RELEASE}\\n", PUBKEY_NAME],
        check=False,
    )
    return {line for line in result.stdout.split() if line.startswith(f"{PUBKEY_NAME}-")}
