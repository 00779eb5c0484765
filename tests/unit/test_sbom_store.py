"""The local backend keeps a baked image's SBOM beside its record (``images/<id>.sbom.json``):
written whole with the registration, gone with the image or with a registration that fails, and
part of what ``store check`` and ``store repair`` look at."""

from __future__ import annotations

import hashlib
import stat
from pathlib import Path

import pytest

from aminator_local import integrity
from aminator_local.backend import LocalCloud
from aminator_local.store import Store
from aminator_ng.api import CloudError, EngineSettings, Image, ImageSpec, NotFoundError, Snapshot
from aminator_ng.contract.model import ManifestEntry

SBOM = b'{\n  "bomFormat": "CycloneDX",\n  "specVersion": "1.6",\n  "components": []\n}\n'
DIGEST_TAGS = {"sbom_components": "0", "sbom_sha256": hashlib.sha256(SBOM).hexdigest()}
MANIFEST = (ManifestEntry("hello", "1.0-1", "all", "hello", "1.0-1"),)


@pytest.fixture
def cloud(tmp_path: Path) -> LocalCloud:
    return LocalCloud(EngineSettings(home=tmp_path / "home"))


@pytest.fixture
def base(cloud: LocalCloud, tmp_path: Path) -> Image:
    disk = tmp_path / "disk.raw"
    disk.write_bytes(b"\xeb\x3c\x90" + b"\1" * 8189)
    snapshot_id = cloud.store.add_snapshot_from(disk, None)
    image_id = cloud.store.register_image(
        name="debian-12-base",
        snapshot_id=snapshot_id,
        description="imported",
        tags={},
        manifest=[],
        base_image_id=None,
    )
    return cloud.store.image(image_id)


def snapshot_of(cloud: LocalCloud, base: Image, bake_id: str) -> Snapshot:
    path = cloud.store.snapshot_path(base.snapshot_id)
    snapshot_id = cloud.store.add_snapshot_from(path, None, bake_id)
    return Snapshot(snapshot_id, "vol-0", path.stat().st_size)


def spec(base: Image, name: str = "hello-1.0", sbom: bytes | None = SBOM) -> ImageSpec:
    tags = DIGEST_TAGS if sbom is not None else {}
    return ImageSpec(name, "hello", {"appversion": name, **tags}, MANIFEST, base, sbom=sbom)


def bake(cloud: LocalCloud, base: Image, name: str = "hello-1.0") -> Image:
    with cloud.registered(snapshot_of(cloud, base, name), spec(base, name), name) as image:
        return image


def test_the_sbom_is_stored_beside_the_record_as_given(cloud: LocalCloud, base: Image) -> None:
    image = bake(cloud, base)
    path = cloud.store.record_dir / f"{image.image_id}.sbom.json"
    assert path.read_bytes() == SBOM
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert cloud.image_sbom(image.image_id) == SBOM
    assert cloud.sbom_location(image.image_id) == str(path)
    assert not list(cloud.store.record_dir.glob(".*.partial"))


def test_an_imported_base_has_no_sbom(cloud: LocalCloud, base: Image) -> None:
    assert cloud.image_sbom(base.image_id) is None
    assert cloud.sbom_location(base.image_id) is None
    with pytest.raises(NotFoundError, match="img-000000000000"):
        cloud.image_sbom("img-000000000000")


def test_a_failed_registration_leaves_no_sbom(cloud: LocalCloud, base: Image) -> None:
    snapshot = snapshot_of(cloud, base, "bake1")
    with pytest.raises(RuntimeError), cloud.registered(snapshot, spec(base), "bake1") as image:
        assert cloud.store.sbom_path(image.image_id).is_file()
        raise RuntimeError("publish failed")
    assert not cloud.store.sbom_path(image.image_id).exists()
    assert [i.image_id for i in cloud.list_images()] == [base.image_id]


def test_an_sbom_that_cannot_be_written_fails_the_registration(
    cloud: LocalCloud, base: Image, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(self: Store, image_id: str, data: bytes) -> None:
        raise CloudError(f"cannot write the SBOM of image {image_id}: No space left on device")

    monkeypatch.setattr(Store, "write_sbom", full)
    snapshot = snapshot_of(cloud, base, "bake1")
    with (
        pytest.raises(CloudError, match="No space left"),
        cloud.registered(snapshot, spec(base), "bake1"),
    ):
        pass
    assert [i.image_id for i in cloud.list_images()] == [base.image_id]
    assert cloud.store.record_files() == [cloud.store.record_path(base.image_id)]


def test_removing_the_image_removes_its_sbom(cloud: LocalCloud, base: Image) -> None:
    image = bake(cloud, base)
    cloud.remove_image(image.image_id)
    assert not cloud.store.sbom_path(image.image_id).exists()
    assert cloud.store.sbom_files() == []


def test_a_consistent_store_with_sboms_has_nothing_to_report(
    cloud: LocalCloud, base: Image
) -> None:
    bake(cloud, base)
    # The SBOM files are no image records (which they share a directory with).
    assert integrity.check(cloud.store, ()) == []


def test_an_orphan_sbom_is_reported_and_repair_removes_it(cloud: LocalCloud, base: Image) -> None:
    orphan = cloud.store.sbom_path("img-0123456789ab")
    orphan.write_bytes(SBOM)
    [line] = integrity.check(cloud.store, ())
    assert line == f"SBOM file {orphan} belongs to no image (repair: delete it)"
    [done] = integrity.repair(cloud.store, ())
    assert done.endswith("delete it, done")
    assert not orphan.exists() and integrity.check(cloud.store, ()) == []


def test_a_lost_or_changed_sbom_is_reported_and_kept(cloud: LocalCloud, base: Image) -> None:
    lost = bake(cloud, base, "hello-1.0")
    changed = bake(cloud, base, "hello-1.1")
    cloud.store.sbom_path(lost.image_id).unlink()
    cloud.store.sbom_path(changed.image_id).write_bytes(SBOM.replace(b"1.6", b"1.5"))
    assert sorted(integrity.check(cloud.store, ())) == sorted(
        [
            f"image {lost.image_id} (hello-1.0) has lost its SBOM file "
            f"{cloud.store.sbom_path(lost.image_id)} (repair: keep the image)",
            f"the SBOM file {cloud.store.sbom_path(changed.image_id)} of image "
            f"{changed.image_id} (hello-1.1) does not match its sbom_sha256 tag (repair: keep it)",
        ]
    )
    integrity.repair(cloud.store, ())
    assert {i.image_id for i in cloud.list_images()} >= {lost.image_id, changed.image_id}


def test_a_store_rebuilt_from_its_records_keeps_the_sboms(cloud: LocalCloud, base: Image) -> None:
    image = bake(cloud, base)
    cloud.store.database.unlink()
    done = integrity.repair(Store(cloud.store.home), ())
    assert any(image.image_id in line and "register it again" in line for line in done)
    rebuilt = LocalCloud(EngineSettings(home=cloud.store.home))
    assert rebuilt.image_sbom(image.image_id) == SBOM
    assert integrity.check(rebuilt.store, ()) == []


def test_the_sbom_of_a_record_whose_snapshot_is_gone_goes_with_the_record(
    cloud: LocalCloud, base: Image
) -> None:
    image = bake(cloud, base)
    cloud.store.database.unlink()
    cloud.store.snapshot_path(image.snapshot_id).unlink()
    integrity.repair(Store(cloud.store.home), ())
    assert not cloud.store.record_path(image.image_id).exists()
    assert not cloud.store.sbom_path(image.image_id).exists()
