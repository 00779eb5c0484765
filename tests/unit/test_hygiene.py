"""The hygiene finalizer's rules on an image tree of the test's own: each does its work, says
what it did, and does nothing when switched off."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from aminator_hygiene.plugin import (
    KEYGEN_UNIT,
    SNAKEOIL_UNIT,
    HygieneSettings,
    aminator_clean_image,
)
from aminator_ng.contract.model import Distro, HygieneOutcome
from aminator_ng.contract.settings import EngineSettings
from aminator_ng.host.chroot import Chroot

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
    for made in ("etc/ssl/private/ssl-cert-snakeoil.key", "etc/ssl/certs/ssl-cert-snakeoil.pem"):
        (root / made).parent.mkdir(parents=True, exist_ok=True)
        (root / made).write_text("made at bake time\n")
    (root / "usr/sbin").mkdir(parents=True)
    (root / "usr/sbin/make-ssl-cert").write_text("#!/bin/sh\n")
    (root / "var/lib/systemd").mkdir(parents=True)
    (root / "var/lib/systemd/random-seed").write_bytes(b"\1" * 512)
    return root


HISTORY = ("/var/log/apt/history.log", "/var/log/dpkg.log")


def clean(
    root: Path, started: datetime | None = None, **switches: bool
) -> dict[str, HygieneOutcome]:
    settings = EngineSettings(typed={HygieneSettings: HygieneSettings(**switches)})
    outcomes = aminator_clean_image(
        Chroot(root), DISTRO, settings, started or datetime.now(UTC), HISTORY
    )
    return {o.rule: o for o in outcomes}


@pytest.fixture
def baked(image: Path) -> tuple[Path, datetime]:
    """The image with what a base had under /var/log and /tmp, then what a bake wrote there."""
    (image / "var/log/apt").mkdir(parents=True)
    (image / "var/log/base.log").write_text("from the base\n")
    (image / "tmp/base-dir").mkdir(parents=True)
    (image / "tmp/base-dir/base-file").write_text("from the base\n")
    time.sleep(0.05)
    started = datetime.now(UTC)
    time.sleep(0.05)
    for log in ("var/log/apt/history.log", "var/log/dpkg.log", "var/log/alternatives.log"):
        (image / log).write_text("Start-Date: 2026-12-02  baked on bakehost-1234\n")
    (image / "var/log/apt/eipp.log.xz").write_bytes(b"\xfd7zXZ\0")
    (image / "tmp/from-the-bake").write_text("x")
    (image / "tmp/base-dir/from-the-bake").write_text("x")
    (image / "var/tmp/bake-dir").mkdir(parents=True)
    (image / "var/tmp/bake-dir/x").write_text("x")
    return image, started


def test_ssh_host_keys_go_and_a_unit_makes_them_at_first_boot(image: Path) -> None:
    outcome = clean(image)["ssh_host_keys"]
    assert outcome.done == f"removed 3 SSH host key files; {KEYGEN_UNIT} makes them at first boot"
    assert sorted(p.name for p in (image / "etc/ssh").iterdir()) == ["sshd_config"]
    unit = (image / "etc/systemd/system" / KEYGEN_UNIT).read_text()
    assert "ExecStart=/usr/bin/ssh-keygen -A" in unit
    assert "Before=sysinit.target ssh.service sshd.service" in unit
    assert "ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key" in unit
    link = image / "etc/systemd/system/sysinit.target.wants" / KEYGEN_UNIT
    assert link.is_symlink() and str(link.readlink()) == f"/etc/systemd/system/{KEYGEN_UNIT}"


def test_an_image_that_makes_its_own_keys_gets_no_unit(image: Path) -> None:
    (image / "usr/bin").mkdir(parents=True)
    (image / "usr/bin/cloud-init").write_text("#!/bin/sh\n")
    outcome = clean(image)["ssh_host_keys"]
    assert outcome.done.endswith("/usr/bin/cloud-init makes them at first boot")
    assert not (image / "etc/systemd/system" / KEYGEN_UNIT).exists()


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


def test_the_snakeoil_certificate_goes_and_is_made_again_at_first_boot(image: Path) -> None:
    outcome = clean(image)["snakeoil"]
    assert outcome.done == (
        "removed /etc/ssl/private/ssl-cert-snakeoil.key, /etc/ssl/certs/ssl-cert-snakeoil.pem; "
        f"{SNAKEOIL_UNIT} makes them at first boot"
    )
    assert not (image / "etc/ssl/private/ssl-cert-snakeoil.key").exists()
    unit = (image / "etc/systemd/system" / SNAKEOIL_UNIT).read_text()
    assert "ExecStart=/usr/sbin/make-ssl-cert generate-default-snakeoil --force-overwrite" in unit
    assert "apache2.service" in unit and "postgresql.service" in unit
    assert (image / "etc/systemd/system/sysinit.target.wants" / SNAKEOIL_UNIT).is_symlink()


def test_without_ssl_cert_the_snakeoil_certificate_is_not_made_again(image: Path) -> None:
    (image / "usr/sbin/make-ssl-cert").unlink()
    assert clean(image)["snakeoil"].done.endswith(
        "ssl-cert is not installed: nothing makes them again"
    )
    assert not (image / "etc/systemd/system" / SNAKEOIL_UNIT).exists()


def test_the_logs_the_bake_wrote_are_emptied(baked: tuple[Path, datetime]) -> None:
    image, started = baked
    outcome = clean(image, started)["logs"]
    assert outcome.done == "emptied 4 logs the bake wrote"
    for log in ("var/log/apt/history.log", "var/log/dpkg.log", "var/log/alternatives.log"):
        assert (image / log).read_bytes() == b""
    assert not (image / "var/log/apt/eipp.log.xz").exists()
    assert (image / "var/log/base.log").read_text() == "from the base\n"


def test_the_package_history_stays_when_asked(baked: tuple[Path, datetime]) -> None:
    image, started = baked
    outcome = clean(image, started, keep_package_history=True)["logs"]
    assert outcome.done == (
        "emptied 2 logs the bake wrote; kept /var/log/apt/history.log, /var/log/dpkg.log"
    )
    assert (image / "var/log/dpkg.log").read_text().startswith("Start-Date")
    assert (image / "var/log/alternatives.log").read_bytes() == b""


def test_what_the_bake_added_to_tmp_goes_and_the_base_s_stays(
    baked: tuple[Path, datetime],
) -> None:
    image, started = baked
    assert clean(image, started)["tmp"].done == (
        "removed 4 entries the bake added to /tmp and /var/tmp"
    )
    assert sorted(p.relative_to(image).as_posix() for p in (image / "tmp").rglob("*")) == [
        "tmp/base-dir",
        "tmp/base-dir/base-file",
    ]
    assert list((image / "var/tmp").iterdir()) == []


def test_the_random_seed_goes(image: Path) -> None:
    assert clean(image)["random_seed"].done == "removed /var/lib/systemd/random-seed"
    assert not (image / "var/lib/systemd/random-seed").exists()
    assert clean(image)["random_seed"].done == "no random seed"


RULES = ["ssh_host_keys", "machine_id", "snakeoil", "random_seed", "logs", "tmp"]
#: What each rule would change (and a rule switched off leaves as it was).
TOUCHED = {
    "ssh_host_keys": ["etc/ssh/ssh_host_rsa_key"],
    "machine_id": ["etc/machine-id", "var/lib/dbus/machine-id"],
    "snakeoil": ["etc/ssl/private/ssl-cert-snakeoil.key", "etc/ssl/certs/ssl-cert-snakeoil.pem"],
    "random_seed": ["var/lib/systemd/random-seed"],
    "logs": ["var/log/dpkg.log"],
    "tmp": ["tmp/from-the-bake"],
}


@pytest.mark.parametrize("rule", RULES)
def test_a_rule_switched_off_changes_nothing(baked: tuple[Path, datetime], rule: str) -> None:
    image, started = baked
    before = {path: (image / path).read_bytes() for path in TOUCHED[rule]}
    outcomes = clean(image, started, **{rule: False})
    off = outcomes[rule]
    assert (off.rule, off.done, off.switched_off) == (rule, "switched off", True)
    # What it would have changed is reported, for the secret scan to warn of.
    assert {f"/{path}" for path in TOUCHED[rule]} <= set(off.kept)
    for path, content in before.items():
        assert not (image / path).is_symlink() and (image / path).read_bytes() == content
    # The other rules still ran.
    for other in set(RULES) - {rule}:
        assert not outcomes[other].switched_off
        for path in TOUCHED[other]:
            changed = image / path
            assert not changed.exists() or changed.is_symlink() or changed.read_bytes() == b""
