"""The local store: a SQLite registry of images, snapshots and volumes, and their raw disk files.

Layout under the store's home::

    store.sqlite3           the registry
    store.lock              serialises the first setup of the registry
    snapshots/<id>.raw      snapshot data (sparse; reflink clones where the filesystem can)
    volumes/<id>.raw        working volumes of running bakes
    images/<id>.json        each image's record, from which ``store repair`` registers it again
    images/<id>.sbom.json   a baked image's SBOM (CycloneDX JSON), as the bake made it

A snapshot row is written only after its file is complete and synced, and an image row only
refers to such a snapshot, so the registry never points at partial data. Writers take SQLite's
write lock (``BEGIN IMMEDIATE``), so concurrent bakes on one host serialise their updates.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import secrets
import sqlite3
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from aminator_ng.api import (
    CloudError,
    ConflictError,
    HostError,
    Image,
    ManifestEntry,
    NotFoundError,
    partial_path,
    run,
    sync_file,
    write_whole,
)

log = logging.getLogger(__name__)

#: The first release's schema (version 0): a new store starts from it and is migrated.
SCHEMA = """
CREATE TABLE snapshots (
    id TEXT PRIMARY KEY,
    volume_id TEXT,
    size_bytes INTEGER NOT NULL,
    created TEXT NOT NULL
);
CREATE TABLE images (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    snapshot_id TEXT NOT NULL REFERENCES snapshots(id),
    description TEXT NOT NULL DEFAULT '',
    created TEXT NOT NULL,
    base_image_id TEXT,
    manifest TEXT NOT NULL DEFAULT '[]'
);
CREATE TABLE tags (
    image_id TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (image_id, key)
);
CREATE TABLE volumes (
    id TEXT PRIMARY KEY,
    snapshot_id TEXT NOT NULL,
    bake_id TEXT NOT NULL,
    state TEXT NOT NULL,
    device TEXT,
    created TEXT NOT NULL
);
"""
#: The schema's history after the first release (version 0, ``SCHEMA``): the statements of each
#: version, applied in order to a store of an earlier version. Later versions add to the end.
MIGRATIONS: tuple[tuple[int, tuple[str, ...]], ...] = (
    (
        1,
        (
            "ALTER TABLE volumes ADD COLUMN owner TEXT",
            "ALTER TABLE snapshots ADD COLUMN bake_id TEXT",
            "CREATE TABLE IF NOT EXISTS preserved_bakes (bake_id TEXT PRIMARY KEY,"
            " created TEXT NOT NULL)",
        ),
    ),
    # Preserved bakes are recorded by the engine, with every other bake.
    (2, ("DROP TABLE IF EXISTS preserved_bakes",)),
)
SCHEMA_VERSION = MIGRATIONS[-1][0]
SQLITE_HEADER = b"SQLite format 3\x00"
GIB = 1 << 30
#: An image's SBOM file beside its record: ``images/<id>.sbom.json``.
SBOM_SUFFIX = ".sbom.json"
#: A rollback journal kept allocated between transactions: reading needs no new file, and a
#: small write (``images rm``) reuses the journal's blocks, so a full filesystem can still list
#: and remove images. (WAL mode needs new -wal and -shm files to read after the last close.)
JOURNAL_MODE = "persist"
#: Space kept allocated beside the database and given up, once, when a write that frees space
#: (``images rm``, deleting a volume or snapshot) finds the filesystem full: its journal may
#: need to grow.
RESERVE_BYTES = 4 << 20
T = TypeVar("T")
REPAIR_HINT = (
    "'aminate store check' lists what is wrong; 'aminate store repair' rebuilds what it can"
)


class StoreFullError(CloudError):
    """The store's filesystem has no room for a write to the registry."""


class StoreDamagedError(CloudError):
    """The store's database or files are not what the registry says."""

    def __init__(self, message: str) -> None:
        super().__init__(message, hint=REPAIR_HINT)


def new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(6)}"


def is_sbom_file(path: Path) -> bool:
    return path.name.endswith(SBOM_SUFFIX)


