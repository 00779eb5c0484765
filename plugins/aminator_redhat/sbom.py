"""What the image's SBOM says of each installed RPM package: its package URL, and the licence its
LICENSE tag declares (an SPDX expression on current Fedora, RHEL 10 and Amazon Linux, Fedora's
older short names elsewhere)."""

from __future__ import annotations

from collections.abc import Sequence

from packageurl import PackageURL

from aminator_ng.api import Chroot, Distro, ManifestEntry, SbomPackage
from aminator_redhat import rpmdb

#: name, [epoch:]version-release and arch as rpmdb.MANIFEST_FORMAT writes them, and the licence.
LICENSE_FORMAT = "%{NAME}\\t%|EPOCH?{%{EPOCH}:}:{}|%{VERSION}-%{RELEASE}\\t%{ARCH}\\t%{LICENSE}\\n"
#: What rpm prints for a tag the package does not have.
_NO_VALUE = "(none)"
#: A package, as both the manifest and LICENSE_FORMAT name it: (name, version, arch).
PackageKey = tuple[str, str, str]


def package_url(distro: Distro, entry: ManifestEntry) -> str:
    """``pkg:rpm/fedora/NAME@VERSION-RELEASE?arch=ARCH&distro=fedora-40``, with ``epoch=N``
    when the package has an epoch other than 0; percent-encoded as the purl specification says.

    The manifest's version is rpm's ``[epoch:]version-release`` (an epoch of 0 left out).
    """
    epoch, has_epoch, version = entry.version.rpartition(":")
    qualifiers = {"arch": entry.arch}
    if has_epoch and epoch not in ("", "0"):
        qualifiers["epoch"] = epoch
    if distro.version_id:
        qualifiers["distro"] = f"{distro.os_id}-{distro.version_id}"
    return str(
        PackageURL(
            type="rpm",
            namespace=distro.os_id or None,
            name=entry.name,
            version=version,
            qualifiers=qualifiers,
        ).to_string()
    )


def parse_licenses(text: str) -> dict[PackageKey, str]:
    """Each package's LICENSE tag from ``rpm -qa`` output in LICENSE_FORMAT; signing keys and
    packages without the tag are left out."""
    found: dict[PackageKey, str] = {}
    for line in text.splitlines():
        fields = line.split("\t")
        if len(fields) != 4 or fields[0] == rpmdb.PUBKEY_NAME:
            continue
        name, version, arch, license_tag = fields
        license_tag = license_tag.strip()
        if license_tag and license_tag != _NO_VALUE:
            found[(name, version.removeprefix("0:"), arch)] = license_tag
    return found


def installed_licenses(chroot: Chroot) -> dict[PackageKey, str]:
    """Every installed package's licence, from the image's rpm database in one query."""
    result = chroot.run(
        ["rpm", "--query", "--all", "--queryformat", LICENSE_FORMAT],
        what="read the packages' licences",
    )
    return parse_licenses(result.stdout)


def sbom_packages(
    chroot: Chroot, distro: Distro, manifest: Sequence[ManifestEntry]
) -> list[SbomPackage]:
    licenses = installed_licenses(chroot)
    packages = []
    for entry in manifest:
        declared = licenses.get((entry.name, entry.version, entry.arch))
        packages.append(
            SbomPackage(
                entry.name,
                entry.version,
                entry.arch,
                package_url(distro, entry),
                (declared,) if declared else (),
            )
        )
    return packages
