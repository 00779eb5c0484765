"""The leak check sees and releases what lives in another mount namespace: a mount made in a
private namespace that a child process holds, which the test's own mount table never shows.

The namespaces are held the way a bake holds its own (``bake_namespace``), which works on a
host and in a chroot alike."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from aminator_ng.host.namespace import bake_namespace
from tests.hoststate import (
    held_under,
    mount_point,
    processes_rooted_under,
    release_everything_under,
)

pytestmark = pytest.mark.privileged

#: What names the holder in process listings: not the test's directory, so that only the mounts
#: tie the namespace to it.
LABEL = Path("/")


def own_mount_points() -> list[str]:
    return [mount_point(line) for line in Path("/proc/self/mountinfo").read_text().splitlines()]


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.05)


def namespace_of(pid: int) -> str:
    return os.readlink(f"/proc/{pid}/ns/mnt")


def test_a_mount_in_another_namespace_is_seen_and_unmounted_there(tmp_path: Path) -> None:
    target = tmp_path / "mnt"
    target.mkdir()
    try:
        with bake_namespace(LABEL) as namespace:
            enter = [*namespace.entry(), "--"]
            subprocess.run([*enter, "mount", "-t", "tmpfs", "x", str(target)], check=True)
            assert str(target) not in own_mount_points()
            [held] = held_under(str(tmp_path))
            assert held.startswith("mount ") and held.split()[1].endswith(str(target)), held
            assert f"in mount namespace {namespace_of(namespace.init_pid)} " in held
            # Unmounted inside its namespace; the namespace's holder is spared.
            release_everything_under(str(tmp_path))
            assert held_under(str(tmp_path)) == []
            assert Path(f"/proc/{namespace.init_pid}").exists()
    finally:
        release_everything_under(str(tmp_path))


def test_a_chrooted_process_in_its_own_namespace_is_ended_with_its_mounts(tmp_path: Path) -> None:
    # As a package script runs in a bake: chrooted into an image mounted in its own namespace.
    image = tmp_path / "image"
    image.mkdir()
    make_image = (
        f"mount -t tmpfs image {image} && mkdir {image}/usr && mount --bind /usr {image}/usr"
        f" && ln -s usr/bin {image}/bin && ln -s usr/lib {image}/lib"
        f" && ln -s usr/lib64 {image}/lib64"
    )
    try:
        with bake_namespace(LABEL) as namespace:
            enter = [*namespace.entry(), "--"]
            subprocess.run([*enter, "sh", "-c", make_image], check=True)
            sleeper = subprocess.Popen([*enter, "chroot", str(image), "sleep", "60"])
            wait_until(lambda: bool(processes_rooted_under(str(image))), "the chroot")
            [pid] = processes_rooted_under(str(image))
            assert not [t for t in own_mount_points() if t.startswith(str(image))]
            held = held_under(str(tmp_path))
            assert f"process {pid} (root, cwd): sleep 60" in held, held
            in_namespace = f" in mount namespace {namespace_of(pid)} of process "
            mounts = [line.split()[1] for line in held if in_namespace in line]
            assert len(mounts) == 2, held
            assert mounts[0].endswith(str(image)) and mounts[1].endswith(f"{image}/usr"), held
            release_everything_under(str(tmp_path))
            assert sleeper.wait(timeout=10) != 0
            assert held_under(str(tmp_path)) == []
    finally:
        release_everything_under(str(tmp_path))
