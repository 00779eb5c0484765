"""Files inside an image are reached through its root at every use: a directory swapped for a
symlink to a host directory, between setup and teardown, never leads the engine out of it.

The image is a plain directory under ``tmp_path``, and the "host" directory the symlinks aim at
is a sibling of the test's own, compared byte for byte before and after.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from aminator_debian.apt import lists_cleaned
from aminator_ng.contract.model import PackageInfo, PackageRequest
from aminator_ng.contract.provisioner import STAGING_DIR, staged_package_files
from aminator_ng.host import imagefs
from aminator_ng.host.chroot import Chroot, created_directories, replaced_file
from aminator_ng.host.imagefs import ImagePathError


@pytest.fixture
def root(tmp_path: Path) -> Path:
    image = tmp_path / "image"
    for directory in ("etc", "usr/sbin", "var/lib/apt/lists/partial", "run", "tmp"):
        (image / directory).mkdir(parents=True)
    return image


@pytest.fixture
def host(tmp_path: Path) -> Path:
    victim = tmp_path / "host"
    victim.mkdir()
    (victim / "file").write_text("host data\n")
    (victim / "policy-rc.d").write_text("the host's own\n")
    victim.chmod(0o751)
    return victim


def state(directory: Path) -> dict[str, tuple[int, bytes]]:
    entries = {".": (directory.lstat().st_mode, b"")}
    for path in sorted(directory.rglob("*")):
        info = path.lstat()
        entries[str(path.relative_to(directory))] = (
            info.st_mode,
            path.read_bytes() if stat.S_ISREG(info.st_mode) else b"",
        )
    return entries


def swap(root: Path, inside: str, target: str) -> None:
    """What a package script does: move a directory away and put a symlink in its place."""
    directory = root / inside.lstrip("/")
    directory.rename(directory.with_name(directory.name + ".moved"))
    directory.symlink_to(target)


@pytest.mark.parametrize("relative", [False, True])
def test_writes_through_a_symlink_out_stay_inside(root: Path, host: Path, relative: bool) -> None:
    before = state(host)
    target = "../" * 10 + str(host).lstrip("/") if relative else str(host)
    (root / "etc" / "out").symlink_to(target)
    with pytest.raises(FileNotFoundError):
        imagefs.write_file(root, "/etc/out/file", b"overwritten\n")
    imagefs.remove(root, "/etc/out/file")
    with pytest.raises(FileNotFoundError):
        imagefs.read_bytes(root, "/etc/out/file")
    assert imagefs.listdir(root, "/etc/out") == []
    assert state(host) == before


def test_a_symlink_in_the_last_component_is_replaced_not_followed(root: Path, host: Path) -> None:
    before = state(host)
    (root / "etc" / "resolv.conf").symlink_to(host / "file")
    imagefs.write_file(root, "/etc/resolv.conf", b"nameserver 192.0.2.1\n")
    assert not (root / "etc" / "resolv.conf").is_symlink()
    imagefs.remove(root, "/etc/resolv.conf")
    assert state(host) == before


def test_remove_never_follows_a_symlinked_directory(root: Path, host: Path) -> None:
    before = state(host)
    (root / "var" / "cache").mkdir()
    (root / "var" / "cache" / "apt").symlink_to(host)
    imagefs.remove(root, "/var/cache/apt")
    assert not (root / "var" / "cache" / "apt").exists()
    assert state(host) == before


def test_owner_and_mode_are_never_set_through_a_symlink(root: Path, host: Path) -> None:
    before = state(host)
    (root / "var" / "lib" / "apt" / "lists" / "partial").rmdir()
    (root / "var" / "lib" / "apt" / "lists" / "partial").symlink_to(host)
    with pytest.raises(ImagePathError, match="symlink"):
        imagefs.set_owner_and_mode(
            root, "/var/lib/apt/lists/partial", uid=os.getuid(), gid=os.getgid(), mode=0o700
        )
    assert state(host) == before


def test_a_fifo_is_refused_not_read(root: Path) -> None:
    os.mkfifo(root / "etc" / "os-release")
    with pytest.raises(ImagePathError, match="not a regular file"):
        imagefs.read_bytes(root, "/etc/os-release")


def test_magic_links_are_not_followed(root: Path) -> None:
    (root / "etc" / "escape").symlink_to(f"/proc/{os.getpid()}/root/etc")
    assert imagefs.stat_of(root, "/etc/escape/passwd") is None


def test_a_replaced_file_is_not_restored_through_a_swapped_directory(
    root: Path, host: Path
) -> None:
    before = state(host)
    chroot = Chroot(root)
    with (
        pytest.raises(ImagePathError, match="/usr/sbin in the image was replaced during the bake"),
        replaced_file(chroot, "/usr/sbin/policy-rc.d", b"exit 101\n", mode=0o755),
    ):
        swap(root, "/usr/sbin", str(host))
    assert state(host) == before
    # The file the bake placed stays where it was put, in the directory moved away.
    assert (root / "usr" / "sbin.moved" / "policy-rc.d").read_bytes() == b"exit 101\n"


def test_made_directories_are_not_removed_through_a_swapped_parent(root: Path, host: Path) -> None:
    before = state(host)
    chroot = Chroot(root)
    with (
        pytest.raises(ImagePathError, match="replaced during the bake"),
        created_directories(chroot, "/run/aminator-ng/repos"),
    ):
        swap(root, "/run/aminator-ng", str(host))
    assert state(host) == before


@pytest.mark.parametrize("swapped", [STAGING_DIR, str(Path(STAGING_DIR).parent), "/run"])
def test_staged_packages_are_not_removed_through_a_swapped_directory(
    root: Path, host: Path, tmp_path: Path, swapped: str
) -> None:
    package = tmp_path / "file"  # the name the host directory holds too
    package.write_bytes(b"!<arch>\n")
    before = state(host)
    request = PackageRequest(str(package), package, PackageInfo("x", "1", "1", "all"))
    with (
        pytest.raises(ImagePathError, match="replaced during the bake"),
        staged_package_files(Chroot(root), [request]) as staged,
    ):
        assert (root / staged[0].lstrip("/")).read_bytes() == b"!<arch>\n"
        (host / "00-file").write_text("the host's, same name as the staged file\n")
        before = state(host)
        swap(root, swapped, str(host))
    assert state(host) == before


def test_package_lists_are_not_cleaned_through_a_swapped_directory(
    root: Path, host: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    chroot = Chroot(root)
    monkeypatch.setattr(Chroot, "run", lambda self, argv, **kwargs: None)
    (host / "partial").mkdir()
    before = state(host)
    with (
        pytest.raises(ImagePathError, match="/var/lib/apt in the image was replaced"),
        lists_cleaned(chroot),
    ):
        swap(root, "/var/lib/apt", str(host))
    assert state(host) == before
