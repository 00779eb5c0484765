"""The local store: a SQLite registry of images, snapshots and volumes, and their raw disk files.

Layout under the store's home::

    store.sqlite3           the registry
    store.lock              serialises the first setup of the registry
    snapshots/<id>.raw      snapshot data (sparse; reflink clones where the filesystem can)
    volumes/<id>.raw        working volumes of running bakes

A snapshot row is written only after its file is complete and synced, and an image row only
refers to such a snapshot, so the registry never points at partial data. Writers take SQLite's
write lock (``BEGIN IMMEDIATE``), so concurrent bakes on one host serialise their updates.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from aminator_ng.api import (
    CloudError,
    ConflictError,
    Image,
    ManifestEntry,
    NotFoundError,
    run,
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS snapshots (
    id TEXT PRIMARY KEY,
    volume_id TEXT,
    size_bytes INTEGER NOT NULL,
    created TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS images (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    snapshot_id TEXT NOT NULL REFERENCES snapshots(id),
    description TEXT NOT NULL DEFAULT '',
    created TEXT NOT NULL,
    base_image_id TEXT,
    manifest TEXT NOT NULL DEFAULT '[]'
);
CREATE TABLE IF NOT EXISTS tags (
    image_id TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (image_id, key)
);
CREATE TABLE IF NOT EXISTS volumes (
    id TEXT PRIMARY KEY,
    snapshot_id TEXT NOT NULL,
    bake_id TEXT NOT NULL,
    state TEXT NOT NULL,
    device TEXT,
    created TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS preserved_bakes (
    bake_id TEXT PRIMARY KEY,
    created TEXT NOT NULL
);
"""
#: Columns added after the first release, with the schema version that added them.
MIGRATIONS = (
    (1, "ALTER TABLE volumes ADD COLUMN owner TEXT"),
    (1, "ALTER TABLE snapshots ADD COLUMN bake_id TEXT"),
)
SCHEMA_VERSION = 1


def new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(6)}"


def utc_now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def partial_path(destination: Path) -> Path:
    """Where ``clone_file`` writes ``destination`` until it is complete."""
    return destination.with_name(f".{destination.name}.partial")


