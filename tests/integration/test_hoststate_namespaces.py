"""The leak check sees and releases what lives in another mount namespace: a mount made in a
private namespace that a child process holds, which the test's own mount table never shows."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.hoststate import held_under, mount_point, release_everything_under

pytestmark = pytest.mark.privileged


def own_mount_points() -> list[str]:
    return [mount_point(line) for line in Path("/proc/self/mountinfo").read_text().splitlines()]


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.05)


def namespace_of(pid: int) -> str:
    return os.readlink(f"/proc/{pid}/ns/mnt")


def holding_a_namespace(argv: list[str], cwd: str) -> subprocess.Popen[bytes]:
    """A child in a private mount namespace of its own, once it runs there."""
    holder = subprocess.Popen(argv, cwd=cwd, stdin=subprocess.DEVNULL)
    wait_until(
        lambda: holder.poll() is not None or namespace_of(holder.pid) != namespace_of(os.getpid()),
        "the child's own mount namespace",
    )
    assert holder.poll() is None, "the namespace's holder ended early"
    return holder


@pytest.fixture
def released(tmp_path: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Holders a test starts; ended, with what they hold, however the test ends."""
    holders: list[subprocess.Popen[bytes]] = []
    try:
        yield holders
    finally:
        for holder in holders:
            holder.kill()
            holder.wait()
        release_everything_under(str(tmp_path))


def test_a_mount_in_another_namespace_is_seen_and_unmounted_there(
    tmp_path: Path, released: list[subprocess.Popen[bytes]]
) -> None:
    target = tmp_path / "mnt"
    target.mkdir()
    # Tied to tmp_path by nothing but the mount: it is unmounted inside, the holder spared.
    holder = holding_a_namespace(
        ["unshare", "--mount", "--propagation", "private", "sleep", "60"], "/"
    )
    released.append(holder)
    enter = ["nsenter", "--target", str(holder.pid), "--mount"]
    subprocess.run([*enter, "mount", "-t", "tmpfs", "x", str(target)], check=True)
    namespace = namespace_of(holder.pid)
    assert str(target) not in own_mount_points()
    assert held_under(str(tmp_path)) == [
        f"mount {target} in mount namespace {namespace} of process {holder.pid}: sleep 60"
    ]
    release_everything_under(str(tmp_path))
    assert held_under(str(tmp_path)) == []
    assert holder.poll() is None
    assert str(target) not in Path(f"/proc/{holder.pid}/mountinfo").read_text()


def test_a_chrooted_process_in_its_own_namespace_is_ended_with_its_mounts(
    tmp_path: Path, released: list[subprocess.Popen[bytes]]
) -> None:
    # As a package script runs in a bake: chrooted into an image mounted in its own namespace.
    image = tmp_path / "image"
    image.mkdir()
    make_image = (
        f"mount -t tmpfs image {image} && mkdir {image}/usr && mount --bind /usr {image}/usr"
        f" && ln -s usr/bin {image}/bin && ln -s usr/lib {image}/lib"
        f" && ln -s usr/lib64 {image}/lib64 && exec chroot {image} sleep 60"
    )
    holder = holding_a_namespace(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", make_image], "/"
    )
    released.append(holder)
    wait_until(lambda: os.readlink(f"/proc/{holder.pid}/root") == str(image), "the chroot")
    wait_until(
        lambda: Path(f"/proc/{holder.pid}/cmdline").read_bytes() == b"sleep\x0060\x00", "exec"
    )
    namespace = namespace_of(holder.pid)
    assert not [t for t in own_mount_points() if t.startswith(str(image))]
    in_namespace = f"in mount namespace {namespace} of process {holder.pid}: sleep 60"
    assert held_under(str(tmp_path)) == [
        f"process {holder.pid} (root, cwd): sleep 60",
        f"mount {image} {in_namespace}",
        f"mount {image}/usr {in_namespace}",
    ]
    release_everything_under(str(tmp_path))
    assert holder.wait(timeout=10) == -signal.SIGKILL
    assert held_under(str(tmp_path)) == []
