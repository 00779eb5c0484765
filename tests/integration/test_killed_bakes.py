"""Recovery after a crash: a bake SIGKILLed at any point leaves what `aminate cleanup` releases,
and a bake right after succeeds."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests import reflinkfs
from tests.hoststate import held_under
from tests.integration.conftest import BASE_NAME, Workspace, store_holding, wait_for_postinst

pytestmark = pytest.mark.privileged


def wait_until(condition: Callable[[], bool], process: subprocess.Popen[str], what: str) -> None:
    deadline = time.monotonic() + 120
    while not condition():
        assert process.poll() is None, (what, process.communicate())
        assert time.monotonic() < deadline, f"never saw {what}"
        time.sleep(0.005)


def partial_file_in(directory: Path) -> Callable[[], bool]:
    return lambda: any(directory.glob(".*.partial"))


def paused_in_log(log_dir: Path) -> Callable[[], bool]:
    return lambda: any("paused on enter of step" in p.read_text() for p in log_dir.glob("*.log"))


MOMENTS = {
    # The clone and the copy are caught while cp writes the partial file.
    "volume clone": ("hello", None),
    "install": ("slow", None),
    "unmount": ("hello", "unmount:enter"),
    "snapshot copy": ("hello", None),
}


#: The moments caught while a copy runs: a clone on a reflink filesystem ends too soon.
COPYING = ("volume clone", "snapshot copy")


@pytest.fixture
def copying_workspace(base_raw: Path) -> Iterator[Workspace]:
    """A store on an ext4 filesystem of its own, where a volume or snapshot is a real copy."""
    with reflinkfs.fresh_filesystem("ext4", 8 * 2**30) as filesystem:
        # Below the mount point: the filesystem's own mount is no leftover of the bake.
        yield from store_holding(filesystem / "store", BASE_NAME, base_raw)


@pytest.mark.parametrize("moment", list(MOMENTS))
def test_a_killed_bake_is_released_by_cleanup_and_the_next_bake_succeeds(
    request: pytest.FixtureRequest, debs: dict[str, Path], moment: str
) -> None:
    workspace: Workspace = request.getfixturevalue(
        "copying_workspace" if moment in COPYING else "workspace"
    )
    package, pause = MOMENTS[moment]
    env = {"AMINATOR_TEST_PAUSE": pause} if pause else None
    process = workspace.start("-b", BASE_NAME, str(debs[package]), env=env)
    try:
        if moment == "volume clone":
            wait_until(partial_file_in(workspace.home / "volumes"), process, moment)
        elif moment == "install":
            wait_for_postinst(workspace, process)
        elif moment == "unmount":
            wait_until(paused_in_log(workspace.log_dir), process, moment)
        else:
            wait_until(partial_file_in(workspace.home / "snapshots"), process, moment)
    finally:
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=60)
    [record] = list((workspace.home / "bakes").glob("*.json"))
    bake_id = record.stem

    listed = workspace.aminate("cleanup", "--dry-run", "--output", "json")
    assert listed.returncode == 0, listed.stderr
    [found] = listed.json()["bakes"]
    assert found["bake_id"] == bake_id and not found["released"]
    kinds = [leftover["kind"] for leftover in found["leftovers"]]
    assert "volume" in kinds, found
    if moment == "snapshot copy":
        assert "snapshot" in kinds, found
    assert record.exists()  # a dry run releases nothing

    cleaned = workspace.aminate("cleanup", "--output", "json")
    assert cleaned.returncode == 0, cleaned.stderr
    [released] = cleaned.json()["bakes"]
    assert released["bake_id"] == bake_id and released["released"], released
    # No partial file, volume file or row, unreferenced snapshot, record, mount, loop device
    # or process: the workspace's own inventory.
    workspace.assert_nothing_left()
    again = workspace.aminate("cleanup")
    assert again.returncode == 0 and again.stdout.strip() == "no bake left anything behind"

    baked = workspace.aminate("-b", BASE_NAME, "--output", "json", str(debs["hello"]))
    assert baked.returncode == 0, baked.stderr
    assert "left resources behind" not in baked.stderr


def test_a_bake_after_a_killed_one_says_cleanup_reclaims_it(
    workspace: Workspace, debs: dict[str, Path]
) -> None:
    process = workspace.start("-b", BASE_NAME, str(debs["slow"]))
    try:
        wait_for_postinst(workspace, process)
    finally:
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=60)
    baked = workspace.aminate("-b", BASE_NAME, str(debs["hello"]))
    assert baked.returncode == 0, baked.stderr
    assert "1 bake(s) that died left resources behind" in baked.stderr
    assert "'aminate cleanup' releases them" in baked.stderr
    assert workspace.aminate("cleanup").returncode == 0


def test_cleanup_never_touches_a_running_bake(workspace: Workspace, debs: dict[str, Path]) -> None:
    process = workspace.start("-b", BASE_NAME, str(debs["slow"]))
    try:
        wait_for_postinst(workspace, process)
        cleaned = workspace.aminate("cleanup", "--output", "json")
        assert cleaned.returncode == 0, cleaned.stderr
        assert cleaned.json()["bakes"] == []
        assert held_under(str(workspace.home)) != []  # its mounts and processes are still there
        assert process.poll() is None
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=60)
    assert process.returncode == 143


def test_a_killed_base_create_leaves_only_what_cleanup_removes(tmp_path: Path) -> None:
    space = Workspace(tmp_path)
    process = space.start("base", "create", "killed-base", "--suite", "bookworm")
    try:
        # Killed while mmdebstrap fills the tree.
        wait_until(lambda: any((space.home / "work").glob("base-*/root/*")), process, "a bootstrap")
    finally:
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=60)
    [record] = list((space.home / "bakes").glob("base-*.json"))
    assert (space.home / "work" / record.stem / "root").is_dir()

    cleaned = space.aminate("cleanup", "--output", "json")
    assert cleaned.returncode == 0, cleaned.stderr
    [released] = cleaned.json()["bakes"]
    assert released["bake_id"] == record.stem and released["released"]
    assert [leftover["kind"] for leftover in released["leftovers"]] == ["work directory"]
    space.assert_nothing_left()
    assert space.images() == []
