"""What of the bake host the engine keeps out of the image: which names and addresses it looks
for, and the copies package scripts make of the host's resolv.conf it placed for the bake."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from aminator_ng.host.chroot import Chroot
from aminator_ng.pipeline import host_seam as host_module
from aminator_ng.pipeline.host_seam import LinuxHost, host_traces

HOST_RESOLV_CONF = b"nameserver 198.51.100.53\nsearch corp.example\n"


@pytest.mark.parametrize(
    ("hostname", "looked_for"),
    [
        ("ip-10-0-1-23.ec2.internal", ("ip-10-0-1-23.ec2.internal", "ip-10-0-1-23")),
        ("bakery", ()),  # a plain short word is in too many files to tell the host apart
        ("bakehost7", ("bakehost7",)),
        ("localhost", ()),
    ],
)
def test_the_host_s_names_looked_for(
    monkeypatch: pytest.MonkeyPatch, hostname: str, looked_for: tuple[str, ...]
) -> None:
    monkeypatch.setattr(host_module.socket, "gethostname", lambda: hostname)
    assert host_traces().hostnames == looked_for


def test_loopback_and_documentation_nameservers_are_every_host_s(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    resolv = (
        b"nameserver 127.0.0.53\nnameserver 10.20.30.53\nnameserver ::1\n"
        b"nameserver 192.0.2.53\nnameserver 2001:db8::53\nnameserver fd12:3456::53\n"
    )
    monkeypatch.setattr(host_module, "host_resolv_conf", lambda: resolv)
    assert host_traces().nameservers == ("10.20.30.53", "fd12:3456::53")


@pytest.fixture
def image(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(host_module, "host_resolv_conf", lambda: HOST_RESOLV_CONF)
    (tmp_path / "etc").mkdir()
    return tmp_path


def copy_made_by_a_package(image: Path) -> tuple[Chroot, float]:
    since = time.time() - 1
    # The engine's copy of the host's file, in place for the bake, and a package's backup of it.
    (image / "etc/resolv.conf").write_bytes(HOST_RESOLV_CONF)
    (image / "etc/.resolv.conf.systemd-resolved.bak").write_bytes(HOST_RESOLV_CONF)
    (image / "etc/unrelated").write_bytes(b"x" * len(HOST_RESOLV_CONF))
    return Chroot(image), since


def test_a_copy_of_the_host_s_resolv_conf_gets_the_base_s(image: Path) -> None:
    host = LinuxHost()
    host._base_resolv_conf = b"nameserver 192.0.2.1\n"
    chroot, since = copy_made_by_a_package(image)
    done = host.undo_copies_of_placed_files(chroot, since)
    assert done.startswith("gave the base's resolv.conf to /etc/.resolv.conf.systemd-resolved.bak")
    assert (
        image / "etc/.resolv.conf.systemd-resolved.bak"
    ).read_bytes() == b"nameserver 192.0.2.1\n"
    # The engine's own placement is restored at chroot teardown, not here.
    assert (image / "etc/resolv.conf").read_bytes() == HOST_RESOLV_CONF
    assert host.placed_files(chroot) == ["/etc/resolv.conf"]


def test_a_copy_goes_when_the_base_had_no_resolv_conf(image: Path) -> None:
    chroot, since = copy_made_by_a_package(image)
    done = LinuxHost().undo_copies_of_placed_files(chroot, since)
    assert done.startswith("removed /etc/.resolv.conf.systemd-resolved.bak")
    assert sorted(p.name for p in (image / "etc").iterdir()) == ["resolv.conf", "unrelated"]


def test_a_resolv_conf_a_package_made_its_own_is_scanned(image: Path) -> None:
    (image / "etc/resolv.conf").symlink_to("../run/systemd/resolve/stub-resolv.conf")
    assert LinuxHost().placed_files(Chroot(image)) == []
