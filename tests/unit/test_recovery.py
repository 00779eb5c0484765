"""Bake records and ``aminate cleanup``'s choice of what to release, without root: a bake is
live while it holds its record's lock, whatever became of its pid."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aminator_ng.contract.cloud import CloudBackend, Leftover
from aminator_ng.contract.settings import EngineSettings
from aminator_ng.errors import ConflictError
from aminator_ng.pipeline.bake_records import BakeRecord, BakeRecords
from aminator_ng.pipeline.recovery import bake_records, clean_up

HOLDER = """
import sys
from pathlib import Path
from aminator_ng.pipeline.bake_records import BakeRecord, BakeRecords
records = BakeRecords(Path(sys.argv[1]))
with records.recorded(BakeRecord.of_this_process(sys.argv[2], "fake", None)) as held:
    if sys.argv[3] == "preserve":
        held.mark_preserved([])
    print("held", flush=True)
    sys.stdin.readline()
"""


@contextlib.contextmanager
def bake_holding(
    directory: Path, bake_id: str, how: str = "run"
) -> Iterator[subprocess.Popen[str]]:
    """A process that holds a bake record until its stdin closes (or it is killed)."""
    process = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(directory), bake_id, how],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None and process.stdout.readline() == "held\n"
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate()


def killed_bake(directory: Path, bake_id: str) -> None:
    with bake_holding(directory, bake_id) as process:
        process.send_signal(signal.SIGKILL)
        process.wait()


class FakeCloud(CloudBackend):
    """Only what cleanup asks of a backend: what each bake left, and releasing it. The rest of
    a backend is never called by cleanup."""

    name = "fake"

    def __init__(self, left: dict[str, list[Leftover]]) -> None:
        self.left = left
        self.released: list[Leftover] = []

    def leftovers(self, bake_id: str) -> list[Leftover]:
        return [item for item in self.left.get(bake_id, []) if item not in self.released]

    def release_leftover(self, leftover: Leftover) -> None:
        self.released.append(leftover)

    def _not_for_cleanup(self, *args: object) -> Any:
        raise AssertionError("cleanup bakes nothing and lists no image")

    resolve_base = volume = attached = snapshot = _not_for_cleanup  # type: ignore[assignment]
    check_name_available = registered = get_image = _not_for_cleanup  # type: ignore[assignment]
    list_images = _not_for_cleanup


@pytest.fixture
def settings(tmp_path: Path) -> EngineSettings:
    return EngineSettings(home=tmp_path / "home", log_dir=tmp_path / "log", cloud="fake")


def test_a_running_bake_holds_its_record_and_removes_it_at_the_end(tmp_path: Path) -> None:
    records = BakeRecords(tmp_path)
    with bake_holding(tmp_path, "b1") as process:
        [record] = records.all()
        assert record.bake_id == "b1" and record.pid == process.pid and record.pid_start
        assert records.is_live("b1") and records.dead() == []
        with pytest.raises(ConflictError, match="running"):
            records.claimed("b1").__enter__()
        process.communicate("\n")
    assert records.all() == [] and list(tmp_path.iterdir()) == []


def test_a_killed_bake_leaves_a_dead_record_that_a_cleanup_claims_once(tmp_path: Path) -> None:
    records = BakeRecords(tmp_path)
    killed_bake(tmp_path, "b2")
    [dead] = records.dead()
    assert dead.bake_id == "b2" and not dead.preserved
    with records.claimed("b2") as claimed:
        assert claimed == dead
        with pytest.raises(ConflictError, match="another cleanup"):
            records.claimed("b2").__enter__()
    assert records.all() == []
    with pytest.raises(ConflictError, match="released by another cleanup"):
        records.claimed("b2").__enter__()


def test_a_record_whose_pid_was_reused_is_still_dead(tmp_path: Path) -> None:
    """The lock decides: a record naming a live process (this one) that does not hold it."""
    records = BakeRecords(tmp_path)
    tmp_path.mkdir(exist_ok=True)
    record = BakeRecord.of_this_process("b3", "fake", None)
    (tmp_path / "b3.json").write_text(json.dumps(record.__dict__))
    assert [r.bake_id for r in records.dead()] == ["b3"]


def test_a_preserved_bake_keeps_its_record_and_is_not_dead(tmp_path: Path) -> None:
    records = BakeRecords(tmp_path)
    with bake_holding(tmp_path, "b4", "preserve") as process:
        assert records.is_live("b4")  # the rewritten record is locked as the first was
        process.communicate("\n")
    assert records.dead() == []
    [kept] = records.preserved()
    assert kept.bake_id == "b4" and kept.preserved
    assert not list(tmp_path.glob(".*"))


def test_cleanup_releases_what_dead_bakes_left_and_never_a_running_one(
    settings: EngineSettings,
) -> None:
    directory = bake_records(settings).directory
    volume, snapshot = Leftover("volume", "vol-1"), Leftover("snapshot", "snap-1")
    running = Leftover("volume", "vol-live")
    cloud = FakeCloud({"dead": [volume, snapshot], "live": [running]})
    killed_bake(directory, "dead")
    with bake_holding(directory, "live") as process:
        listed = clean_up(cloud, settings, preserved=False, dry_run=True)
        assert [r.record.bake_id for r in listed] == ["dead"]
        assert listed[0].leftovers == [volume, snapshot] and not listed[0].released
        assert cloud.released == [] and bake_records(settings).dead()

        [result] = clean_up(cloud, settings, preserved=False, dry_run=False)
        assert result.released and cloud.released == [volume, snapshot]
        assert result.as_dict()["leftovers"] == [
            {"kind": "volume", "id": "vol-1", "detail": ""},
            {"kind": "snapshot", "id": "snap-1", "detail": ""},
        ]
        assert clean_up(cloud, settings, preserved=False, dry_run=False) == []
        assert bake_records(settings).is_live("live")
        process.communicate("\n")
    assert running not in cloud.released


def test_cleanup_of_preserved_bakes_only_with_preserved(settings: EngineSettings) -> None:
    directory = bake_records(settings).directory
    kept = Leftover("volume", "vol-kept")
    cloud = FakeCloud({"kept": [kept]})
    with bake_holding(directory, "kept", "preserve") as process:
        process.communicate("\n")
    assert clean_up(cloud, settings, preserved=False, dry_run=False) == []
    [result] = clean_up(cloud, settings, preserved=True, dry_run=False)
    assert result.released and cloud.released == [kept]
    assert bake_records(settings).all() == []


def test_cleanup_skips_a_bake_of_another_cloud_saying_how(settings: EngineSettings) -> None:
    directory = bake_records(settings).directory
    directory.mkdir(parents=True)
    record = BakeRecord("other", "ec2", 1, "0", "2026-12-01T00:00:00+00:00")
    (directory / "other.json").write_text(json.dumps(record.__dict__))
    [result] = clean_up(FakeCloud({}), settings, preserved=False, dry_run=False)
    assert result.skipped == "it baked on ec2: run aminate --cloud ec2 cleanup"
    assert result.describe(False) == [
        "bake other (started 2026-12-01T00:00:00+00:00): skipped, " + result.skipped
    ]
    assert (directory / "other.json").exists()


def test_cleanup_removes_the_package_lists_a_killed_bake_was_fetching(
    settings: EngineSettings,
) -> None:
    index = settings.cache_dir / "apt-0123" / "index"
    fetching, published = index / ".new-dead", index / "1796-other"
    for lists in (fetching, published):
        lists.mkdir(parents=True)
        (lists / "deb.example.org_dists_bookworm_InRelease").write_text("lists\n")
    killed_bake(bake_records(settings).directory, "dead")
    [listed] = clean_up(FakeCloud({}), settings, preserved=False, dry_run=True)
    assert [(x.kind, x.resource_id) for x in listed.leftovers] == [("package lists", str(fetching))]
    [result] = clean_up(FakeCloud({}), settings, preserved=False, dry_run=False)
    assert result.released and not fetching.exists() and published.is_dir()