def clone_file(source: Path, destination: Path) -> None:
    """Copy a raw disk file: a reflink clone where the filesystem supports it (XFS, btrfs), a
    sparse copy otherwise. Written under a temporary name, synced, then renamed into place."""
    partial = partial_path(destination)
    try:
        run(
            ["cp", "--reflink=auto", "--sparse=always", source, partial],
            what=f"copy {source.name}",
        )
        with partial.open("rb+") as copied:
            os.fsync(copied.fileno())
        partial.rename(destination)
        _fsync_dir(destination.parent)
    finally:
        partial.unlink(missing_ok=True)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def process_identity(pid: int) -> str | None:
    """``PID:START`` of a live process (its start time tells a reused pid apart), else None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces; the start time is field 22.
    return f"{pid}:{stat.rsplit(')', 1)[1].split()[19]}"


def owner_alive(owner: str | None) -> bool:
    """Whether the bake process that wrote ``owner`` still runs."""
    if not owner:
        return False
    pid = owner.split(":", 1)[0]
    return pid.isdigit() and process_identity(int(pid)) == owner


@dataclass(frozen=True)
class VolumeRecord:
    volume_id: str
    snapshot_id: str
    bake_id: str
    state: str
    device: str | None
    path: Path
    owner: str | None = None


class Store:
    """The registry and its files under ``home``."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.snapshot_dir = home / "snapshots"
        self.volume_dir = home / "volumes"
        self.database = home / "store.sqlite3"
        self._ready = False

    def _prepare(self) -> None:
        if self._ready:
            return
        try:
            for directory in (self.home, self.snapshot_dir, self.volume_dir):
                directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CloudError(
                f"cannot create the local store at {self.home}: {exc.strerror}",
                hint="set AMINATOR_HOME to a writable directory",
            ) from exc
        # Switching a new database to WAL fails at once (no busy wait) when another process
        # switches it too, so the first setup is serialised by a lock file.
        with (self.home / "store.lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            with self._connect() as db:
                db.execute("PRAGMA journal_mode=WAL")
                db.executescript(SCHEMA)
                version = db.execute("PRAGMA user_version").fetchone()[0]
                for added_in, statement in MIGRATIONS:
                    if version < added_in:
                        db.execute(statement)
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        self._ready = True

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.database, timeout=60, isolation_level=None)
        try:
            db.execute("PRAGMA foreign_keys=ON")
            db.row_factory = sqlite3.Row
            yield db
        finally:
            db.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction holding SQLite's write lock from the start."""
        self._prepare()
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    @contextlib.contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        self._prepare()
        with self._connect() as db:
            yield db

    # Paths

    def snapshot_path(self, snapshot_id: str) -> Path:
        return self.snapshot_dir / f"{snapshot_id}.raw"

    def volume_path(self, volume_id: str) -> Path:
        return self.volume_dir / f"{volume_id}.raw"

    # Snapshots

    def add_snapshot_from(
        self, source: Path, volume_id: str | None, bake_id: str | None = None
    ) -> str:
        """Copy ``source`` into a new snapshot. Its row comes first (size 0, no file yet), so
        that a bake killed while copying leaves a row naming the partial file for ``aminate
        cleanup``; no image refers to the snapshot before it is complete."""
        self._prepare()
        snapshot_id = new_id("snap")
        path = self.snapshot_path(snapshot_id)
        with self.transaction() as db:
            db.execute(
                "INSERT INTO snapshots (id, volume_id, size_bytes, created, bake_id)"
                " VALUES (?, ?, 0, ?, ?)",
                (snapshot_id, volume_id, utc_now().isoformat(), bake_id),
            )
        try:
            clone_file(source, path)
            with self.transaction() as db:
                db.execute(
                    "UPDATE snapshots SET size_bytes = ? WHERE id = ?",
                    (path.stat().st_size, snapshot_id),
                )
        except BaseException:
            self.delete_snapshot(snapshot_id)
            raise
        return snapshot_id

    def delete_snapshot(self, snapshot_id: str) -> None:
        """Delete a snapshot's files, then its row: a row is never left naming no file while
        its file stays unnamed."""
        path = self.snapshot_path(snapshot_id)
        partial_path(path).unlink(missing_ok=True)
        path.unlink(missing_ok=True)
        with self.transaction() as db:
            db.execute("DELETE FROM snapshots WHERE id = ?", (snapshot_id,))

    def snapshot_size(self, snapshot_id: str) -> int:
        with self.reading() as db:
            row = db.execute(
                "SELECT size_bytes FROM snapshots WHERE id = ?", (snapshot_id,)
            ).fetchone()
        if row is None:
            raise NotFoundError(f"snapshot not found: {snapshot_id}")
        return int(row["size_bytes"])

    # Volumes

    def create_volume(self, snapshot_id: str, bake_id: str) -> VolumeRecord:
        """A volume file cloned from a snapshot. Its row comes first (state ``creating``), so
        that a bake killed while cloning leaves a row naming the partial file for ``aminate
        cleanup``. The snapshot is share-locked while it is read: ``remove_image`` waits for
        no one."""
        self._prepare()
        volume_id = new_id("vol")
        path = self.volume_path(volume_id)
        source = self.snapshot_path(snapshot_id)
        owner = process_identity(os.getpid())
        with self.transaction() as db:
            db.execute(
                "INSERT INTO volumes (id, snapshot_id, bake_id, state, created, owner)"
                " VALUES (?, ?, ?, 'creating', ?, ?)",
                (volume_id, snapshot_id, bake_id, utc_now().isoformat(), owner),
            )
        try:
            try:
                with source.open("rb") as snapshot:
                    fcntl.flock(snapshot, fcntl.LOCK_SH)
                    clone_file(source, path)
            except FileNotFoundError as exc:
                raise NotFoundError(
                    f"the data of snapshot {snapshot_id} is gone (its image was removed?)"
                ) from exc
            self.set_volume_state(volume_id, "available")
        except BaseException:
            self.delete_volume(volume_id)
            raise
        return VolumeRecord(volume_id, snapshot_id, bake_id, "available", None, path, owner)

    def set_volume_state(self, volume_id: str, state: str, device: str | None = None) -> None:
        with self.transaction() as db:
            db.execute(
                "UPDATE volumes SET state = ?, device = ? WHERE id = ?", (state, device, volume_id)
            )

    def delete_volume(self, volume_id: str) -> None:
        """Delete a volume's files, then its row (as ``delete_snapshot``)."""
        path = self.volume_path(volume_id)
        partial_path(path).unlink(missing_ok=True)
        path.unlink(missing_ok=True)
        with self.transaction() as db:
            db.execute("DELETE FROM volumes WHERE id = ?", (volume_id,))

    def volumes(self) -> list[VolumeRecord]:
        with self.reading() as db:
            rows = db.execute("SELECT * FROM volumes ORDER BY created").fetchall()
        return [
            VolumeRecord(
                r["id"],
                r["snapshot_id"],
                r["bake_id"],
                r["state"],
                r["device"],
                self.volume_path(r["id"]),
                r["owner"],
            )
            for r in rows
        ]

    # Images

    def register_image(
        self,
        *,
        name: str,
        snapshot_id: str,
        description: str,
        tags: Mapping[str, str],
        manifest: Sequence[ManifestEntry],
        base_image_id: str | None,
    ) -> str:
        image_id = new_id("img")
        manifest_json = json.dumps([m.as_dict() for m in manifest])
        try:
            with self.transaction() as db:
                db.execute(
                    "INSERT INTO images (id, name, snapshot_id, description, created,"
                    " base_image_id,"
                    " manifest) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        image_id,
                        name,
                        snapshot_id,
                        description,
                        utc_now().isoformat(),
                        base_image_id,
                        manifest_json,
                    ),
                )
                db.executemany(
                    "INSERT INTO tags (image_id, key, value) VALUES (?, ?, ?)",
                    [(image_id, k, v) for k, v in tags.items()],
                )
        except sqlite3.IntegrityError as exc:
            if "images.name" in str(exc):
                raise ConflictError(
                    f"an image named {name} exists already",
                    hint="choose another name with -n, or another suffix with -s",
                ) from exc
            raise
        return image_id

    def deregister_image(self, image_id: str) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM images WHERE id = ?", (image_id,))

    def name_taken(self, name: str) -> bool:
        with self.reading() as db:
            return db.execute("SELECT 1 FROM images WHERE name = ?", (name,)).fetchone() is not None

    def _image(self, db: sqlite3.Connection, row: sqlite3.Row) -> Image:
        tags = dict(
            db.execute(
                "SELECT key, value FROM tags WHERE image_id = ? ORDER BY key", (row["id"],)
            ).fetchall()
        )
        return Image(
            image_id=row["id"],
            name=row["name"],
            created=datetime.fromisoformat(row["created"]),
            snapshot_id=row["snapshot_id"],
            description=row["description"],
            tags=tags,
            cloud="local",
            region="local",
            size_bytes=row["size_bytes"],
            base_image_id=row["base_image_id"],
        )

    _IMAGE_QUERY = (
        "SELECT images.*, snapshots.size_bytes FROM images"
        " JOIN snapshots ON snapshots.id = images.snapshot_id"
    )

    def images(self) -> list[Image]:
        with self.reading() as db:
            rows = db.execute(
                f"{self._IMAGE_QUERY} ORDER BY images.created, images.rowid"
            ).fetchall()
            return [
                self._image(db, row)
                for row in rows
                if self.snapshot_path(row["snapshot_id"]).is_file()
            ]

    def image(self, image_id: str) -> Image:
        with self.reading() as db:
            row = db.execute(f"{self._IMAGE_QUERY} WHERE images.id = ?", (image_id,)).fetchone()
            if row is None:
                raise NotFoundError(
                    f"image not found: {image_id}", hint="'aminate images' lists them"
                )
            return self._image(db, row)

    def newest_image_named(self, name: str) -> Image | None:
        with self.reading() as db:
            row = db.execute(
                f"{self._IMAGE_QUERY} WHERE images.name = ?"
                " ORDER BY images.created DESC, images.rowid DESC",
                (name,),
            ).fetchone()
            return self._image(db, row) if row is not None else None

    def manifest(self, image_id: str) -> list[ManifestEntry]:
        with self.reading() as db:
            row = db.execute("SELECT manifest FROM images WHERE id = ?", (image_id,)).fetchone()
        if row is None:
            raise NotFoundError(f"image not found: {image_id}")
        return [ManifestEntry(**entry) for entry in json.loads(row["manifest"])]

    # Housekeeping

    def remove_image(self, image_id: str) -> int:
        """Deregister an image and delete its snapshot unless another image uses it too.

        Refused (ConflictError) while a running bake uses the image as its base. Returns the
        bytes freed on disk.
        """
        image = self.image(image_id)
        path = self.snapshot_path(image.snapshot_id)
        with contextlib.ExitStack() as stack:
            if path.is_file():
                snapshot = stack.enter_context(path.open("rb"))
                try:
                    fcntl.flock(snapshot, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError as exc:
                    raise ConflictError(
                        f"image {image_id} is being copied for a bake right now",
                        hint="remove it once that bake has its volume",
                    ) from exc
            with self.transaction() as db:
                users = [
                    row["bake_id"]
                    for row in db.execute(
                        "SELECT bake_id, owner FROM volumes WHERE snapshot_id = ?",
                        (image.snapshot_id,),
                    )
                    if owner_alive(row["owner"])
                ]
                if users:
                    raise ConflictError(
                        f"image {image_id} is the base of a running bake ({', '.join(users)})",
                        hint="remove it when the bake has ended",
                    )
                db.execute("DELETE FROM images WHERE id = ?", (image_id,))
                shared = db.execute(
                    "SELECT 1 FROM images WHERE snapshot_id = ?", (image.snapshot_id,)
                ).fetchone()
                if shared is None:
                    db.execute("DELETE FROM snapshots WHERE id = ?", (image.snapshot_id,))
            if shared is not None or not path.is_file():
                return 0
            freed = self.disk_usage(image.snapshot_id)
            path.unlink()
        return freed

    def disk_usage(self, snapshot_id: str) -> int:
        """Bytes a snapshot's file takes on disk (it is sparse; reflinked extents count fully)."""
        try:
            return self.snapshot_path(snapshot_id).stat().st_blocks * 512
        except FileNotFoundError:
            return 0

    def unused_snapshots_of(self, bake_id: str) -> list[str]:
        """Snapshots a bake made that no image uses."""
        with self.reading() as db:
            rows = db.execute(
                "SELECT id FROM snapshots WHERE bake_id = ?"
                " AND id NOT IN (SELECT snapshot_id FROM images)",
                (bake_id,),
            ).fetchall()
        return [row["id"] for row in rows]
