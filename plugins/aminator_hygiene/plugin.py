"""Hook implementations of the hygiene finalizer: rules that make a baked image safe to launch a
fleet from, run inside the image after the install. Each rule is a setting of its own
(``[plugins.hygiene]``), on by default.

- ``ssh_host_keys``: the SSH host keys a package made at bake time are removed, and made again
  at each instance's first boot: by the image's own mechanism where it has one (cloud-init, or
  a distribution's ``sshd-keygen`` unit), else by a small systemd unit this rule installs.
- ``machine_id``: /etc/machine-id is emptied (systemd's first-boot semantics: each instance
  makes its own), and /var/lib/dbus/machine-id becomes a link to it.
"""

from __future__ import annotations

import stat
from collections.abc import Sequence
from pathlib import PurePosixPath

from aminator_ng.api import Chroot, Distro, EngineSettings, HygieneOutcome, Setting, hookimpl

PLUGIN_NAME = "hygiene"

#: Units of images that make missing SSH host keys at boot by themselves.
OWN_KEY_MAKERS = (
    "/usr/bin/cloud-init",
    "/usr/lib/systemd/system/sshd-keygen@.service",
    "/usr/lib/systemd/system/sshd-keygen.target",
    "/lib/systemd/system/sshd-keygen.service",
)
KEYGEN_UNIT = "aminator-ng-ssh-host-keys.service"
KEYGEN_UNIT_TEXT = """\
[Unit]
Description=Make this machine's own SSH host keys (installed by aminator-ng)
Before=ssh.service sshd.service

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -A

[Install]
WantedBy=multi-user.target
"""
MACHINE_ID = "/etc/machine-id"
DBUS_MACHINE_ID = "/var/lib/dbus/machine-id"


@hookimpl
def aminator_settings() -> Sequence[Setting]:
    return [
        Setting(
            "ssh_host_keys",
            bool,
            True,
            "remove the SSH host keys made at bake time; each instance makes its own at first boot",
        ),
        Setting(
            "machine_id",
            bool,
            True,
            "empty /etc/machine-id (and link /var/lib/dbus/machine-id to it): each instance "
            "makes its own at first boot",
        ),
    ]


@hookimpl
def aminator_clean_image(
    chroot: Chroot, distro: Distro, settings: EngineSettings
) -> list[HygieneOutcome]:
    own = settings.plugin(PLUGIN_NAME)
    rules = (("ssh_host_keys", reset_ssh_host_keys), ("machine_id", reset_machine_id))
    outcomes: list[HygieneOutcome] = []
    for name, rule in rules:
        if own.get(name, True):
            outcomes.append(HygieneOutcome(name, rule(chroot)))
        else:
            outcomes.append(HygieneOutcome(name, "switched off", switched_off=True))
    return outcomes


def reset_ssh_host_keys(chroot: Chroot) -> str:
    if not chroot.is_dir("/etc/ssh"):
        return "no /etc/ssh: nothing to do"
    keys = sorted(
        name
        for name in chroot.listdir("/etc/ssh")
        if name.startswith("ssh_host_") and name.endswith(("_key", "_key.pub"))
    )
    if not keys:
        return "no SSH host key"
    for name in keys:
        chroot.remove(f"/etc/ssh/{name}")
    removed = f"removed {len(keys)} SSH host key files"
    own = next((path for path in OWN_KEY_MAKERS if chroot.exists(path)), None)
    if own is not None:
        return f"{removed}; {own} makes them at first boot"
    install_keygen_unit(chroot)
    return f"{removed}; {KEYGEN_UNIT} makes them at first boot"


def install_keygen_unit(chroot: Chroot) -> None:
    """The unit, enabled as systemctl would (a link in multi-user.target.wants)."""
    units = PurePosixPath("/etc/systemd/system")
    wants = units / "multi-user.target.wants"
    for directory in ("/etc/systemd", str(units), str(wants)):
        if not chroot.exists(directory):
            chroot.make_directory(directory)
    chroot.write_file(str(units / KEYGEN_UNIT), KEYGEN_UNIT_TEXT.encode(), mode=0o644)
    link = str(wants / KEYGEN_UNIT)
    if chroot.lstat(link) is not None:
        chroot.remove(link)
    chroot.symlink(link, str(units / KEYGEN_UNIT))


def reset_machine_id(chroot: Chroot) -> str:
    done: list[str] = []
    if chroot.is_file(MACHINE_ID) and chroot.read_bytes(MACHINE_ID).strip():
        chroot.write_file(MACHINE_ID, b"", mode=0o444)
        done.append(f"emptied {MACHINE_ID}")
    dbus = chroot.lstat(DBUS_MACHINE_ID)
    if dbus is not None and not stat.S_ISLNK(dbus.st_mode):
        chroot.remove(DBUS_MACHINE_ID)
        chroot.symlink(DBUS_MACHINE_ID, MACHINE_ID)
        done.append(f"linked {DBUS_MACHINE_ID} to {MACHINE_ID}")
    return "; ".join(done) or "no machine id"
