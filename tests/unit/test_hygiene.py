"""The hygiene finalizer's rules on an image tree of the test's own: each does its work, says
what it did, and does nothing when switched off."""

from __future__ import annotations

from pathlib import Path

import pytest

from aminator_hygiene.plugin import KEYGEN_UNIT, aminator_clean_image
from aminator_ng.chroot import Chroot
from aminator_ng.config import EngineSettings
from aminator_ng.model import Distro, HygieneOutcome

DISTRO = Distro("debian", "debian", "12", "Debian GNU/Linux 12 (bookworm)", "deb")
KEY_FILES = ("ssh_host_ed25519_key", "ssh_host_ed25519_key.pub", "ssh_host_rsa_key")


@pytest.fixture
def image(tmp_path: Path) -> Path:
    root = tmp_path / "image"
    (root / "etc/ssh").mkdir(parents=True)
    for name in KEY_FILES:
        (root / "etc/ssh" / name).write_text(f"made at bake time: {name}\n")
    (root / "etc/ssh/sshd_config").write_text("PermitRootLogin no\n")
    (root / "etc/machine-id").write_text("0123456789abcdef0123456789abcdef\n")
    (root / "var/lib/dbus").mkdir(parents=True)
    (root / "var/lib/dbus/machine-id").write_text("0123456789abcdef0123456789abcdef\n")
    return root


def clean(root: Path, **switches: bool) -> dict[str, HygieneOutcome]:
    settings = EngineSettings(plugin_settings={"hygiene": switches})
    return {o.rule: o for o in aminator_clean_image(Chroot(root), DISTRO, settings)}


def test_ssh_host_keys_go_and_a_unit_makes_them_at_first_boot(image: Path) -> None:
    outcome = clean(image)["ssh_host_keys"]
    assert outcome.done == f"removed 3 SSH host key files; {KEYGEN_UNIT} makes them at first boot"
    assert sorted(p.name for p in (image / "etc/ssh").iterdir()) == ["sshd_config"]
    unit = image / "etc/systemd/system" / KEYGEN_UNIT
    assert "ExecStart=/usr/bin/ssh-keygen -A" in unit.read_text()
    assert "Before=ssh.service sshd.service" in unit.read_text()
    link = image / "etc/systemd/system/multi-user.target.wants" / KEYGEN_UNIT
    assert link.is_symlink() and str(link.readlink()) == f"/etc/systemd/system/{KEYGEN_UNIT}"


def test_an_image_that_makes_its_own_keys_gets_no_unit(image: Path) -> None:
    (image / "usr/bin").mkdir(parents=True)
    (image / "usr/bin/cloud-init").write_text("#!/bin/sh\n")
    outcome = clean(image)["ssh_host_keys"]
    assert outcome.done.endswith("/usr/bin/cloud-init makes them at first boot")
    assert not (image / "etc/systemd").exists()


def test_the_machine_id_is_emptied_and_dbus_follows_it(image: Path) -> None:
    outcome = clean(image)["machine_id"]
    assert outcome.done == (
        "emptied /etc/machine-id; linked /var/lib/dbus/machine-id to /etc/machine-id"
    )
    assert (image / "etc/machine-id").read_bytes() == b""
    assert (image / "etc/machine-id").stat().st_mode & 0o777 == 0o444
    assert str((image / "var/lib/dbus/machine-id").readlink()) == "/etc/machine-id"
    # Again: nothing left to do.
    assert clean(image)["machine_id"].done == "no machine id"


@pytest.mark.parametrize("rule", ["ssh_host_keys", "machine_id"])
def test_a_rule_switched_off_changes_nothing(image: Path, rule: str) -> None:
    before = {p: p.read_bytes() for p in image.rglob("*") if p.is_file()}
    outcomes = clean(image, **{rule: False})
    assert outcomes[rule] == HygieneOutcome(rule, "switched off", switched_off=True)
    after = {p: p.read_bytes() for p in image.rglob("*") if p.is_file()}
    if rule == "ssh_host_keys":
        assert all((image / "etc/ssh" / name).exists() for name in KEY_FILES)
        assert (image / "etc/machine-id").read_bytes() == b""
    else:
        assert after[image / "etc/machine-id"] == before[image / "etc/machine-id"]
        assert not (image / "var/lib/dbus/machine-id").is_symlink()
        assert not any((image / "etc/ssh").glob("ssh_host_*"))
