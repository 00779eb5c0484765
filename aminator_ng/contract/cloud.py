"""The interface of a cloud backend: where images are recorded and how a volume becomes a device.

A backend is constructed by the ``aminator_cloud_backend`` hook. Each method that acquires
something returns a context manager that releases it, so that the bake can enter it on its
ExitStack.
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Collection, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from aminator_ng.contract.model import Image, ImageSpec, ManifestEntry, Snapshot, Volume
from aminator_ng.errors import NotFoundError, RequestError


@dataclass(frozen=True)
class Leftover:
    """Something a bake that no longer runs still holds: a volume, a snapshot, a device."""

    kind: str
    resource_id: str
    #: Where it is, or what it is attached to: for the operator.
    detail: str = ""

    def describe(self) -> str:
        return f"{self.kind} {self.resource_id}" + (f" ({self.detail})" if self.detail else "")

    def as_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "id": self.resource_id, "detail": self.detail}


class NotSupportedError(RequestError):
    """The backend does not offer this operation (``aminate export`` on EC2, say)."""


class CloudBackend(abc.ABC):
    """Where base images are found, volumes made and attached, and baked images registered."""

    #: The name ``--cloud`` selects.
    name: ClassVar[str]
    #: Whether ``import_image`` is offered: ``base create`` checks it before bootstrapping.
    imports_images: ClassVar[bool] = False

    def required_tools(self) -> list[str]:
        """Host tools this backend runs, checked before a bake acquires anything."""
        return []

    @abc.abstractmethod
    def resolve_base(self, reference: str) -> Image:
        """The image an id or a name refers to (a name: the newest image with it).

        Raises NotFoundError when there is none.
        """

    def create_volume(self, base: Image, bake_id: str, *, size_bytes: int | None = None) -> Volume:
        """A writable volume made from the base's root snapshot, tagged with ``bake_id``; the
        bake deletes it with ``delete_volume`` (unless a preserved failure keeps it).
        ``size_bytes`` (``--root-volume-size``, given only when asked, never smaller than the
        base) makes it that large; the engine grows the root partition and filesystem into it.

        Backends implement this and ``delete_volume``. The default, for a backend that offers
        only the older ``volume`` context manager, enters that; such a volume cannot be kept,
        as the interpreter may end the context at exit, nor grown."""
        if type(self).volume is CloudBackend.volume:
            raise NotImplementedError(f"{type(self).__name__} implements no create_volume")
        if size_bytes is not None:
            raise NotSupportedError(f"the {self.name} backend cannot make larger volumes")
        manager = self.volume(base, bake_id)
        volume = manager.__enter__()
        self.__dict__.setdefault("_volume_contexts", {})[volume.volume_id] = manager
        return volume

    def delete_volume(self, volume: Volume) -> None:
        """Delete a volume ``create_volume`` made."""
        manager = self.__dict__.get("_volume_contexts", {}).pop(volume.volume_id)
        manager.__exit__(None, None, None)

    @contextlib.contextmanager
    def volume(self, base: Image, bake_id: str) -> Iterator[Volume]:
        """``create_volume`` as a context manager: deleted when the context ends."""
        volume = self.create_volume(base, bake_id)
        try:
            yield volume
        finally:
            self.delete_volume(volume)

    def plan(self, base: Image, *, size_bytes: int | None, bake_id: str) -> dict[str, Any]:
        """``--dry-run``: what the backend would make for a bake on ``base``, as JSON-ready
        data, making nothing. A backend checks here what it can without making anything (room
        in a store, the host's permissions), raising the error the bake would meet."""
        return {}

    @abc.abstractmethod
    def attached(self, volume: Volume, bake_id: str) -> AbstractContextManager[Path]:
        """The volume attached to this host as a block device; detached when the context ends."""

    @abc.abstractmethod
    def snapshot(
        self, volume: Volume, bake_id: str, description: str
    ) -> AbstractContextManager[Snapshot]:
        """A snapshot of the (detached) volume. Deleted if the context ends with an error,
        kept when it ends normally."""

    def image_snapshot(
        self, volume: Volume, bake_id: str, spec: ImageSpec
    ) -> AbstractContextManager[Snapshot]:
        """A snapshot of the (detached) volume for the image ``spec`` describes, which it is
        registered as next. The default is ``snapshot(volume, bake_id, spec.description)``; a
        backend that tags snapshots overrides it, so as to give them the image's name and tags
        at creation."""
        return self.snapshot(volume, bake_id, spec.description)

    @abc.abstractmethod
    def check_name_available(self, name: str) -> None:
        """Raise ConflictError when an image with this name exists already."""

    @abc.abstractmethod
    def registered(
        self, snapshot: Snapshot, spec: ImageSpec, bake_id: str
    ) -> AbstractContextManager[Image]:
        """The snapshot registered as an image, with ``spec.manifest`` and ``spec.sbom`` stored
        beside it. Deregistered (and what was stored removed) if the context ends with an error.

        Raises ConflictError when the name is taken.
        """

    @abc.abstractmethod
    def list_images(self) -> list[Image]:
        """Every image this backend records, oldest first."""

    @abc.abstractmethod
    def get_image(self, image_id: str) -> Image:
        """One image by id; NotFoundError when there is none."""

    def image_manifest(self, image_id: str) -> list[ManifestEntry]:
        """The installed-package manifest stored with a baked image ([] if none was stored)."""
        return []

    def image_sbom(self, image_id: str) -> bytes | None:
        """The SBOM stored with a baked image (``ImageSpec.sbom``), None if none was stored."""
        return None

    def sbom_location(self, image_id: str) -> str | None:
        """Where the image's SBOM is kept, for people (a path, an ``s3://`` URL); None if none."""
        return None

    def import_image(
        self, name: str, raw_disk: Path, description: str, tags: Mapping[str, str]
    ) -> Image:
        """Register a raw disk image file as a base image (when ``imports_images``)."""
        raise self.import_not_supported()

    def import_not_supported(self) -> NotSupportedError:
        return NotSupportedError(
            f"importing a base image is not supported on {self.name}",
            hint="make base images with the cloud's own tools, or bake with --cloud local",
        )

    def export_image(self, image_id: str, destination: Path) -> None:
        """Write an image's disk out as a raw file."""
        raise NotSupportedError(f"export is not supported on {self.name}")

    def remove_image(self, image_id: str) -> int:
        """Deregister an image and delete the data only it uses; return the bytes freed.

        Raise ConflictError while a running bake uses it.
        """
        raise NotSupportedError(f"removing images is not supported on {self.name}")

    def removal_refused(self, image: Image) -> str | None:
        """Why retention must leave the image alone, or None: it is protected, in use, or not
        made by a bake. ``remove_image`` refuses these too; this only asks."""
        return None

    def disk_usage(self, image: Image) -> int | None:
        """The bytes an image's data takes in the backend's storage, if it can tell."""
        return None

    def leftovers(self, bake_id: str) -> list[Leftover]:
        """What a bake that is no longer running still holds in this backend: one that died
        (SIGKILL, a crash) or one that kept its volume with ``--preserve-on-error``. ``aminate
        cleanup`` lists them and releases each with ``release_leftover``, in this order. Never
        called for a running bake. The default: nothing."""
        return []

    def release_leftover(self, leftover: Leftover) -> None:
        """Release one of ``leftovers``; releasing what is gone already is no error."""
        raise NotSupportedError(f"cannot release {leftover.describe()} on {self.name}")

    def check_store(self, recorded_bakes: Collection[str]) -> list[str]:
        """What is inconsistent in the backend's own registry of images (``aminate store
        check``), one line each, saying what ``repair_store`` would do. What belongs to the
        ``recorded_bakes`` (running, dead or preserved) is theirs, not an inconsistency."""
        raise NotSupportedError(f"store check is not supported on {self.name}")

    def repair_store(self, recorded_bakes: Collection[str]) -> list[str]:
        """Rebuild what can be rebuilt of the registry and settle the rest (``aminate store
        repair``); a line for each thing done. Called only while no bake runs."""
        raise NotSupportedError(f"store repair is not supported on {self.name}")

    def release_command(self, kind: str, resource_id: str) -> str:
        """How an operator releases a resource a failed bake kept (``--preserve-on-error``)."""
        return f"release {kind} {resource_id} by hand"


def lineage(cloud: CloudBackend, image: Image) -> list[dict[str, str | None]]:
    """The image's ancestors, nearest first, up to a base with none (or one since removed)."""
    chain: list[dict[str, str | None]] = []
    seen = {image.image_id}
    parent_id = image.base_image_id
    while parent_id and parent_id not in seen:
        seen.add(parent_id)
        try:
            parent = cloud.get_image(parent_id)
        except NotFoundError:
            chain.append({"image_id": parent_id, "name": None})
            break
        chain.append({"image_id": parent.image_id, "name": parent.name})
        parent_id = parent.base_image_id
    return chain
