"""What the image's SBOM says of each installed Debian package: its package URL, and the licences
its machine-readable copyright file (DEP-5) declares."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence

from packageurl import PackageURL

from aminator_ng.api import Chroot, Distro, ImagePathError, ManifestEntry, SbomPackage

log = logging.getLogger(__name__)

#: The first line of a copyright file in the machine-readable format 1.0 (http or https, with
#: or without the final slash, as packages write it).
_DEP5_FORMAT = re.compile(
    r"^format:\s*https?://www\.debian\.org/doc/packaging-manuals/copyright-format/1\.0/?\s*$",
    re.IGNORECASE,
)
#: A field's first line (continuation lines start with white space).
_FIELD = re.compile(r"^([A-Za-z0-9][A-Za-z0-9-]*):(.*)$")


def package_url(distro: Distro, entry: ManifestEntry) -> str:
    """``pkg:deb/debian/NAME@VERSION?arch=ARCH&distro=debian-12``, percent-encoded as the purl
    specification says; the version is Debian's whole version, epoch included."""
    qualifiers = {"arch": entry.arch}
    if distro.version_id:
        qualifiers["distro"] = f"{distro.os_id}-{distro.version_id}"
    return str(
        PackageURL(
            type="deb",
            namespace=distro.os_id or None,
            name=entry.name,
            version=entry.version,
            qualifiers=qualifiers,
        ).to_string()
    )


def copyright_licenses(text: str) -> tuple[str, ...]:
    """The distinct licence short names of a machine-readable copyright file, in the order they
    first appear: the first line of each ``License`` field, as written (``GPL-2+``, ``GPL-2+ or
    Artistic``). A file in any other format declares none that a machine can read."""
    lines = text.splitlines()
    if not lines or not _DEP5_FORMAT.match(lines[0]):
        return ()
    names: dict[str, None] = {}
    for line in lines:
        field = _FIELD.match(line)
        if field and field.group(1).strip().lower() == "license":
            name = field.group(2).strip()
            if name:
                names[name] = None
    return tuple(names)


def declared_licenses(chroot: Chroot, package: str) -> tuple[str, ...]:
    """The licences ``/usr/share/doc/PACKAGE/copyright`` in the image declares; none when the
    file is missing (images that leave out documentation), unreadable or not machine-readable."""
    path = f"/usr/share/doc/{package}/copyright"
    try:
        if not chroot.is_file(path):
            return ()
        data = chroot.read_bytes(path)
    except (OSError, ImagePathError) as exc:
        log.debug("cannot read %s in the image: %s", path, exc)
        return ()
    return copyright_licenses(data.decode(errors="replace"))


def sbom_packages(
    chroot: Chroot, distro: Distro, manifest: Sequence[ManifestEntry]
) -> list[SbomPackage]:
    return [
        SbomPackage(
            entry.name,
            entry.version,
            entry.arch,
            package_url(distro, entry),
            declared_licenses(chroot, entry.name),
        )
        for entry in manifest
    ]
