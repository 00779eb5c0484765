"""file_lock: exclusive between processes, no file left once released."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from aminator_ng.api import LockHeldError, file_lock


def test_a_held_lock_is_refused_without_waiting_and_names_its_holder(tmp_path: Path) -> None:
    lock = tmp_path / "locks" / "point.lock"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from aminator_ng.api import file_lock\n"
            f"with file_lock(Path({str(lock)!r})):\n"
            "    print('held', flush=True); time.sleep(30)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        with (
            pytest.raises(LockHeldError, match=f"held by pid {holder.pid}"),
            file_lock(lock, wait=False),
        ):
            pass
    finally:
        holder.kill()
        holder.wait()
    with file_lock(lock, wait=False):  # the holder's death released it
        assert lock.read_text() == f"{os.getpid()}\n"
    assert not lock.exists()


def test_a_waiting_locker_gets_the_lock_once_it_is_released(tmp_path: Path) -> None:
    lock = tmp_path / "point.lock"
    order: list[str] = []

    def second() -> None:
        with file_lock(lock):
            order.append("second")

    with file_lock(lock):
        waiter = threading.Thread(target=second)
        waiter.start()
        time.sleep(0.3)
        order.append("first")
    waiter.join(timeout=10)
    assert order == ["first", "second"]
    assert not lock.exists()


def test_the_lock_file_is_removed_when_the_body_fails(tmp_path: Path) -> None:
    lock = tmp_path / "point.lock"
    with pytest.raises(RuntimeError), file_lock(lock):
        raise RuntimeError("bake failed")
    assert not lock.exists()
