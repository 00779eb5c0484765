"""Fixtures of the unit tests: no root, no loop devices, no mounts, no network.

Every unit test starts without ``AMINATOR_*`` variables, so that an operator's settings (or a
fault switch left set) never reach a test; tests that need a store or a log directory get their
own under ``tmp_path``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from aminator_ng.commands.cli import main
from tests.ec2moto import MotoEc2, moto_on_this_host
from tests.hookrecord import HOOK_RECORD_VARIABLE
from tests.unit.cli_runs import Aminate, Outcome, Workspace

#: Builds ``NAME_VERSION_all.deb`` in a directory and returns its path.
DebFactory = Callable[..., Path]


@pytest.fixture(autouse=True)
def files_keep_their_owner_without_root(monkeypatch: pytest.MonkeyPatch) -> None:
    """replaced_file gives the files it writes to root:root; only root may do that (others get
    EPERM, or EINVAL in a user namespace without uid 0). Without root, the file keeps the test's
    own ownership; everything else is as in a bake."""
    if os.geteuid() == 0:
        return
    real_fchown = os.fchown

    def fchown(fd: int, uid: int, gid: int) -> None:
        with contextlib.suppress(OSError):
            real_fchown(fd, uid, gid)

    monkeypatch.setattr(os, "fchown", fchown)


@pytest.fixture(autouse=True)
def no_aminator_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("AMINATOR_") and name != HOOK_RECORD_VARIABLE:
            monkeypatch.delenv(name)


@pytest.fixture
def restore_root_logging() -> Iterator[None]:
    """The CLI replaces the root logger's handlers; put pytest's back afterwards."""
    root = logging.getLogger()
    handlers = list(root.handlers)
    level = root.level
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    for handler in handlers:
        if handler not in root.handlers:
            root.addHandler(handler)
    root.setLevel(level)


@pytest.fixture
def make_deb(tmp_path: Path) -> DebFactory:
    """A tiny binary package built with ``dpkg-deb --build`` (unprivileged)."""
    if shutil.which("dpkg-deb") is None:
        pytest.skip("dpkg-deb is not installed")

    def build(name: str = "hello", version: str = "1.0-1", arch: str = "all") -> Path:
        tree = tmp_path / f"{name}-{version}-tree"
        (tree / "DEBIAN").mkdir(parents=True)
        (tree / "DEBIAN" / "control").write_text(
            f"Package: {name}\nVersion: {version}\nArchitecture: {arch}\n"
            "Maintainer: unit tests <tests@example.org>\n"
            f"Description: unit test package {name}\n"
        )
        (tree / "usr" / "share" / name).mkdir(parents=True)
        (tree / "usr" / "share" / name / "README").write_text(f"{name}\n")
        deb = tmp_path / f"{name}_{version}_{arch}.deb"
        subprocess.run(
            ["dpkg-deb", "--root-owner-group", "--build", str(tree), str(deb)],
            check=True,
            capture_output=True,
        )
        return deb

    return build


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Workspace:
    space = Workspace(tmp_path / "home", tmp_path / "log")
    monkeypatch.setenv("AMINATOR_HOME", str(space.home))
    monkeypatch.setenv("AMINATOR_LOG_DIR", str(space.log_dir))
    monkeypatch.chdir(tmp_path)
    return space


@pytest.fixture
def aminate(
    workspace: Workspace, capsys: pytest.CaptureFixture[str], restore_root_logging: None
) -> Aminate:
    def invoke(*argv: str) -> Outcome:
        capsys.readouterr()
        with pytest.raises(SystemExit) as exited:
            main(list(argv))
        out, err = capsys.readouterr()
        return Outcome(exited.value.code, out, err)

    return invoke


@pytest.fixture
def moto(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[MotoEc2]:
    """A moto server with this process as its bake host (tests/ec2moto.py)."""
    with moto_on_this_host(monkeypatch, tmp_path) as server:
        yield server
