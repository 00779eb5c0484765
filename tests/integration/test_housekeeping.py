"""Image housekeeping on the local store: show, rm, cleanup of preserved bakes, and a store that
never points at missing data, however a bake ends."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import time
from pathlib import Path

import pytest

from tests.integration.conftest import (
    BASE_NAME,
    Workspace,
    dpkg_status,
    mounted_image,
    wait_for_postinst,
)

pytestmark = pytest.mark.privileged


def base_id(workspace: Workspace) -> str:
    return next(i["image_id"] for i in workspace.images() if i["name"] == BASE_NAME)


def test_images_show_and_rm(workspace: Workspace, debs: dict[str, Path]) -> None:
    baked = workspace.aminate("-b", BASE_NAME, "--output", "json", str(debs["hello"]))
    assert baked.returncode == 0, baked.stderr
    image_id = baked.json()["image_id"]

    shown = workspace.aminate("images", "show", image_id, "--output", "json")
    assert shown.returncode == 0, shown.stderr
    data = shown.json()
    assert data["lineage"] == [{"image_id": base_id(workspace), "name": BASE_NAME}]
    assert data["package_count"] == len(data["manifest"]) > 100
    snapshot_file = workspace.home / "snapshots" / f"{data['snapshot_id']}.raw"
    assert data["disk_usage_bytes"] == snapshot_file.stat().st_blocks * 512 > 0
    text = workspace.aminate("images", "show", image_id).stdout
    assert f"lineage: {data['name']} <- {BASE_NAME} ({base_id(workspace)})" in text

    removed = workspace.aminate("images", "rm", image_id, "--output", "json")
    assert removed.returncode == 0, removed.stderr
    assert removed.json() == {"image_id": image_id, "freed_bytes": data["disk_usage_bytes"]}
    assert not snapshot_file.exists()
    assert workspace.baked_images() == []
    again = workspace.aminate("images", "rm", image_id)
    assert again.returncode == 2 and image_id in again.stderr

    # The base is untouched and still bakes.
    assert workspace.aminate("-b", BASE_NAME, str(debs["hello"])).returncode == 0


def test_removing_the_base_of_a_running_bake_is_refused(
    workspace: Workspace, debs: dict[str, Path]
) -> None:
    base = base_id(workspace)
    process = workspace.start("-b", BASE_NAME, str(debs["slow"]))
    try:
        wait_for_postinst(workspace, process)
        refused = workspace.aminate("images", "rm", base)
        assert refused.returncode == 2, refused.stderr
        assert "running bake" in refused.stderr
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=60)
    assert process.returncode == 143
    removed = workspace.aminate("images", "rm", base)
    assert removed.returncode == 0, removed.stderr
    assert workspace.images() == []


def test_a_preserved_bake_is_inspected_then_released_by_cleanup(
    workspace: Workspace, debs: dict[str, Path], tmp_path: Path
) -> None:
    failed = workspace.aminate(
        "-b", BASE_NAME, "--preserve-on-error", "--output", "json", str(debs["failing"])
    )
    assert failed.returncode == 1
    kept = {entry["kind"]: entry["id"] for entry in failed.json()["preserved"]}
    assert set(kept) == {"volume"}
    # Inspectable as it failed: the package is there, half-configured.
    volume = workspace.home / "volumes" / f"{kept['volume']}.raw"
    with mounted_image(volume, tmp_path / "inspect") as root:
        assert dpkg_status(root, "broken") == "iF"
    assert "aminate cleanup --preserved" in failed.stderr

    # A shell in the chroot of the kept volume, as the package's script saw it.
    bake_id = failed.json()["bake_id"]
    status = workspace.aminate(
        "shell", bake_id, "--", "dpkg-query", "-W", "-f", "${db:Status-Abbrev}", "broken"
    )
    assert status.returncode == 0, status.stderr
    assert status.stdout.strip() == "iF"
    assert workspace.aminate("shell", bake_id, "--", "sh", "-c", "exit 7").returncode == 7
    hostname = workspace.aminate("shell", bake_id, "--", "cat", "/proc/sys/kernel/hostname")
    assert hostname.stdout.strip() != os.uname().nodename
    unknown = workspace.aminate("shell", "0000000000000000")
    assert unknown.returncode == 2 and "no preserved bake 0000000000000000" in unknown.stderr
    assert workspace.leftovers()["held on the host"] == []  # the shell let go of everything

    cleaned = workspace.aminate("cleanup", "--preserved", "--output", "json")
    assert cleaned.returncode == 0, cleaned.stderr
    [bake] = cleaned.json()["bakes"]
    assert bake["bake_id"] == failed.json()["bake_id"]
    # Its mounts and devices went as it failed: only the volume was left to release.
    assert bake["released"] and [(e["kind"], e["id"]) for e in bake["leftovers"]] == [
        ("volume", kept["volume"])
    ]
    # Everything is gone: the workspace's own check, on teardown, covers mounts, loop
    # devices, volume files and rows, work dirs and the record of the preserved bake.
    assert workspace.aminate("cleanup", "--preserved").stdout.strip() == "no preserved bakes"


def store_points_only_at_data(home: Path) -> None:
    """Every registry row that names data names data that is there, complete."""
    with contextlib.closing(sqlite3.connect(home / "store.sqlite3")) as db:
        for snapshot_id, size in db.execute("SELECT id, size_bytes FROM snapshots"):
            path = home / "snapshots" / f"{snapshot_id}.raw"
            assert path.is_file() and path.stat().st_size == size, snapshot_id
        for (volume_id,) in db.execute("SELECT id FROM volumes"):
            assert (home / "volumes" / f"{volume_id}.raw").is_file(), volume_id
        for image_id, snapshot_id in db.execute("SELECT id, snapshot_id FROM images"):
            row = db.execute("SELECT 1 FROM snapshots WHERE id = ?", (snapshot_id,)).fetchone()
            assert row is not None, image_id


@pytest.mark.parametrize("delay_s", [0.4, 0.8, 1.5, 2.5, 3.5, 4.5])
def test_a_bake_killed_at_any_point_then_cleanup_leaves_no_row_without_data(
    workspace: Workspace, debs: dict[str, Path], delay_s: float
) -> None:
    process = workspace.start("-b", BASE_NAME, "--output", "json", str(debs["hello"]))
    time.sleep(delay_s)
    process.send_signal(signal.SIGKILL)
    stdout, _ = process.communicate(timeout=60)
    cleaned = workspace.aminate("cleanup")
    assert cleaned.returncode == 0, cleaned.stderr
    store_points_only_at_data(workspace.home)
    listed = workspace.images()
    for image in listed:
        assert (workspace.home / "snapshots" / f"{image['snapshot_id']}.raw").is_file()
    if process.returncode == 0:  # finished before the kill
        assert json.loads(stdout)["image_id"] in {i["image_id"] for i in listed}
    # The workspace's teardown finds nothing else left.
