"""The local backend: the embedded default, needing no cloud account."""

from __future__ import annotations

import contextlib
import logging
import shlex
from collections.abc import Collection, Iterator, Mapping
from pathlib import Path
from typing import Any

from aminator_local import integrity
from aminator_local.store import Store, clone_file
from aminator_ng.api import (
    CloudBackend,
    ConflictError,
    EngineSettings,
    Image,
    ImageSpec,
    Leftover,
    ManifestEntry,
    NotFoundError,
    RequestError,
    Snapshot,
    Volume,
    detach_loop_device,
    loop_device,
    loop_devices_over,
    probe,
)

log = logging.getLogger(__name__)


class LocalCloud(CloudBackend):
    """Images in a SQLite store under ``$AMINATOR_HOME``; a volume is a loop device over a file."""

    name = "local"
    imports_images = True

    def __init__(self, settings: EngineSettings) -> None:
        self.store = Store(settings.home)

    def required_tools(self) -> list[str]:
        return ["losetup", "cp"]

    def resolve_base(self, reference: str) -> Image:
        if reference.startswith("img-"):
            with contextlib.suppress(NotFoundError):
                return self.store.image(reference)
        image = self.store.newest_image_named(reference)
        if image is None:
            raise NotFoundError(
                f"base image not found: {reference}",
                hint="'aminate images' lists the images; 'aminate base create' makes a base",
            )
        return image

    def create_volume(self, base: Image, bake_id: str, *, size_bytes: int | None = None) -> Volume:
        record = self.store.create_volume(base.snapshot_id, bake_id, size_bytes=size_bytes)
        log.info("volume %s from snapshot %s", record.volume_id, base.snapshot_id)
        return Volume(record.volume_id, base.snapshot_id, record.path.stat().st_size)

    def delete_volume(self, volume: Volume) -> None:
        self.store.delete_volume(volume.volume_id)

    @contextlib.contextmanager
    def attached(self, volume: Volume, bake_id: str) -> Iterator[Path]:
        with loop_device(self.store.volume_path(volume.volume_id)) as device:
            self.store.set_volume_state(volume.volume_id, "in-use", str(device))
            try:
                yield device
            finally:
                self.store.set_volume_state(volume.volume_id, "available")

    @contextlib.contextmanager
    def snapshot(self, volume: Volume, bake_id: str, description: str) -> Iterator[Snapshot]:
        path = self.store.volume_path(volume.volume_id)
        snapshot_id = self.store.add_snapshot_from(path, volume.volume_id, bake_id)
        try:
            yield Snapshot(snapshot_id, volume.volume_id, self.store.snapshot_size(snapshot_id))
        except BaseException:
            self.store.delete_snapshot(snapshot_id)
            raise

    def check_name_available(self, name: str) -> None:
        if self.store.name_taken(name):
            raise ConflictError(
                f"an image named {name} exists already",
                hint="choose another name with -n, or another suffix with -s",
            )

    @contextlib.contextmanager
    def registered(self, snapshot: Snapshot, spec: ImageSpec, bake_id: str) -> Iterator[Image]:
        try:
            image_id = self.store.register_image(
                name=spec.name,
                snapshot_id=snapshot.snapshot_id,
                description=spec.description,
                tags=spec.tags,
                manifest=spec.manifest,
                base_image_id=spec.base.image_id,
                sbom=spec.sbom,
            )
            yield self.store.image(image_id)
        except BaseException:
            # By the snapshot, the bake's own: right wherever a signal came, even before the
            # image id was known here.
            self.store.deregister_images_of(snapshot.snapshot_id)
            raise

    def list_images(self) -> list[Image]:
        return self.store.images()

    def get_image(self, image_id: str) -> Image:
        return self.store.image(image_id)

    def image_manifest(self, image_id: str) -> list[ManifestEntry]:
        return self.store.manifest(image_id)

    def image_sbom(self, image_id: str) -> bytes | None:
        return self.store.sbom(image_id)

    def sbom_location(self, image_id: str) -> str | None:
        path = self.store.sbom_path(image_id)
        return str(path) if path.is_file() else None

    def import_image(
        self, name: str, raw_disk: Path, description: str, tags: Mapping[str, str]
    ) -> Image:
        if not raw_disk.is_file():
            raise NotFoundError(f"disk image file not found: {raw_disk}")
        fields = probe(raw_disk)
        if "PTTYPE" not in fields and "TYPE" not in fields:
            raise RequestError(
                f"{raw_disk} holds neither a partition table nor a filesystem",
                hint="import a raw disk image (convert qcow2 first: qemu-img convert -O raw)",
            )
        self.check_name_available(name)
        snapshot_id = self.store.add_snapshot_from(raw_disk, None)
        try:
            image_id = self.store.register_image(
                name=name,
                snapshot_id=snapshot_id,
                description=description,
                tags=dict(tags),
                manifest=[],
                base_image_id=None,
            )
        except BaseException:
            self.store.delete_snapshot(snapshot_id)
            raise
        return self.store.image(image_id)

    def export_image(self, image_id: str, destination: Path) -> None:
        image = self.store.image(image_id)
        if destination.exists():
            raise RequestError(f"{destination} exists already", hint="export to a new file")
        if not destination.parent.is_dir():
            raise NotFoundError(f"directory not found: {destination.parent}")
        clone_file(self.store.snapshot_path(image.snapshot_id), destination)

    def remove_image(self, image_id: str) -> int:
        return self.store.remove_image(image_id)

    def plan(self, base: Image, *, size_bytes: int | None, bake_id: str) -> dict[str, Any]:
        self.store.require_room_for_bake(base.snapshot_id)
        return {"store": str(self.store.home)}

    def removal_refused(self, image: Image) -> str | None:
        if image.base_image_id is None:
            return "a base image, not baked: remove it with 'aminate images rm'"
        users = self.store.running_bakes_on(image)
        return f"the base of a running bake ({', '.join(users)})" if users else None

    def disk_usage(self, image: Image) -> int | None:
        return self.store.disk_usage(image.snapshot_id)

    def leftovers(self, bake_id: str) -> list[Leftover]:
        found: list[Leftover] = []
        for volume in self.store.volumes():
            if volume.bake_id != bake_id:
                continue
            found += [
                Leftover("loop device", str(device), f"over {volume.path}")
                for device in loop_devices_over(volume.path)
            ]
            found.append(Leftover("volume", volume.volume_id, f"{volume.state}, {volume.path}"))
        found += [
            Leftover("snapshot", snapshot_id, str(self.store.snapshot_path(snapshot_id)))
            for snapshot_id in self.store.unused_snapshots_of(bake_id)
        ]
        return found

    def release_leftover(self, leftover: Leftover) -> None:
        if leftover.kind == "loop device":
            device = Path(leftover.resource_id)
            # Only while it is still attached to that bake's volume: a device number is reused.
            if any(device in loop_devices_over(v.path) for v in self.store.volumes()):
                detach_loop_device(device)
        elif leftover.kind == "volume":
            self.store.delete_volume(leftover.resource_id)
        elif leftover.kind == "snapshot":
            self.store.delete_snapshot(leftover.resource_id)
        else:
            super().release_leftover(leftover)

    def check_store(self, recorded_bakes: Collection[str]) -> list[str]:
        return integrity.check(self.store, recorded_bakes)

    def repair_store(self, recorded_bakes: Collection[str]) -> list[str]:
        return integrity.repair(self.store, recorded_bakes)

    def release_command(self, kind: str, resource_id: str) -> str:
        if kind == "volume":
            return f"rm -f {shlex.quote(str(self.store.volume_path(resource_id)))}"
        if kind == "snapshot":
            return f"rm -f {shlex.quote(str(self.store.snapshot_path(resource_id)))}"
        return f"aminate images rm {shlex.quote(resource_id)}"
