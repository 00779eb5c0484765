"""The data that flows through a bake. Every type here is frozen: plugins read, never mutate."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from aminator_ng.contract.settings import EngineSettings


@dataclass(frozen=True)
class PackageInfo:
    """A package's identity, read from its file or from the image's package database."""

    name: str
    version: str
    release: str
    arch: str
    epoch: str = ""

    @property
    def full_version(self) -> str:
        """The version as the package manager writes it: ``[epoch:]version[-release]``."""
        text = f"{self.epoch}:{self.version}" if self.epoch else self.version
        return f"{text}-{self.release}" if self.release else text

    def as_dict(self) -> dict[str, str]:
        return {
            "name": self.name,
            "epoch": self.epoch,
            "version": self.version,
            "release": self.release,
            "arch": self.arch,
        }


@dataclass(frozen=True)
class ManifestEntry:
    """One installed package of the baked image."""

    name: str
    version: str
    arch: str
    source_name: str
    source_version: str

    def as_dict(self) -> dict[str, str]:
        return {
            "name": self.name,
            "version": self.version,
            "arch": self.arch,
            "source_name": self.source_name,
            "source_version": self.source_version,
        }


@dataclass(frozen=True)
class SbomPackage:
    """One installed package as the image's SBOM describes it (``Provisioner.sbom_packages``)."""

    name: str
    version: str
    arch: str
    #: Its package URL: ``pkg:deb/debian/NAME@VERSION?arch=ARCH&distro=debian-12``, say.
    purl: str
    #: Licences as the package declares them machine-readably: SPDX ids or expressions where
    #: it uses them, else the names it gives; empty when it declares none.
    licenses: tuple[str, ...] = ()


@dataclass(frozen=True)
class ShippedFile:
    """A file as the package database records it: the package that owns it and the digest the
    package shipped (``Provisioner.shipped_files``)."""

    path: str
    package: str
    #: A hashlib name: "md5", "sha256".
    algorithm: str
    digest: str


@dataclass(frozen=True)
class PackageCacheLayout:
    """What a provisioner keeps in the bake host's package cache, and where the image has it
    (``Provisioner.package_cache``). Both directories are overlaid for the install, so nothing
    the install writes there stays in the image or reaches the cache unchecked."""

    #: What determines the index's content (digests of the sources, keys and configuration,
    #: the architectures), as text; bakes with equal keys share a cache entry.
    key: Mapping[str, str]
    #: The image directory of the package lists or metadata (``/var/lib/apt/lists``).
    index: str
    #: The image directory the package manager writes downloads and caches under
    #: (``/var/cache/apt``), and the subdirectory of it holding the package files.
    downloads: str
    packages_subdir: str = ""
    #: Files under ``downloads`` the package manager derives from the index and the base's own
    #: state (apt's binary caches): made by ``Provisioner.prepare_index`` before any package
    #: script runs, and kept for the next bake of the same base image on the same index.
    derived: tuple[str, ...] = ()


@dataclass(frozen=True)
class HygieneOutcome:
    """What one image-hygiene rule did in a bake (``aminator_clean_image``)."""

    rule: str
    done: str
    #: The operator switched the rule off.
    switched_off: bool = False
    #: For a rule switched off: the image paths it would have removed or emptied, which the
    #: secret scan reports as warnings.
    kept: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, str | bool | list[str]]:
        return {
            "rule": self.rule,
            "done": self.done,
            "switched_off": self.switched_off,
            "kept": list(self.kept),
        }


@dataclass(frozen=True)
class PackageRequest:
    """One PACKAGE argument: a package file on the host, or a name the image's repositories have.

    ``info`` is read from the file before anything is acquired; for a name it stays None until the
    install, after which the bake reads it from the image's package database.
    """

    spec: str
    path: Path | None = None
    info: PackageInfo | None = None

    @property
    def is_file(self) -> bool:
        return self.path is not None

    @property
    def name(self) -> str:
        """The package's name: from the file, or the spec without its pinned version."""
        if self.info is not None:
            return self.info.name
        return self.spec.partition("=")[0]

    @property
    def pinned_version(self) -> str | None:
        """The exact version a ``NAME=VERSION`` spec asks for; None for a file or a bare name."""
        if self.is_file:
            return None
        _, sep, version = self.spec.partition("=")
        return version if sep else None


