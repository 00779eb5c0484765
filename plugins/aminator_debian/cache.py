"""apt's part of the package cache: what determines its lists, and how the host checks them.

The lists (``/var/lib/apt/lists``) are keyed by the image's sources, the keys apt trusts, its
configuration and its architectures. A fetched set of lists is shared only when every file in
it checks out on the host: each ``InRelease`` (or ``Release`` with ``Release.gpg``) verified
with ``gpgv`` against the keys read before the fetch, and every other file listed in one with
its size and SHA-256. Downloaded packages (``/var/cache/apt/archives``) join the cache only when
such lists give their SHA-256: apt itself checks only the size of a package already there.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

from aminator_debian.shipped import installed_versions
from aminator_ng.api import Chroot, CommandError, PackageCacheLayout, run

LISTS = "/var/lib/apt/lists"
APT_CACHE = "/var/cache/apt"
ARCHIVES = "archives"
#: apt's binary caches: of the lists (a second of CPU to build from bookworm's), and of the
#: lists with the image's dpkg status, which is the base's own until the install.
APT_BINARY_CACHES = ("srcpkgcache.bin", "pkgcache.bin")
APT_DIR = "/etc/apt"
DPKG_ARCHITECTURES = "/var/lib/dpkg/arch"
#: What apt reads its sources, keys and configuration from, besides ``signed-by`` files.
SOURCES = ("sources.list", "sources.list.d")
TRUSTED = ("trusted.gpg", "trusted.gpg.d")
CONFIGURATION = ("apt.conf", "apt.conf.d", "preferences", "preferences.d")
_SIGNED_BY = re.compile(r"signed-by=([^\s\]]+)|^Signed-By:\s*(/\S+)\s*$", re.I | re.M)
_ARMOR = re.compile(
    rb"-----BEGIN PGP PUBLIC KEY BLOCK-----\r?\n(?:[^\n]*:[^\n]*\r?\n)*\r?\n(.*?)"
    rb"-----END PGP PUBLIC KEY BLOCK-----",
    re.S,
)
_SHA256_SECTION = re.compile(r"^SHA256:\n((?: .*\n?)+)", re.M)
#: Lists files apt keeps beside the lists and checks itself, never used as an index.
NOT_LISTS = ("lock",)


@dataclass(frozen=True)
class AptCacheKey:
    """The layout for the engine, and the keyrings the fetched lists are verified with."""

    layout: PackageCacheLayout
    keyrings: tuple[bytes, ...]


def _files_under(chroot: Chroot, names: Sequence[str]) -> Iterator[tuple[str, bytes]]:
    """Each regular file named (a file, or a directory's files, sorted) and its content."""
    for name in names:
        path = f"{APT_DIR}/{name}"
        if chroot.is_dir(path):
            for entry in sorted(chroot.listdir(path)):
                if chroot.is_file(f"{path}/{entry}"):
                    yield f"{path}/{entry}", chroot.read_bytes(f"{path}/{entry}")
        elif chroot.is_file(path):
            yield path, chroot.read_bytes(path)


def _digest(files: Sequence[tuple[str, bytes]]) -> str:
    digest = hashlib.sha256()
    for path, content in files:
        digest.update(f"{path}\0{len(content)}\0".encode())
        digest.update(content)
    return digest.hexdigest()


def cache_key(chroot: Chroot) -> AptCacheKey:
    sources = list(_files_under(chroot, SOURCES))
    signed_by = sorted(
        {
            path
            for _, content in sources
            for match in _SIGNED_BY.finditer(content.decode(errors="replace"))
            for option in match.groups()
            if option
            for path in option.split(",")
            if path.startswith("/")
        }
    )
    keyrings = list(_files_under(chroot, TRUSTED))
    keyrings += [(path, chroot.read_bytes(path)) for path in signed_by if chroot.is_file(path)]
    configuration = list(_files_under(chroot, CONFIGURATION))
    key = {
        "sources": _digest(sources),
        "keyrings": _digest(keyrings),
        "configuration": _digest(configuration),
        "architectures": " ".join(architectures(chroot)),
    }
    layout = PackageCacheLayout(key, LISTS, APT_CACHE, ARCHIVES, derived=APT_BINARY_CACHES)
    return AptCacheKey(layout, tuple(content for _, content in keyrings))


def architectures(chroot: Chroot) -> list[str]:
    """dpkg's architectures: its own (the native one), then those added to it, as dpkg keeps
    them (``/var/lib/dpkg/arch``)."""
    dpkg = [key for key in installed_versions(chroot) if key.startswith("dpkg:")]
    native = dpkg[0].removeprefix("dpkg:") if dpkg else ""
    added = []
    if chroot.is_file(DPKG_ARCHITECTURES):
        added = chroot.read_bytes(DPKG_ARCHITECTURES).decode(errors="replace").split()
    return [native, *(arch for arch in added if arch != native)]


def dearmored(keyring: bytes) -> bytes:
    """A keyring as gpgv reads it: an ASCII-armored one decoded (its checksum line dropped)."""
    blocks = _ARMOR.findall(keyring)
    if not blocks:
        return keyring
    decoded = b""
    for block in blocks:
        body = b"".join(
            line.strip() for line in block.splitlines() if line.strip() and line[:1] != b"="
        )
        decoded += base64.b64decode(body)
    return decoded


def _release_hashes(signed: str) -> dict[str, tuple[int, str]]:
    """A Release file's SHA256 entries: path -> (size, digest)."""
    section = _SHA256_SECTION.search(signed)
    entries: dict[str, tuple[int, str]] = {}
    for line in section.group(1).splitlines() if section else []:
        digest, size, path = line.split()
        entries[path] = (int(size), digest)
    return entries


def _sha256(path: Path) -> str:
    with path.open("rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def verified_lists(lists: Path, keyrings: Sequence[bytes], scratch: Path) -> bool:
    """Whether every file in a host copy of ``/var/lib/apt/lists`` is signed for: see the
    module's description. Directories apt keeps there (partial/, auxfiles/) must be empty."""
    scratch.mkdir(parents=True, exist_ok=True)
    rings = []
    for number, keyring in enumerate(keyrings):
        ring = scratch / f"keyring-{number}.gpg"
        ring.write_bytes(dearmored(keyring))
        rings += ["--keyring", str(ring)]
    releases: dict[str, dict[str, tuple[int, str]]] = {}
    listed: list[Path] = []
    for path in sorted(lists.iterdir()):
        if path.is_symlink():
            return False
        if path.is_dir():
            if any(path.iterdir()):
                return False
            continue
        if path.name in NOT_LISTS:
            continue
        if path.name.endswith("_InRelease"):
            prefix, signature = path.name[: -len("InRelease")], [str(path)]
        elif path.name.endswith("_Release"):
            prefix, signature = path.name[: -len("Release")], [f"{path}.gpg", str(path)]
        elif path.name.endswith("_Release.gpg"):
            continue
        else:
            listed.append(path)
            continue
        if not rings:
            return False
        try:
            checked = run(
                ["gpgv", "--quiet", *rings, "--output", "-", *signature],
                what=f"verify {path.name}",
            )
        except CommandError:
            return False
        text = checked.stdout if path.name.endswith("_InRelease") else path.read_text()
        releases[prefix] = _release_hashes(text)
    for path in listed:
        prefixes = [p for p in releases if path.name.startswith(p)]
        if not prefixes:
            return False
        prefix = max(prefixes, key=len)
        entry = unquote(path.name[len(prefix) :].replace("_", "/"))
        expected = releases[prefix].get(entry)
        if expected is None or expected != (path.stat().st_size, _sha256(path)):
            return False
    return True


def _archive_identity(path: Path) -> tuple[str, str, str] | None:
    """(Package, Version, Architecture) from apt's name for a download: N_V_A.deb."""
    parts = path.name.removesuffix(".deb").split("_")
    if not path.name.endswith(".deb") or len(parts) != 3:
        return None
    name, version, arch = parts
    return name, unquote(version), arch


def _stanza_around(text: bytes, at: int) -> Mapping[bytes, bytes]:
    """The fields of the Packages stanza holding offset ``at``."""
    start = text.rfind(b"\n\n", 0, at)
    end = text.find(b"\n\n", at)
    fields = {}
    for line in text[start + 2 if start >= 0 else 0 : end if end >= 0 else len(text)].split(b"\n"):
        key, colon, value = line.partition(b": ")
        if colon and not key.startswith((b" ", b"\t")):
            fields[key] = value.strip()
    return fields


def vouched_debs(lists: Path, downloads: Sequence[Path]) -> list[Path]:
    """The downloads whose SHA-256 the verified lists' ``Packages`` files give, in a stanza of
    the name, version and architecture apt named the file after."""
    wanted = {}
    for path in downloads:
        identity = _archive_identity(path)
        if identity is not None:
            wanted[path] = (identity, _sha256(path).encode())
    vouched: list[Path] = []
    for packages in sorted(lists.glob("*_Packages")):
        if not wanted:
            break
        text = packages.read_bytes()
        for path, (identity, digest) in list(wanted.items()):
            at = text.find(b"\nSHA256: " + digest + b"\n")
            if at < 0:
                continue
            fields = _stanza_around(text, at + 1)
            found = tuple(
                fields.get(name, b"").decode() for name in (b"Package", b"Version", b"Architecture")
            )
            if found == identity:
                vouched.append(path)
                del wanted[path]
    return vouched