def utc_now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def clone_file(source: Path, destination: Path) -> None:
    """Copy a raw disk file: a reflink clone where the filesystem supports it (XFS, btrfs), a
    sparse copy otherwise. Written under a temporary name, synced, then renamed into place."""
    partial = partial_path(destination)
    try:
        run(
            ["cp", "--reflink=auto", "--sparse=always", source, partial],
            what=f"copy {source.name}",
        )
        sync_file(partial)
        partial.rename(destination)
        sync_file(destination.parent)
    finally:
        partial.unlink(missing_ok=True)


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


@dataclass(frozen=True)
class ImageRecord:
    """An image as its record file holds it: enough to register it again from its snapshot."""

    image_id: str
    name: str
    snapshot_id: str
    description: str
    created: str
    base_image_id: str | None
    tags: dict[str, str]
    manifest: list[dict[str, str]]


class Store:
    """The registry and its files under ``home``."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.snapshot_dir = home / "snapshots"
        self.volume_dir = home / "volumes"
        #: One JSON record per image beside its snapshot: what ``store repair`` rebuilds from.
        self.record_dir = home / "images"
        self.database = home / "store.sqlite3"
        self.reserve = home / "store.reserve"
        self._ready = False
        #: Make a new database even though the store holds data (``store repair``).
        self._rebuilding = False

    def _prepare(self) -> None:
        if self._ready:
            return
        try:
            for directory in (self.home, self.snapshot_dir, self.volume_dir, self.record_dir):
                directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CloudError(
                f"cannot create the local store at {self.home}: {exc.strerror}",
                hint="set AMINATOR_HOME to a writable directory",
            ) from exc
        # Creating the database and migrating it are serialised by a lock file, so that no
        # process ever sees another's half-made database (a new one is empty for a moment).
        with (self.home / "store.lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if self._check_database_file():
                self._create_database()
            with self._connect() as db:
                version = db.execute("PRAGMA user_version").fetchone()[0]
                if version > SCHEMA_VERSION:
                    raise StoreDamagedError(
                        f"{self.database} has schema version {version}, newer than this "
                        f"aminator-ng's {SCHEMA_VERSION}"
                    )
                if version < SCHEMA_VERSION:  # only then written: a full store still reads
                    self.migrate(db, version)
        self._keep_reserve()

        self._ready = True

    def _check_database_file(self) -> bool:
        """Whether the database is still to be made. Never over an existing file, nor when
        the store holds data without one: that database was lost."""
        try:
            with self.database.open("rb") as file:
                header = file.read(len(SQLITE_HEADER))
        except FileNotFoundError:
            held = sorted(self.snapshot_dir.glob("*.raw")) + self.record_files()
            if held and not self._rebuilding:
                raise StoreDamagedError(
                    f"the local store's database {self.database} is missing, but the store "
                    f"holds {len(held)} snapshot files and image records"
                ) from None
            return True
        if not header:
            raise StoreDamagedError(
                f"the local store's database {self.database} is empty (0 bytes)"
            )
        if header != SQLITE_HEADER:
            raise StoreDamagedError(
                f"the local store's database {self.database} is not an SQLite database (corrupt)"
            )
        return False

    def check_database(self) -> None:
        """Open (or make) the database; StoreDamagedError when it is lost or damaged."""
        self._ready = False
        self._prepare()
        with self.reading() as db:
            db.execute("PRAGMA quick_check").fetchall()
            for table in ("images", "snapshots", "volumes", "tags"):
                db.execute(f"SELECT count(*) FROM {table}").fetchone()

    def database_replaced(self) -> None:
        """The database was set aside: make a new one next, whatever the store holds."""
        self._ready = False
        self._rebuilding = True

    def _create_database(self) -> None:
        """Make the database under a temporary name and rename it into place: a process killed
        while making it leaves no empty or half-made database behind."""
        new = self.database.with_name(f".{self.database.name}.new")
        new.unlink(missing_ok=True)
        with contextlib.closing(sqlite3.connect(new, isolation_level=None)) as db:
            db.executescript(SCHEMA)
            self.migrate(db, 0)
        sync_file(new)
        new.rename(self.database)
        sync_file(self.home)

    def migrate(self, db: sqlite3.Connection, version: int) -> None:
        """Bring a database of schema ``version`` to the current one, in one transaction."""
        db.execute("BEGIN IMMEDIATE")
        try:
            for added_in, statements in MIGRATIONS:
                if version < added_in:
                    for statement in statements:
                        db.execute(statement)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def _keep_reserve(self) -> None:
        """Allocate the reserve again once the filesystem has room for it, and more."""
        if self.reserve.exists() or self._free_bytes() < 4 * RESERVE_BYTES:
            return
        with contextlib.suppress(OSError):
            fd = os.open(self.reserve, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                os.posix_fallocate(fd, 0, RESERVE_BYTES)
            finally:
                os.close(fd)

    def _freeing(self, write: Callable[[], T]) -> T:
        """Run a write that frees space; on a full filesystem give up the reserve, and retry."""
        try:
            return write()
        except StoreFullError:
            if not self.reserve.exists():
                raise
            self.reserve.unlink()
            log.warning("the local store's filesystem is full: gave up its reserve to free space")
            return write()

    def _free_bytes(self) -> int:
        stat = os.statvfs(self.home)
        return stat.f_bavail * stat.f_frsize

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        try:  # mode=rw: never made here, even if it vanished since it was checked
            db = sqlite3.connect(
                f"{self.database.as_uri()}?mode=rw", uri=True, timeout=60, isolation_level=None
            )
        except sqlite3.DatabaseError as exc:
            raise self._database_error(exc) from exc
        try:
            db.execute("PRAGMA foreign_keys=ON")
            # A connection's own setting (only WAL is kept in the file). A store of an earlier
            # version is in WAL mode: it leaves it once no other process has it open.
            with contextlib.suppress(sqlite3.OperationalError):
                db.execute(f"PRAGMA journal_mode={JOURNAL_MODE}")
            db.row_factory = sqlite3.Row
            yield db
        except sqlite3.IntegrityError:
            raise
        except sqlite3.DatabaseError as exc:
            raise self._database_error(exc) from exc
        finally:
            db.close()

    def _database_error(self, error: sqlite3.DatabaseError) -> CloudError:
        text = str(error)
        if "full" in text:
            return StoreFullError(
                f"the local store's filesystem is full ({self.home}): {text}",
                hint="free space, for one with 'aminate images rm ID'",
            )
        if "locked" in text or "busy" in text:
            return CloudError(f"the local store's database {self.database} stays locked: {text}")
        return StoreDamagedError(f"the local store's database {self.database}: {text}")

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction holding SQLite's write lock from the start."""
        self._prepare()
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                if db.in_transaction:  # SQLite rolls back by itself after some errors
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
        self._freeing(lambda: self._delete_snapshot(snapshot_id))

    def _delete_snapshot(self, snapshot_id: str) -> None:
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

    def create_volume(
        self, snapshot_id: str, bake_id: str, *, size_bytes: int | None = None
    ) -> VolumeRecord:
        """A volume file cloned from a snapshot, extended (sparse) to ``size_bytes`` if that is
        larger. Its row comes first (state ``creating``), so that a bake killed while cloning
        leaves a row naming the partial file for ``aminate cleanup``. The snapshot is
        share-locked while it is read: ``remove_image`` waits for no one."""
        self._prepare()
        self.require_room_for_bake(snapshot_id)
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
                if size_bytes is not None and size_bytes > path.stat().st_size:
                    os.truncate(path, size_bytes)
            except FileNotFoundError as exc:
                if self._images_using(snapshot_id):
                    raise StoreDamagedError(
                        f"snapshot {snapshot_id} of an image has lost its file {source}"
                    ) from exc
                raise NotFoundError(
                    f"the data of snapshot {snapshot_id} is gone (its image was removed?)"
                ) from exc
            self.set_volume_state(volume_id, "available")
        except BaseException:
            self.delete_volume(volume_id)
            raise
        return VolumeRecord(volume_id, snapshot_id, bake_id, "available", None, path, owner)

    def require_room_for_bake(self, snapshot_id: str) -> None:
        """Refuse a bake the store cannot hold: a volume and a snapshot, each as large as the
        base's data (a reflink clone may need less; the install may need more)."""
        each = self.disk_usage(snapshot_id)
        free = self._free_bytes()
        if free < 2 * each:
            raise HostError(
                f"the local store at {self.home} has {free / GIB:.2f} GiB free; a bake of "
                f"snapshot {snapshot_id} needs about {2 * each / GIB:.2f} GiB (a volume and a "
                f"snapshot of {each / GIB:.2f} GiB each)",
                hint="free space with 'aminate images rm ID', or set AMINATOR_HOME to a "
                "larger filesystem",
            )

    def set_volume_state(self, volume_id: str, state: str, device: str | None = None) -> None:
        with self.transaction() as db:
            db.execute(
                "UPDATE volumes SET state = ?, device = ? WHERE id = ?", (state, device, volume_id)
            )

    def delete_volume(self, volume_id: str) -> None:
        """Delete a volume's files, then its row (as ``delete_snapshot``)."""
        self._freeing(lambda: self._delete_volume(volume_id))

    def _delete_volume(self, volume_id: str) -> None:
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
        sbom: bytes | None = None,
    ) -> str:
        """Register a complete snapshot as an image; its record file and its SBOM file follow
        the row."""
        record = ImageRecord(
            image_id=new_id("img"),
            name=name,
            snapshot_id=snapshot_id,
            description=description,
            created=utc_now().isoformat(),
            base_image_id=base_image_id,
            tags=dict(tags),
            manifest=[m.as_dict() for m in manifest],
        )
        try:
            with self.transaction() as db:
                self.insert_image(db, record)
        except sqlite3.IntegrityError as exc:
            if "images.name" in str(exc):
                raise ConflictError(
                    f"an image named {name} exists already",
                    hint="choose another name with -n, or another suffix with -s",
                ) from exc
            raise
        try:
            self.write_record(record)
            if sbom is not None:
                self.write_sbom(record.image_id, sbom)
        except BaseException:
            self.deregister_image(record.image_id)
            raise
        return record.image_id

    def insert_image(self, db: sqlite3.Connection, record: ImageRecord) -> None:
        db.execute(
            "INSERT INTO images (id, name, snapshot_id, description, created, base_image_id,"
            " manifest) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                record.image_id,
                record.name,
                record.snapshot_id,
                record.description,
                record.created,
                record.base_image_id,
                json.dumps(record.manifest),
            ),
        )
        db.executemany(
            "INSERT INTO tags (image_id, key, value) VALUES (?, ?, ?)",
            [(record.image_id, k, v) for k, v in record.tags.items()],
        )

    def record_path(self, image_id: str) -> Path:
        return self.record_dir / f"{image_id}.json"

    def sbom_path(self, image_id: str) -> Path:
        return self.record_dir / f"{image_id}{SBOM_SUFFIX}"

    def record_files(self) -> list[Path]:
        """The image record files, sorted (SBOM files share their directory)."""
        return sorted(p for p in self.record_dir.glob("img-*.json") if not is_sbom_file(p))

    def sbom_files(self) -> list[Path]:
        return sorted(self.record_dir.glob(f"img-*{SBOM_SUFFIX}"))

    def write_sbom(self, image_id: str, data: bytes) -> None:
        """The image's SBOM file, readable by all as the image's data is, written whole (a
        synced temporary file renamed)."""
        path = self.sbom_path(image_id)
        try:
            write_whole(path, data)
        except OSError as exc:
            raise CloudError(
                f"cannot write the SBOM of image {image_id} to {path}: {exc.strerror or exc}"
            ) from exc

    def sbom(self, image_id: str) -> bytes | None:
        """The SBOM stored with an image, None when it has none (an imported base)."""
        self.image(image_id)
        try:
            return self.sbom_path(image_id).read_bytes()
        except FileNotFoundError:
            return None

    def write_record(self, record: ImageRecord) -> None:
        """The image's record file, written whole (a synced temporary file renamed)."""
        text = json.dumps(asdict(record), indent=1)
        write_whole(self.record_path(record.image_id), text.encode())

    def image_record(self, image_id: str) -> ImageRecord:
        """The record of a registered image, from its row."""
        image = self.image(image_id)
        return ImageRecord(
            image_id=image.image_id,
            name=image.name,
            snapshot_id=image.snapshot_id,
            description=image.description,
            created=image.created.isoformat(),
            base_image_id=image.base_image_id,
            tags=dict(image.tags),
            manifest=[entry.as_dict() for entry in self.manifest(image_id)],
        )

    def read_record(self, path: Path) -> ImageRecord | None:
        """An image record file, or None when it is unreadable."""
        try:
            return ImageRecord(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def deregister_image(self, image_id: str) -> None:
        """Remove an image's record file, then its row, then its SBOM file (as
        ``remove_image``)."""
        self.record_path(image_id).unlink(missing_ok=True)
        with self.transaction() as db:
            db.execute("DELETE FROM images WHERE id = ?", (image_id,))
        self.sbom_path(image_id).unlink(missing_ok=True)

    def deregister_images_of(self, snapshot_id: str) -> None:
        """Deregister every image of a snapshot (a bake's own, none other uses it yet)."""
        with self.transaction() as db:
            rows = db.execute("SELECT id FROM images WHERE snapshot_id = ?", (snapshot_id,))
            image_ids = [row["id"] for row in rows]
            for image_id in image_ids:
                self.record_path(image_id).unlink(missing_ok=True)
            db.execute("DELETE FROM images WHERE snapshot_id = ?", (snapshot_id,))
        for image_id in image_ids:
            self.sbom_path(image_id).unlink(missing_ok=True)

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
            for row in rows:
                self._require_data(row)
            return [self._image(db, row) for row in rows]

    def _require_data(self, row: sqlite3.Row) -> None:
        """An image whose snapshot file is gone is damage to report, never to hide."""
        path = self.snapshot_path(row["snapshot_id"])
        if not path.is_file():
            raise StoreDamagedError(
                f"image {row['id']} ({row['name']}) has lost its snapshot file {path}"
            )

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
        return self._freeing(lambda: self._remove_image(image_id))

    def running_bakes_on(self, image: Image) -> list[str]:
        """The running bakes whose volume was made from the image."""
        with self.reading() as db:
            return self._running_bakes_on(db, image.snapshot_id)

    @staticmethod
    def _running_bakes_on(db: sqlite3.Connection, snapshot_id: str) -> list[str]:
        rows = db.execute(
            "SELECT bake_id, owner FROM volumes WHERE snapshot_id = ?", (snapshot_id,)
        )
        return [row["bake_id"] for row in rows if owner_alive(row["owner"])]

    def _remove_image(self, image_id: str) -> int:
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
                users = self._running_bakes_on(db, image.snapshot_id)
                if users:
                    raise ConflictError(
                        f"image {image_id} is the base of a running bake ({', '.join(users)})",
                        hint="remove it when the bake has ended",
                    )
                # The record first: a removal cut short leaves the row, never a record that
                # would bring the image back (``store repair`` writes a missing record again).
                self.record_path(image_id).unlink(missing_ok=True)
                db.execute("DELETE FROM images WHERE id = ?", (image_id,))
                shared = db.execute(
                    "SELECT 1 FROM images WHERE snapshot_id = ?", (image.snapshot_id,)
                ).fetchone()
                if shared is None:
                    db.execute("DELETE FROM snapshots WHERE id = ?", (image.snapshot_id,))
            # After the row: cut short before this, the SBOM file is an orphan that ``store
            # repair`` removes, never an image's loss.
            self.sbom_path(image_id).unlink(missing_ok=True)
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

    def _images_using(self, snapshot_id: str) -> list[str]:
        with self.reading() as db:
            rows = db.execute("SELECT id FROM images WHERE snapshot_id = ?", (snapshot_id,))
            return [row["id"] for row in rows]

    def unused_snapshots_of(self, bake_id: str) -> list[str]:
        """Snapshots a bake made that no image uses."""
        with self.reading() as db:
            rows = db.execute(
                "SELECT id FROM snapshots WHERE bake_id = ?"
                " AND id NOT IN (SELECT snapshot_id FROM images)",
                (bake_id,),
            ).fetchall()
        return [row["id"] for row in rows]
