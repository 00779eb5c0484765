"""The .acme.tar package format of Acme Linux.

A package is an uncompressed tar archive, by convention named
``NAME_VERSION-RELEASE_ARCH.acme.tar``. At its top sit the control files: ``.ACME-META``
(``key=value`` lines: name, version, release, arch) and, optionally, ``.ACME-POSTINST`` (a shell
script run inside the image once the payload is in place). Every other member is payload, its
path relative to the image root (``usr/share/hello/greeting``).
"""

from __future__ import annotations

import io
import re
import tarfile
from pathlib import Path

from aminator_ng.api import PackageInfo, RequestError

SUFFIX = ".acme.tar"
META = ".ACME-META"
POSTINST = ".ACME-POSTINST"
CONTROL_FILES = (META, POSTINST)
#: What each field of .ACME-META may hold: no "_" anywhere and no "-" in version or release,
#: which separate the parts of the file name.
FIELDS = {
    "name": re.compile(r"[a-z0-9][a-z0-9+.-]*"),
    "version": re.compile(r"[A-Za-z0-9][A-Za-z0-9.+~]*"),
    "release": re.compile(r"[A-Za-z0-9][A-Za-z0-9.+~]*"),
    "arch": re.compile(r"[a-z0-9_]+"),
}
META_LIMIT = 4096


def is_acme_package(path: Path) -> bool:
    """Whether the file claims to be an Acme package (by its name, as Acme's own tools do)."""
    return path.name.endswith(SUFFIX)


def damaged(where: str, why: str) -> RequestError:
    return RequestError(f"not a valid Acme package: {where}", hint=why)


def parse_meta(where: str, text: str) -> PackageInfo:
    fields = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            fields[key.strip()] = value.strip()
    for key, pattern in FIELDS.items():
        if not pattern.fullmatch(fields.get(key, "")):
            raise damaged(where, f"{META}: {key} is missing or malformed")
    return PackageInfo(fields["name"], fields["version"], fields["release"], fields["arch"])


def read_package_info(path: Path) -> PackageInfo:
    """The identity of a package file on the host."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise damaged(str(path), f"cannot read it: {exc.strerror}") from exc
    return package_info(data, str(path))


def package_info(data: bytes, where: str) -> PackageInfo:
    """The package's identity from its .ACME-META (``where`` names it in errors). The whole
    archive is read through, so that a damaged one is found now, before it is installed."""
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            text = None
            for member in tar:
                content = tar.extractfile(member) if member.isreg() else None
                if content is None:
                    continue
                if member.name.removeprefix("./") == META:  # GNU tar writes "./" for "tar -C dir ."
                    text = content.read(META_LIMIT).decode("utf-8")
                while content.read(1 << 20):
                    pass
            # tarfile stops quietly at a truncated or garbled header after the first one; a
            # whole archive ends with two zero blocks right after its last member.
            end = tar.offset
    except (tarfile.TarError, UnicodeDecodeError) as exc:
        raise damaged(where, f"cannot read it as a tar archive: {exc}") from exc
    if data[end : end + 2 * tarfile.BLOCKSIZE] != bytes(2 * tarfile.BLOCKSIZE):
        raise damaged(where, "it is truncated")
    if text is None:
        raise damaged(where, f"it has no {META} at its top")
    return parse_meta(where, text)
