"""``aminate images show`` says where an image's SBOM is and what it holds; ``aminate images sbom``
prints it exactly as stored. ``main`` runs in-process against a local store of the test's own."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from aminator_local.store import Store
from aminator_ng.commands.cli import main
from aminator_ng.contract.model import Image, ManifestEntry, SbomPackage
from aminator_ng.pipeline.sbom_document import build_sbom

PACKAGES = (
    SbomPackage("hello", "1.0-1", "all", "pkg:deb/debian/hello@1.0-1?arch=all", ("GPL-2+",)),
    SbomPackage("zlib1g", "1:1.3", "amd64", "pkg:deb/debian/zlib1g@1:1.3?arch=amd64", ("Zlib",)),
)


@dataclass
class Outcome:
    code: object
    stdout: str
    stderr: str
    stdout_bytes: bytes

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.startswith("aminate: error:")]


Aminate = Callable[..., Outcome]


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("AMINATOR_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("AMINATOR_LOG_DIR", str(tmp_path / "log"))
    return tmp_path / "home"


@pytest.fixture
def aminate(
    home: Path, capfdbinary: pytest.CaptureFixture[bytes], restore_root_logging: None
) -> Aminate:
    def invoke(*argv: str) -> Outcome:
        capfdbinary.readouterr()
        with pytest.raises(SystemExit) as exited:
            main(list(argv))
        out, err = capfdbinary.readouterr()
        return Outcome(exited.value.code, out.decode(), err.decode(), out)

    return invoke


def register(home: Path, tmp_path: Path, name: str, sbom: bytes | None) -> str:
    store = Store(home)
    disk = tmp_path / f"{name}.raw"
    disk.write_bytes(b"\0" * 4096)
    return store.register_image(
        name=name,
        snapshot_id=store.add_snapshot_from(disk, None),
        description=f"{name} for tests",
        tags={},
        manifest=[ManifestEntry("hello", "1.0-1", "all", "hello", "1.0-1")],
        base_image_id=None,
        sbom=sbom,
    )


@pytest.fixture
def sbom() -> bytes:
    base = Image("img-0123456789ab", "debian-12-base", datetime(2026, 1, 1, tzinfo=UTC), "snap-0")
    return build_sbom(
        image_name="hello-1.0",
        image_description="hello",
        base=base,
        packages=PACKAGES,
        bake_id="bake-0123",
        engine_version="0.1.0",
        created=datetime(2026, 3, 1, tzinfo=UTC),
    ).data


def test_images_sbom_prints_the_sbom_exactly_as_stored(
    aminate: Aminate, home: Path, tmp_path: Path, sbom: bytes
) -> None:
    image_id = register(home, tmp_path, "hello-1.0", sbom)
    for argv in (("images", "sbom", image_id), ("--output", "json", "images", "sbom", image_id)):
        outcome = aminate(*argv)
        assert outcome.code == 0, outcome.stderr
        assert outcome.stdout_bytes == sbom


def test_images_show_gives_the_sboms_place_and_summary(
    aminate: Aminate, home: Path, tmp_path: Path, sbom: bytes
) -> None:
    image_id = register(home, tmp_path, "hello-1.0", sbom)
    path = str(Store(home).sbom_path(image_id))
    digest = hashlib.sha256(sbom).hexdigest()

    shown = aminate("images", "show", image_id, "--output", "json")
    assert shown.code == 0, shown.stderr
    data = json.loads(shown.stdout)
    assert data["sbom_path"] == path
    assert data["sbom_components"] == len(PACKAGES)
    assert data["sbom_sha256"] == digest

    text = aminate("images", "show", image_id)
    assert text.code == 0, text.stderr
    assert f"sbom: {path} (2 components, sha256 {digest})" in text.stdout.splitlines()


def test_an_image_without_an_sbom_says_so(aminate: Aminate, home: Path, tmp_path: Path) -> None:
    image_id = register(home, tmp_path, "debian-12-base", None)
    data = json.loads(aminate("--output", "json", "images", "show", image_id).stdout)
    assert (data["sbom_path"], data["sbom_components"], data["sbom_sha256"]) == (None, None, None)
    assert "sbom: none" in aminate("images", "show", image_id).stdout.splitlines()

    outcome = aminate("images", "sbom", image_id)
    assert outcome.code == 2
    assert outcome.error_lines == [f"aminate: error: image {image_id} (debian-12-base) has no SBOM"]
    assert outcome.stdout == "" and "Traceback" not in outcome.stderr


def test_images_sbom_of_an_unknown_image_is_a_request_error(aminate: Aminate) -> None:
    outcome = aminate("--output", "json", "images", "sbom", "img-000000000000")
    assert outcome.code == 2
    assert json.loads(outcome.stdout)["error"]["message"] == "image not found: img-000000000000"