@dataclass(frozen=True)
class Repository:
    """A repository added to the image for one bake (``--repo``), gone from it afterwards.

    Either a host ``directory`` of package files, which the engine bind-mounts into the image,
    or what the bake's provisioner read the spec as (``Provisioner.parse_repository``):
    ``parsed``, of the provisioner's own type. ``keys`` are the host key files (OpenPGP,
    armored or binary) that sign it.
    """

    #: As the operator wrote it; error messages name it.
    spec: str
    directory: Path | None = None
    parsed: Any = None
    keys: tuple[Path, ...] = ()
    #: For a directory: where the engine bind-mounted it, read-only, inside the image for the
    #: chroot's lifetime. The directory above it is the provisioner's to write an index into.
    mounted_at: str | None = None


@dataclass(frozen=True)
class Image:
    """A registered image, base or baked, as its cloud backend records it."""

    image_id: str
    name: str
    created: datetime
    snapshot_id: str
    description: str = ""
    tags: Mapping[str, str] = field(default_factory=dict)
    cloud: str = "local"
    region: str = "local"
    size_bytes: int | None = None
    base_image_id: str | None = None
    #: As the backend reports it; only an ``available`` image can be launched or baked on.
    state: str = "available"
    #: Its copies elsewhere (other regions), as location -> image id, when the backend knows.
    copies: Mapping[str, str] = field(default_factory=dict)

    @property
    def everywhere(self) -> dict[str, str]:
        """The image and its copies: location (region) -> image id."""
        return {self.region: self.image_id, **self.copies}

    def as_dict(self) -> dict[str, Any]:
        return {
            "image_id": self.image_id,
            "name": self.name,
            "created": self.created.isoformat().replace("+00:00", "Z"),
            "snapshot_id": self.snapshot_id,
            "description": self.description,
            "tags": dict(self.tags),
            "cloud": self.cloud,
            "region": self.region,
            "size_bytes": self.size_bytes,
            "base_image_id": self.base_image_id,
            "state": self.state,
            "copies": dict(self.copies),
        }


@dataclass(frozen=True)
class Volume:
    """A writable volume made from a snapshot, owned by one bake."""

    volume_id: str
    snapshot_id: str
    size_bytes: int


@dataclass(frozen=True)
class Snapshot:
    """A point-in-time copy of a volume, from which an image is registered."""

    snapshot_id: str
    volume_id: str
    size_bytes: int


@dataclass(frozen=True)
class Distro:
    """What a distro plugin recognised in a mounted root."""

    #: The plugin's name for the family it handles ("debian").
    family: str
    #: The ID from /etc/os-release ("debian", "ubuntu").
    os_id: str
    version_id: str = ""
    pretty_name: str = ""
    #: The package file format this distro installs: "deb" or "rpm".
    package_format: str = ""

    @classmethod
    def from_os_release(
        cls, os_release: Mapping[str, str], *, family: str, package_format: str
    ) -> Distro:
        """The Distro of a root whose os-release fields a plugin has recognised."""
        return cls(
            family=family,
            os_id=os_release.get("ID", ""),
            version_id=os_release.get("VERSION_ID", ""),
            pretty_name=os_release.get("PRETTY_NAME", ""),
            package_format=package_format,
        )

    @staticmethod
    def ids_of(os_release: Mapping[str, str]) -> set[str]:
        """The distribution ids a root claims: its ``ID`` and every word of its ``ID_LIKE``."""
        return {os_release.get("ID", "")} | set(os_release.get("ID_LIKE", "").split())


@dataclass(frozen=True)
class ImageSpec:
    """Everything a cloud backend needs to register a baked image."""

    name: str
    description: str
    tags: Mapping[str, str]
    manifest: tuple[ManifestEntry, ...]
    base: Image
    #: The image's CycloneDX SBOM (JSON), stored with the image; None for an imported one.
    sbom: bytes | None = None


@dataclass(frozen=True)
class StepTiming:
    name: str
    duration_s: float

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "duration_s": round(self.duration_s, 3)}


@dataclass(frozen=True)
class BakeFacts:
    """What finalizers know when they name, describe and tag the image."""

    bake_id: str
    started: datetime
    base: Image
    #: The packages baked, first one first; it names the image.
    packages: tuple[PackageInfo, ...]
    manifest: tuple[ManifestEntry, ...]
    distro: Distro
    name_template: str | None
    suffix: str | None
    extra_tags: Mapping[str, str]
    engine_version: str
    #: The engine's and the plugins' settings; a plugin reads its own with ``of(ItsSettings)``.
    settings: EngineSettings = field(default_factory=EngineSettings)
