"""Paths inside an image resolve inside it, and files replaced for a bake come back as they were.

The image root is a plain directory under ``tmp_path``: no mount, no chroot. Absolute symlinks
whose target must stay untouched point at a file of the test's own (not at the host's /etc), so
that a regression cannot damage the machine running the tests.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from aminator_ng.errors import BakeError
from aminator_ng.host.chroot import Chroot, UnsafePathError, replaced_file, resolve_in_root


@pytest.fixture
def root(tmp_path: Path) -> Path:
    image = tmp_path / "image"
    for directory in ("etc", "run/systemd/resolve", "usr/lib", "usr/bin", "usr/sbin"):
        (image / directory).mkdir(parents=True)
    return image


def inside(root: Path, path: Path) -> bool:
    return path == root or root in path.parents


# resolve_in_root


def test_absolute_symlink_resolves_inside_the_root(root: Path) -> None:
    (root / "etc" / "resolv.conf").symlink_to("/run/systemd/resolve/stub-resolv.conf")
    assert resolve_in_root(root, "/etc/resolv.conf") == (
        root / "run" / "systemd" / "resolve" / "stub-resolv.conf"
    )


def test_absolute_symlink_to_etc_never_means_the_hosts_etc(root: Path) -> None:
    (root / "etc" / "hostname-link").symlink_to("/etc/hostname")
    assert resolve_in_root(root, "/etc/hostname-link") == root / "etc" / "hostname"


def test_relative_symlink_resolves_against_its_directory(root: Path) -> None:
    (root / "etc" / "resolv.conf").symlink_to("../run/systemd/resolve/stub-resolv.conf")
    assert resolve_in_root(root, "/etc/resolv.conf") == (
        root / "run" / "systemd" / "resolve" / "stub-resolv.conf"
    )


def test_symlinked_directories_are_followed(root: Path) -> None:
    (root / "lib").symlink_to("usr/lib")
    (root / "bin").symlink_to("/usr/bin")
    assert resolve_in_root(root, "/lib/libc.so.6") == root / "usr" / "lib" / "libc.so.6"
    assert resolve_in_root(root, "/bin/sh") == root / "usr" / "bin" / "sh"
    # As the kernel does it: ".." after a symlinked directory leaves the link's target.
    assert resolve_in_root(root, "/bin/../sbin/x") == root / "usr" / "sbin" / "x"


def test_a_relative_path_is_taken_from_the_root(root: Path) -> None:
    assert resolve_in_root(root, "etc/hostname") == root / "etc" / "hostname"


def test_a_chain_of_symlinks_is_followed(root: Path) -> None:
    (root / "etc" / "link0").symlink_to("/etc/hostname")
    for hop in range(1, 10):
        (root / "etc" / f"link{hop}").symlink_to(f"link{hop - 1}")
    assert resolve_in_root(root, "/etc/link9") == root / "etc" / "hostname"


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/../../../etc/passwd", "etc/passwd"),
        ("../etc/passwd", "etc/passwd"),
        ("/etc/../../../..", ""),
        ("/usr/lib/../../../../../etc/shadow", "etc/shadow"),
    ],
)
def test_dot_dot_cannot_leave_the_root(root: Path, path: str, expected: str) -> None:
    resolved = resolve_in_root(root, path)
    assert resolved == root / expected
    assert inside(root, resolved)


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("../../../../../../../../etc/shadow", "etc/shadow"),
        ("/../../etc/shadow", "etc/shadow"),
        ("/..", ""),
        ("..", "usr"),
    ],
)
def test_a_symlink_cannot_lead_out_of_the_root(root: Path, target: str, expected: str) -> None:
    (root / "usr" / "lib" / "escape").symlink_to(target)
    resolved = resolve_in_root(root, "/usr/lib/escape")
    assert resolved == root / expected
    assert inside(root, resolved)


def test_follow_last_false_leaves_the_last_symlink_alone(root: Path) -> None:
    (root / "sbin").symlink_to("usr/sbin")
    (root / "usr" / "sbin" / "policy-rc.d").symlink_to("/bin/true")
    assert resolve_in_root(root, "/sbin/policy-rc.d", follow_last=False) == (
        root / "usr" / "sbin" / "policy-rc.d"
    )
    assert resolve_in_root(root, "/sbin/policy-rc.d") == root / "bin" / "true"


@pytest.mark.parametrize(
    "make_loop",
    [
        lambda etc: (etc / "a").symlink_to("b") or (etc / "b").symlink_to("a"),
        lambda etc: (etc / "a").symlink_to("/etc/a"),
        lambda etc: (etc / "a").symlink_to("a/x"),
    ],
    ids=["two-links", "self-absolute", "into-itself"],
)
def test_a_symlink_loop_raises(root: Path, make_loop: Callable[[Path], None]) -> None:
    make_loop(root / "etc")
    with pytest.raises(UnsafePathError):
        resolve_in_root(root, "/etc/a")
    with pytest.raises(UnsafePathError):
        resolve_in_root(root, "/etc/a/file")


def test_chroot_path_is_resolve_in_root(root: Path) -> None:
    (root / "etc" / "resolv.conf").symlink_to("/run/systemd/resolve/stub-resolv.conf")
    chroot = Chroot(root)
    assert chroot.path("/etc/resolv.conf") == resolve_in_root(root, "/etc/resolv.conf")
    assert chroot.path("/etc/resolv.conf", follow_last=False) == root / "etc" / "resolv.conf"


# replaced_file


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_a_regular_file_is_restored_byte_for_byte_with_its_mode(root: Path) -> None:
    original = b"127.0.0.1 localhost\n\x00\xff binary too\n"
    hosts = root / "etc" / "hosts"
    hosts.write_bytes(original)
    hosts.chmod(0o640)

    with replaced_file(Chroot(root), "/etc/hosts", b"during the bake\n", mode=0o600) as path:
        assert path == hosts
        assert hosts.read_bytes() == b"during the bake\n"
        assert mode_of(hosts) == 0o600

    assert hosts.read_bytes() == original
    assert mode_of(hosts) == 0o640
    assert not hosts.is_symlink()


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give a file to another owner")
def test_a_regular_file_is_restored_with_its_owner(root: Path) -> None:
    hosts = root / "etc" / "hosts"
    hosts.write_bytes(b"x\n")
    os.chown(hosts, 4242, 4343)
    with replaced_file(Chroot(root), "/etc/hosts", b"y\n"):
        assert (hosts.stat().st_uid, hosts.stat().st_gid) == (0, 0)
    assert (hosts.stat().st_uid, hosts.stat().st_gid) == (4242, 4343)


def test_relative_symlink_is_replaced_not_written_through(root: Path) -> None:
    link = root / "etc" / "resolv.conf"
    link.symlink_to("../run/systemd/resolve/stub-resolv.conf")
    target = root / "run" / "systemd" / "resolve" / "stub-resolv.conf"
    target.write_bytes(b"nameserver 127.0.0.53\n")

    with replaced_file(Chroot(root), "/etc/resolv.conf", b"nameserver 10.0.0.2\n") as path:
        assert path == link
        assert not link.is_symlink()
        assert link.read_bytes() == b"nameserver 10.0.0.2\n"
        assert mode_of(link) == 0o644
        assert target.read_bytes() == b"nameserver 127.0.0.53\n"

    assert link.is_symlink()
    assert os.readlink(link) == "../run/systemd/resolve/stub-resolv.conf"
    assert target.read_bytes() == b"nameserver 127.0.0.53\n"


def test_absolute_symlink_is_replaced_and_the_hosts_file_untouched(
    root: Path, tmp_path: Path
) -> None:
    # The link's target exists on the host: following it with open() would write the host's file.
    host_file = tmp_path / "host" / "hostname"
    host_file.parent.mkdir()
    host_file.write_bytes(b"the-host\n")
    link = root / "etc" / "hostname"
    link.symlink_to(host_file)

    with replaced_file(Chroot(root), "/etc/hostname", b"baking\n"):
        assert not link.is_symlink()
        assert link.read_bytes() == b"baking\n"
        assert host_file.read_bytes() == b"the-host\n"

    assert link.is_symlink()
    assert os.readlink(link) == str(host_file)
    assert host_file.read_bytes() == b"the-host\n"
    # Nor was the target created at its place inside the image.
    assert not resolve_in_root(root, str(host_file)).exists()


def test_dangling_symlink_is_replaced_and_restored(root: Path) -> None:
    # During a bake /run is a fresh tmpfs, so resolv.conf's target does not exist.
    link = root / "etc" / "resolv.conf"
    link.symlink_to("/run/systemd/resolve/stub-resolv.conf")

    with replaced_file(Chroot(root), "/etc/resolv.conf", b"nameserver 10.0.0.2\n"):
        assert link.read_bytes() == b"nameserver 10.0.0.2\n"

    assert os.readlink(link) == "/run/systemd/resolve/stub-resolv.conf"
    assert not (root / "run" / "systemd" / "resolve" / "stub-resolv.conf").exists()


def test_an_absent_file_is_absent_again(root: Path) -> None:
    policy = root / "usr" / "sbin" / "policy-rc.d"
    script = b"#!/bin/sh\nexit 101\n"

    with replaced_file(Chroot(root), "/usr/sbin/policy-rc.d", script, mode=0o755):
        assert policy.read_bytes() == script
        assert mode_of(policy) == 0o755

    assert not policy.exists()
    assert not policy.is_symlink()


def test_a_file_in_a_symlinked_directory_lands_inside_the_image(root: Path) -> None:
    (root / "sbin").symlink_to("usr/sbin")
    with replaced_file(Chroot(root), "/sbin/policy-rc.d", b"exit 101\n") as path:
        assert path == root / "usr" / "sbin" / "policy-rc.d"
        assert path.read_bytes() == b"exit 101\n"
    assert not (root / "usr" / "sbin" / "policy-rc.d").exists()
    assert (root / "sbin").is_symlink()


def _make_file(root: Path) -> None:
    (root / "etc" / "resolv.conf").write_bytes(b"nameserver 192.0.2.1\n")
    (root / "etc" / "resolv.conf").chmod(0o600)


def _make_symlink(root: Path) -> None:
    (root / "etc" / "resolv.conf").symlink_to("../run/systemd/resolve/stub-resolv.conf")


def _make_nothing(root: Path) -> None:
    pass


def _snapshot(path: Path) -> tuple[str, str | bytes, int]:
    if path.is_symlink():
        return ("symlink", os.readlink(path), 0)
    if path.exists():
        return ("file", path.read_bytes(), mode_of(path))
    return ("absent", b"", 0)


@pytest.mark.parametrize(
    "make_original", [_make_file, _make_symlink, _make_nothing], ids=["file", "symlink", "absent"]
)
def test_restored_when_the_body_raises(root: Path, make_original: Callable[[Path], None]) -> None:
    make_original(root)
    path = root / "etc" / "resolv.conf"
    before = _snapshot(path)

    with (
        pytest.raises(RuntimeError, match="package script failed"),
        replaced_file(Chroot(root), "/etc/resolv.conf", b"nameserver 10.0.0.2\n"),
    ):
        assert path.read_bytes() == b"nameserver 10.0.0.2\n"
        raise RuntimeError("package script failed")

    assert _snapshot(path) == before


def test_a_directory_in_the_way_is_refused(root: Path) -> None:
    (root / "etc" / "resolv.conf").mkdir()
    with (
        pytest.raises(BakeError, match="neither a file nor a symlink"),
        replaced_file(Chroot(root), "/etc/resolv.conf", b"x"),
    ):
        pass
    assert (root / "etc" / "resolv.conf").is_dir()


def test_a_missing_directory_is_refused(root: Path) -> None:
    with (
        pytest.raises(BakeError, match="not a directory"),
        replaced_file(Chroot(root), "/no/such/dir/file", b"x"),
    ):
        pass
    assert not (root / "no").exists()
