"""The local store never loses images silently: a lost, empty or corrupt database and a lost
snapshot file are reported naming the file; ``store check`` lists what disagrees; ``store
repair`` rebuilds the registry from the image records and snapshot files; every earlier schema
migrates; a bake the store cannot hold is refused."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from aminator_local import integrity
from aminator_local.store import (
    MIGRATIONS,
    SCHEMA,
    SCHEMA_VERSION,
    Store,
    StoreDamagedError,
)
from aminator_ng.contract.model import ManifestEntry
from aminator_ng.errors import HostError

MANIFEST = [ManifestEntry("hello", "1.0-1", "all", "hello", "1.0-1")]


@pytest.fixture
def disk(tmp_path: Path) -> Path:
    path = tmp_path / "disk.raw"
    path.write_bytes(b"\xeb\x3c\x90" + b"\1" * 8189)
    return path


def register(store: Store, disk: Path, name: str) -> str:
    return store.register_image(
        name=name,
        snapshot_id=store.add_snapshot_from(disk, None),
        description=f"{name} description",
        tags={"team": "web"},
        manifest=MANIFEST,
        base_image_id=None,
    )


@pytest.fixture
def filled(tmp_path: Path, disk: Path) -> tuple[Store, list[str]]:
    store = Store(tmp_path / "home")
    return store, [register(store, disk, "base"), register(store, disk, "app")]


def described(store: Store) -> list[tuple[str, str, dict[str, str], str]]:
    return [(i.image_id, i.name, dict(i.tags), i.description) for i in store.images()]


def test_an_empty_database_is_reported_and_left_as_it_was(
    filled: tuple[Store, list[str]],
) -> None:
    store, _ = filled
    store.database.write_bytes(b"")
    with pytest.raises(StoreDamagedError, match=f"{store.database} is empty") as raised:
        Store(store.home).images()
    assert "store repair" in (raised.value.hint or "")
    assert store.database.stat().st_size == 0


def test_a_corrupt_database_is_reported_naming_the_file(
    filled: tuple[Store, list[str]],
) -> None:
    store, _ = filled
    store.database.write_bytes(b"this is no database" * 100)
    with pytest.raises(StoreDamagedError, match=f"{store.database} is not an SQLite database"):
        Store(store.home).images()


def test_a_damaged_page_is_reported_naming_the_file(filled: tuple[Store, list[str]]) -> None:
    store, _ = filled
    data = bytearray(store.database.read_bytes())
    data[100:4096] = b"\xff" * (4096 - 100)  # the first page's schema, after the header
    store.database.write_bytes(bytes(data))
    with pytest.raises(StoreDamagedError, match=str(store.database)):
        Store(store.home).check_database()


def test_a_lost_database_is_not_recreated_empty_over_a_store_with_data(
    filled: tuple[Store, list[str]],
) -> None:
    store, _ = filled
    store.database.unlink()
    with pytest.raises(StoreDamagedError, match=f"{store.database} is missing"):
        Store(store.home).images()
    assert not store.database.exists()


def test_a_lost_snapshot_file_is_reported_not_hidden(filled: tuple[Store, list[str]]) -> None:
    store, (base, _) = filled
    path = store.snapshot_path(store.image(base).snapshot_id)
    path.unlink()
    with pytest.raises(
        StoreDamagedError, match=f"{base} \\(base\\) has lost its snapshot file {path}"
    ):
        store.images()
    [finding] = integrity.check(store, set())
    assert finding == (
        f"image {base} (base) has lost its snapshot file {path} (repair: deregister the image)"
    )
    assert integrity.repair(store, set()) == [
        f"image {base} (base) has lost its snapshot file {path}: deregister the image, done"
    ]
    assert [i.name for i in store.images()] == ["app"]
    assert integrity.check(store, set()) == []


@pytest.mark.parametrize("damage", ["lost", "empty", "corrupt"])
def test_repair_brings_back_every_image_of_a_lost_database(
    filled: tuple[Store, list[str]], damage: str
) -> None:
    store, ids = filled
    before = described(store)
    manifests = {image_id: store.manifest(image_id) for image_id in ids}
    if damage == "lost":
        store.database.unlink()
    else:
        store.database.write_bytes(b"" if damage == "empty" else b"garbage" * 512)
    for companion in ("-journal", "-wal", "-shm"):
        store.database.with_name(store.database.name + companion).unlink(missing_ok=True)

    done = integrity.repair(Store(store.home), set())
    assert len([line for line in done if "registered again" in line or "again from" in line]) == 2
    kept = sorted(store.home.glob("store.sqlite3.damaged-*"))
    assert (kept != []) == (damage != "lost")
    rebuilt = Store(store.home)
    assert sorted(described(rebuilt)) == sorted(before)
    assert {i: rebuilt.manifest(i) for i in ids} == manifests
    assert integrity.check(rebuilt, set()) == []


def test_check_lists_what_disagrees_and_repair_settles_it_keeping_unnamed_snapshots(
    filled: tuple[Store, list[str]], disk: Path
) -> None:
    store, (base, _) = filled
    volume = store.create_volume(store.image(base).snapshot_id, "gone-bake")
    stray_volume = store.volume_dir / "vol-000000000000.raw"
    stray_volume.write_bytes(b"x")
    unnamed = store.snapshot_dir / "snap-000000000000.raw"
    unnamed.write_bytes(b"x")
    partial = store.snapshot_dir / ".snap-111111111111.raw.partial"
    partial.write_bytes(b"x")
    store.record_path(base).unlink()

    problems = integrity.check(store, set())
    assert problems == [
        f"image {base} (base) has no record file (repair: write it)",
        f"snapshot file {unnamed} is named by no row or record (repair: keep it)",
        f"volume {volume.volume_id} of bake gone-bake, which left no record "
        "(repair: delete the volume)",
        f"volume file {stray_volume} is named by no row (repair: delete it)",
        f"partial file {partial} of a copy cut short (repair: delete it)",
    ]
    # A recorded bake's volume is its own (or cleanup's), not the store's to settle.
    assert len(integrity.check(store, {"gone-bake"})) == len(problems) - 1

    integrity.repair(store, set())
    assert integrity.check(store, set()) == [
        f"snapshot file {unnamed} is named by no row or record (repair: keep it)"
    ]
    assert unnamed.exists() and not stray_volume.exists() and not partial.exists()
    assert not volume.path.exists() and store.volumes() == []
    assert store.read_record(store.record_path(base)) == store.image_record(base)


def test_a_removed_image_never_comes_back_from_its_record(
    filled: tuple[Store, list[str]],
) -> None:
    store, (base, app) = filled
    store.remove_image(app)
    assert not store.record_path(app).exists()
    integrity.repair(store, set())
    assert [i.image_id for i in store.images()] == [base]


def schema_of_version(path: Path, version: int) -> None:
    """A database as a store of schema ``version`` left it."""
    with sqlite3.connect(path) as db:
        db.executescript(SCHEMA)
        for added_in, statements in MIGRATIONS:
            if added_in <= version:
                for statement in statements:
                    db.execute(statement)
        db.execute(f"PRAGMA user_version = {version}")


@pytest.mark.parametrize("version", range(SCHEMA_VERSION))
def test_a_store_of_every_earlier_schema_is_migrated(tmp_path: Path, version: int) -> None:
    home = tmp_path / "home"
    home.mkdir()
    schema_of_version(home / "store.sqlite3", version)
    with sqlite3.connect(home / "store.sqlite3") as db:
        db.execute("INSERT INTO snapshots (id, size_bytes, created) VALUES ('snap-1', 1, 'x')")
        db.execute(
            "INSERT INTO images (id, name, snapshot_id, created) VALUES ('img-1', 'old', 'snap-1',"
            " '2026-01-01T00:00:00+00:00')"
        )
    (home / "snapshots").mkdir()
    (home / "snapshots" / "snap-1.raw").write_bytes(b"x")
    store = Store(home)
    assert [i.name for i in store.images()] == ["old"]
    with sqlite3.connect(home / "store.sqlite3") as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        columns = {row[1] for row in db.execute("PRAGMA table_info(volumes)")}
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
    assert "owner" in columns and "preserved_bakes" not in tables
    # An image of an earlier version has no record yet: repair writes it.
    assert integrity.check(store, set()) == [
        "image img-1 (old) has no record file (repair: write it)"
    ]


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    schema_of_version(home / "store.sqlite3", SCHEMA_VERSION)
    with sqlite3.connect(home / "store.sqlite3") as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(StoreDamagedError, match="newer than this"):
        Store(home).images()


def test_a_bake_the_store_cannot_hold_is_refused(
    filled: tuple[Store, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    store, (base, _) = filled
    snapshot_id = store.image(base).snapshot_id
    monkeypatch.setattr(store, "_free_bytes", lambda: store.disk_usage(snapshot_id))
    with pytest.raises(HostError, match="needs about") as raised:
        store.create_volume(snapshot_id, "bake-1")
    assert "GiB free" in raised.value.message and "aminate images rm" in (raised.value.hint or "")
    assert store.volumes() == [] and list(store.volume_dir.iterdir()) == []
