"""``aminate store check`` and ``aminate store repair`` for the local store.

The registry is the truth, and the files on disk its evidence: a snapshot file per snapshot row,
a volume file per volume row, a record file per image row (``images/<id>.json``) from which the
image can be registered again, and an SBOM file (``images/<id>.sbom.json``) per image whose tags
say it has one (an imported base has none). ``check`` lists every disagreement; ``repair``
settles each the way that loses nothing: an image whose record and snapshot file survive is
registered again (a lost database is rebuilt that way); a row whose data is gone is removed; a
snapshot file nothing names is kept and reported, for the operator to remove; an SBOM file of no
image is removed; an image's lost or changed SBOM is reported (it cannot be made again). What
belongs to a bake with a record (running, dead or preserved) is left to that bake, or to
``aminate cleanup``.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

from aminator_local.store import SBOM_SUFFIX, ImageRecord, Store, StoreDamagedError
from aminator_ng.api import partial_path

#: The tag the engine gives an image baked with an SBOM: the SBOM's SHA-256.
SBOM_DIGEST_TAG = "sbom_sha256"


@dataclass(frozen=True)
class Finding:
    """One disagreement between the registry and the files, and how repair settles it."""

    problem: str
    remedy: str
    #: What repair does; None when it only reports.
    settle: Callable[[], object] | None = None

    def describe(self) -> str:
        return f"{self.problem} (repair: {self.remedy})"


def _rows(store: Store, table: str, columns: str) -> dict[str, sqlite3.Row]:
    with store.reading() as db:
        return {row["id"]: row for row in db.execute(f"SELECT id, {columns} FROM {table}")}


def findings(store: Store, recorded_bakes: Collection[str]) -> list[Finding]:
    """Every disagreement of a readable store (a damaged database raises StoreDamagedError).
    The findings are independent of each other: each can be settled in any order."""
    images = _rows(store, "images", "name, snapshot_id")
    snapshots = _rows(store, "snapshots", "bake_id")
    volumes = _rows(store, "volumes", "bake_id")
    # Oldest first, so that images registered again keep their order.
    records: dict[str, tuple[Path, ImageRecord | None]] = dict(
        sorted(
            ((path.stem, (path, store.read_record(path))) for path in store.record_files()),
            key=lambda item: item[1][1].created if item[1][1] else "",
        )
    )
    found: list[Finding] = []

    for image_id, row in images.items():
        path = store.snapshot_path(row["snapshot_id"])
        if not path.is_file():
            found.append(
                Finding(
                    f"image {image_id} ({row['name']}) has lost its snapshot file {path}",
                    "deregister the image",
                    partial(store.remove_image, image_id),
                )
            )
        elif image_id not in records:
            found.append(
                Finding(
                    f"image {image_id} ({row['name']}) has no record file",
                    "write it",
                    partial(_write_record, store, image_id),
                )
            )
    for image_id, (path, record) in records.items():
        if image_id in images:
            continue
        if record is None:
            found.append(Finding(f"image record {path} is unreadable", "keep it"))
        elif store.snapshot_path(record.snapshot_id).is_file():
            found.append(
                Finding(
                    f"image {image_id} ({record.name}) is recorded in {path} but not registered",
                    "register it again from its record",
                    partial(_register_again, store, record),
                )
            )
        else:
            found.append(
                Finding(
                    f"image record {path} names a snapshot file that is gone "
                    f"({store.snapshot_path(record.snapshot_id)})",
                    "remove the record",
                    path.unlink,
                )
            )

    found += _sbom_findings(store, images, records)

    in_use = {row["snapshot_id"] for row in images.values()}
    recorded_snapshots = {record.snapshot_id for _, record in records.values() if record}
    for snapshot_id, row in snapshots.items():
        if row["bake_id"] in recorded_bakes or snapshot_id in in_use:
            continue  # a recorded bake's (cleanup's), or settled with its image
        if not store.snapshot_path(snapshot_id).is_file():
            found.append(
                Finding(
                    f"snapshot {snapshot_id} has a row but no file",
                    "remove the row",
                    partial(store.delete_snapshot, snapshot_id),
                )
            )
    for path in sorted(store.snapshot_dir.glob("*.raw")):
        if path.stem not in snapshots and path.stem not in recorded_snapshots:
            found.append(Finding(f"snapshot file {path} is named by no row or record", "keep it"))

    for volume_id, row in volumes.items():
        if row["bake_id"] not in recorded_bakes:
            found.append(
                Finding(
                    f"volume {volume_id} of bake {row['bake_id']}, which left no record",
                    "delete the volume",
                    partial(store.delete_volume, volume_id),
                )
            )
    for path in sorted(store.volume_dir.glob("*.raw")):
        if path.stem not in volumes:
            found.append(
                Finding(f"volume file {path} is named by no row", "delete it", path.unlink)
            )

    owned = {
        partial_path(store.snapshot_path(i))
        for i, row in snapshots.items()
        if row["bake_id"] in recorded_bakes
    } | {
        partial_path(store.volume_path(i))
        for i, row in volumes.items()
        if row["bake_id"] in recorded_bakes
    }
    for directory in (store.snapshot_dir, store.volume_dir, store.record_dir):
        for path in sorted(directory.glob(".*.partial")):
            if path not in owned:
                found.append(
                    Finding(f"partial file {path} of a copy cut short", "delete it", path.unlink)
                )
    return found


def _sbom_findings(
    store: Store,
    images: dict[str, sqlite3.Row],
    records: dict[str, tuple[Path, ImageRecord | None]],
) -> list[Finding]:
    found: list[Finding] = []
    with store.reading() as db:
        digests = dict(
            db.execute("SELECT image_id, value FROM tags WHERE key = ?", (SBOM_DIGEST_TAG,))
        )
    for image_id, digest in digests.items():
        path = store.sbom_path(image_id)
        name = images[image_id]["name"]
        try:
            actual = hashlib.sha256(path.read_bytes()).hexdigest()
        except FileNotFoundError:
            found.append(
                Finding(
                    f"image {image_id} ({name}) has lost its SBOM file {path}", "keep the image"
                )
            )
            continue
        if actual != digest:
            found.append(
                Finding(
                    f"the SBOM file {path} of image {image_id} ({name}) does not match its "
                    f"{SBOM_DIGEST_TAG} tag",
                    "keep it",
                )
            )
    # A record kept, or registered again, keeps its image's SBOM; one removed for its lost
    # snapshot does not.
    kept = {
        image_id
        for image_id, (_, record) in records.items()
        if record is None or store.snapshot_path(record.snapshot_id).is_file()
    }
    for path in store.sbom_files():
        image_id = path.name.removesuffix(SBOM_SUFFIX)
        if image_id not in images and image_id not in kept:
            found.append(Finding(f"SBOM file {path} belongs to no image", "delete it", path.unlink))
    return found


def check(store: Store, recorded_bakes: Collection[str]) -> list[str]:
    return [finding.describe() for finding in findings(store, recorded_bakes)]


def repair(store: Store, recorded_bakes: Collection[str]) -> list[str]:
    """Settle every finding, after setting a lost or damaged database aside for a new one.
    Returns a line for each thing done or kept. The caller makes sure no bake runs."""
    done: list[str] = []
    try:
        store.check_database()
    except StoreDamagedError as damage:
        done.append(_set_aside(store, damage))
    for finding in findings(store, recorded_bakes):
        if finding.settle is not None:
            finding.settle()
        done.append(
            f"{finding.problem}: " + (f"{finding.remedy}, done" if finding.settle else "kept")
        )
    return done


def _set_aside(store: Store, damage: StoreDamagedError) -> str:
    """Move a damaged database out of the way (never delete it), so that a new one is made."""
    store.database_replaced()
    if not store.database.exists():
        return f"{damage.message}: made a new database"
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    kept = store.database.with_name(f"{store.database.name}.damaged-{stamp}")
    for suffix in ("-journal", "-wal", "-shm", ""):
        companion = store.database.with_name(store.database.name + suffix)
        if companion.exists():
            companion.rename(kept.with_name(kept.name + suffix))
    return f"{damage.message}: moved it to {kept} and made a new database"


def _write_record(store: Store, image_id: str) -> None:
    store.write_record(store.image_record(image_id))


def _register_again(store: Store, record: ImageRecord) -> None:
    size = store.snapshot_path(record.snapshot_id).stat().st_size
    with store.transaction() as db:
        db.execute(
            "INSERT OR IGNORE INTO snapshots (id, volume_id, size_bytes, created, bake_id)"
            " VALUES (?, NULL, ?, ?, NULL)",
            (record.snapshot_id, size, record.created),
        )
        store.insert_image(db, record)
