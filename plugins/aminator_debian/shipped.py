"""What dpkg and apt know of installed files and where their packages came from, for the
engine's secret scan: the md5 digests packages shipped (``info/*.md5sums`` and the conffiles'
in the status database), and which repository gave each package a bake installed."""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence

from aminator_debian.repository import SOURCES_FILE, SourceLine
from aminator_ng.api import Chroot, ShippedFile

DPKG_INFO = "/var/lib/dpkg/info"
#: Where ``apt-cache policy`` says a version is installed, not where it came from.
DPKG_STATUS = "/var/lib/dpkg/status"
_POLICY_PACKAGE = re.compile(r"^(\S+):$")
_POLICY_VERSION = re.compile(r"^ (\*\*\*| {3}) \S+ -?\d+$")
_POLICY_SOURCE = re.compile(r"^ {8}-?\d+ (\S+)")
_STATUS_FIELD = re.compile(r"^(Package|Architecture|Version|Status): (.*)$", re.M)


def _package_of(info_name: str) -> str:
    """``openssh-server`` of ``openssh-server.md5sums`` or ``libc6:amd64.md5sums``."""
    return info_name.removesuffix(".md5sums").split(":")[0]


def shipped_files(chroot: Chroot, paths: Sequence[str]) -> dict[str, ShippedFile]:
    wanted = set(paths)
    found: dict[str, ShippedFile] = {}
    if not wanted or not chroot.is_dir(DPKG_INFO):
        return found
    for name in chroot.listdir(DPKG_INFO):
        if not name.endswith(".md5sums"):
            continue
        for line in chroot.read_bytes(f"{DPKG_INFO}/{name}").decode(errors="replace").splitlines():
            digest, _, relative = line.partition("  ")
            path = "/" + relative
            if path in wanted:
                found[path] = ShippedFile(path, _package_of(name), "md5", digest)
    result = chroot.run(
        ["dpkg-query", "-W", "-f", "${Package}\\n${Conffiles}\\n"], what="read the conffiles"
    )
    package = ""
    for line in result.stdout.splitlines():
        if not line.startswith(" "):
            package = line.strip()
            continue
        fields = line.split()
        if len(fields) >= 2 and fields[0] in wanted:
            found[fields[0]] = ShippedFile(fields[0], package, "md5", fields[1])
    return found


def added_source_uris(chroot: Chroot) -> set[str]:
    """The URIs of the repositories the bake added (its own sources file)."""
    if not chroot.is_file(SOURCES_FILE):
        return set()
    uris: set[str] = set()
    for line in chroot.read_bytes(SOURCES_FILE).decode(errors="replace").splitlines():
        if line.startswith(("deb ", "deb-src ")):
            uris.add(SourceLine.parse(line).uri.rstrip("/"))
    return uris


def from_base_repositories(policy: str, added: Collection[str]) -> set[str]:
    """The packages ``apt-cache policy``'s output shows installed at a version that one of the
    image's own repositories has (not only the bake's, nor only a package file)."""
    from_base: set[str] = set()
    package = ""
    installed = False
    for line in policy.splitlines():
        if match := _POLICY_PACKAGE.match(line):
            package, installed = match.group(1).split(":")[0], False
        elif match := _POLICY_VERSION.match(line):
            installed = match.group(1) == "***"
        elif installed and (match := _POLICY_SOURCE.match(line)):
            uri = match.group(1).rstrip("/")
            if uri != DPKG_STATUS and uri not in added:
                from_base.add(package)
    return from_base


def installed_versions(chroot: Chroot) -> dict[str, str]:
    """Every installed package of the image (``name:arch``) and its version, read from dpkg's
    status database."""
    if not chroot.is_file(DPKG_STATUS):
        return {}
    versions = {}
    for stanza in chroot.read_bytes(DPKG_STATUS).decode(errors="replace").split("\n\n"):
        fields = dict(_STATUS_FIELD.findall(stanza))
        if fields.get("Status", "").endswith(" installed") and "Package" in fields:
            name = f"{fields['Package']}:{fields.get('Architecture', '')}"
            versions[name] = fields.get("Version", "")
    return versions


def changed_since(before: Mapping[str, str], after: Mapping[str, str]) -> list[str]:
    """The names of the packages installed, upgraded or downgraded between two
    ``installed_versions``."""
    return sorted(
        {key.split(":")[0] for key, version in after.items() if before.get(key) != version}
    )
