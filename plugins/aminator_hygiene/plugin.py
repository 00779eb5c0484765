"""Hook implementations of the hygiene finalizer: rules that make a baked image safe to launch a
fleet from, run inside the image after the install. Each rule is a setting of its own
(``[plugins.hygiene]``), on by default.

- ``ssh_host_keys``: the SSH host keys a package made at bake time are removed, and made again
  at each instance's first boot: by the image's own mechanism where it has one (cloud-init, or
  a distribution's ``sshd-keygen`` unit), else by a small systemd unit this rule installs.
- ``machine_id``: /etc/machine-id is emptied (systemd's first-boot semantics: each instance
  makes its own), and /var/lib/dbus/machine-id becomes a link to it.
- ``snakeoil``: the self-signed key and certificate ssl-cert made at bake time are removed and
  made again at first boot (``make-ssl-cert``), before any service that uses them starts.
- ``random_seed``: systemd's saved random seed is removed: instances must not share it.
- ``logs``: what the bake wrote under /var/log is emptied (compressed logs removed); with
  ``keep_package_history`` the package manager's own history stays.
- ``tmp``: what the bake added to /tmp and /var/tmp is removed.

"What the bake wrote" is what changed since the bake started: an inode's change time, which
the kernel sets and no package can set back.

The first-boot units run early (before ``sysinit.target``, so before every ordinary service)
and only where their work is missing.
"""

from __future__ import annotations

import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import PurePosixPath

from aminator_ng.api import Chroot, Distro, EngineSettings, HygieneOutcome, declared, hookimpl

#: Units of images that make missing SSH host keys at boot by themselves.
OWN_KEY_MAKERS = (
    "/usr/bin/cloud-init",
    "/usr/lib/systemd/system/sshd-keygen@.service",
    "/usr/lib/systemd/system/sshd-keygen.target",
    "/lib/systemd/system/sshd-keygen.service",
)
KEYGEN_UNIT = "aminator-ng-ssh-host-keys.service"
SNAKEOIL_UNIT = "aminator-ng-snakeoil.service"
SNAKEOIL_KEY = "/etc/ssl/private/ssl-cert-snakeoil.key"
SNAKEOIL_CERT = "/etc/ssl/certs/ssl-cert-snakeoil.pem"
MAKE_SSL_CERT = "/usr/sbin/make-ssl-cert"
RANDOM_SEEDS = ("/var/lib/systemd/random-seed", "/var/lib/urandom/random-seed")
FIRST_BOOT_UNIT = """\
[Unit]
Description={description} (installed by aminator-ng)
DefaultDependencies=no
After=local-fs.target
Before=sysinit.target {before}
ConditionPathExists=!{made}

[Service]
Type=oneshot
ExecStart={command}

[Install]
WantedBy=sysinit.target
"""
MACHINE_ID = "/etc/machine-id"
DBUS_MACHINE_ID = "/var/lib/dbus/machine-id"


@dataclass(frozen=True)
class HygieneSettings:
    """The ``[plugins.NAME]`` table of this plugin (``hygiene`` as it is installed): a switch
    for each rule, by the rule's name."""

    ssh_host_keys: bool = declared(
        bool,
        True,
        "remove the SSH host keys made at bake time; each instance makes its own at first boot",
    )
    machine_id: bool = declared(
        bool,
        True,
        "empty /etc/machine-id (and link /var/lib/dbus/machine-id to it): each instance "
        "makes its own at first boot",
    )
    snakeoil: bool = declared(
        bool,
        True,
        "remove the ssl-cert snakeoil key and certificate made at bake time; each instance "
        "makes its own at first boot",
    )
    random_seed: bool = declared(bool, True, "remove systemd's saved random seed")
    logs: bool = declared(bool, True, "empty the logs the bake wrote under /var/log")
    keep_package_history: bool = declared(
        bool,
        False,
        "with logs: keep the package manager's own history (apt's history.log and dpkg.log, "
        "dnf's dnf.rpm.log)",
    )
    tmp: bool = declared(bool, True, "remove what the bake added to /tmp and /var/tmp")


@hookimpl
def aminator_settings() -> type[HygieneSettings]:
    return HygieneSettings


@hookimpl
def aminator_clean_image(
    chroot: Chroot,
    distro: Distro,
    settings: EngineSettings,
    started: datetime,
    package_history: Sequence[str],
) -> list[HygieneOutcome]:
    own = settings.of(HygieneSettings)
    since = started.timestamp()
    kept = tuple(package_history) if own.keep_package_history else ()
    # Each rule, and what it would remove or empty (kept, and reported, when it is off).
    rules: tuple[tuple[str, Callable[[], str], Callable[[], list[str]]], ...] = (
        ("ssh_host_keys", lambda: reset_ssh_host_keys(chroot), lambda: ssh_host_keys(chroot)),
        ("machine_id", lambda: reset_machine_id(chroot), lambda: machine_ids(chroot)),
        ("snakeoil", lambda: reset_snakeoil(chroot), lambda: snakeoil_files(chroot)),
        ("random_seed", lambda: remove_random_seed(chroot), lambda: random_seeds(chroot)),
        (
            "logs",
            lambda: empty_logs(chroot, since, kept),
            lambda: logs_written(chroot, since, kept),
        ),
        ("tmp", lambda: empty_tmp(chroot, since), lambda: tmp_entries_added(chroot, since)),
    )
    outcomes: list[HygieneOutcome] = []
    for name, rule, would_change in rules:
        if getattr(own, name):
            outcomes.append(HygieneOutcome(name, rule()))
        else:
            outcomes.append(
                HygieneOutcome(name, "switched off", switched_off=True, kept=tuple(would_change()))
            )
    return outcomes


def ssh_host_keys(chroot: Chroot) -> list[str]:
    if not chroot.is_dir("/etc/ssh"):
        return []
    return sorted(
        f"/etc/ssh/{name}"
        for name in chroot.listdir("/etc/ssh")
        if name.startswith("ssh_host_") and name.endswith(("_key", "_key.pub"))
    )


def reset_ssh_host_keys(chroot: Chroot) -> str:
    if not chroot.is_dir("/etc/ssh"):
        return "no /etc/ssh: nothing to do"
    keys = ssh_host_keys(chroot)
    if not keys:
        return "no SSH host key"
    for path in keys:
        chroot.remove(path)
    removed = f"removed {len(keys)} SSH host key files"
    own = next((path for path in OWN_KEY_MAKERS if chroot.exists(path)), None)
    if own is not None:
        return f"{removed}; {own} makes them at first boot"
    install_first_boot_unit(
        chroot,
        KEYGEN_UNIT,
        description="Make this machine's own SSH host keys",
        command="/usr/bin/ssh-keygen -A",
        made="/etc/ssh/ssh_host_ed25519_key",
        before="ssh.service sshd.service",
    )
    return f"{removed}; {KEYGEN_UNIT} makes them at first boot"


def install_first_boot_unit(
    chroot: Chroot, name: str, *, description: str, command: str, made: str, before: str
) -> None:
    """A oneshot unit that does ``command`` at boot while ``made`` is missing, enabled as
    systemctl would (a link in sysinit.target.wants)."""
    units = PurePosixPath("/etc/systemd/system")
    wants = units / "sysinit.target.wants"
    for directory in ("/etc/systemd", str(units), str(wants)):
        if not chroot.exists(directory):
            chroot.make_directory(directory)
    text = FIRST_BOOT_UNIT.format(
        description=description, before=before, made=made, command=command
    )
    chroot.write_file(str(units / name), text.encode(), mode=0o644)
    link = str(wants / name)
    if chroot.lstat(link) is not None:
        chroot.remove(link)
    chroot.symlink(link, str(units / name))


def snakeoil_files(chroot: Chroot) -> list[str]:
    return [path for path in (SNAKEOIL_KEY, SNAKEOIL_CERT) if chroot.lstat(path) is not None]


def reset_snakeoil(chroot: Chroot) -> str:
    made = snakeoil_files(chroot)
    if not made:
        return "no snakeoil certificate"
    for path in made:
        chroot.remove(path)
    removed = f"removed {', '.join(made)}"
    if not chroot.is_file(MAKE_SSL_CERT):
        return f"{removed}; ssl-cert is not installed: nothing makes them again"
    install_first_boot_unit(
        chroot,
        SNAKEOIL_UNIT,
        description="Make this machine's own snakeoil certificate",
        command=f"{MAKE_SSL_CERT} generate-default-snakeoil --force-overwrite",
        made=SNAKEOIL_KEY,
        before="apache2.service nginx.service postgresql.service postfix.service "
        "exim4.service dovecot.service",
    )
    return f"{removed}; {SNAKEOIL_UNIT} makes them at first boot"


def random_seeds(chroot: Chroot) -> list[str]:
    return [path for path in RANDOM_SEEDS if chroot.lstat(path) is not None]


def remove_random_seed(chroot: Chroot) -> str:
    seeds = random_seeds(chroot)
    for path in seeds:
        chroot.remove(path)
    return f"removed {', '.join(seeds)}" if seeds else "no random seed"


def machine_ids(chroot: Chroot) -> list[str]:
    found = []
    if chroot.is_file(MACHINE_ID) and chroot.read_bytes(MACHINE_ID).strip():
        found.append(MACHINE_ID)
    dbus = chroot.lstat(DBUS_MACHINE_ID)
    if dbus is not None and not stat.S_ISLNK(dbus.st_mode):
        found.append(DBUS_MACHINE_ID)
    return found


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


def _changed_since(chroot: Chroot, path: str, since: float) -> bool:
    found = chroot.lstat(path)
    return found is not None and found.st_ctime >= since


def _entries(chroot: Chroot, directory: str) -> list[str]:
    """The paths below ``directory``, deepest first (directories after what they hold)."""
    found: list[str] = []
    for name in chroot.listdir(directory):
        path = f"{directory}/{name}"
        info = chroot.lstat(path)
        if info is not None and stat.S_ISDIR(info.st_mode):
            found += _entries(chroot, path)
        found.append(path)
    return found


def logs_written(chroot: Chroot, since: float, kept: Sequence[str]) -> list[str]:
    """The non-empty logs under /var/log the bake wrote, but those ``kept``."""
    if not chroot.is_dir("/var/log"):
        return []
    written: list[str] = []
    for path in _entries(chroot, "/var/log"):
        info = chroot.lstat(path)
        if info is None or not stat.S_ISREG(info.st_mode) or path in kept:
            continue
        if info.st_ctime >= since and info.st_size > 0:
            written.append(path)
    return written


def empty_logs(chroot: Chroot, since: float, kept: Sequence[str]) -> str:
    if not chroot.is_dir("/var/log"):
        return "no /var/log"
    emptied = logs_written(chroot, since, kept)
    for path in emptied:
        if path.endswith((".gz", ".xz", ".bz2", ".zst")):
            chroot.remove(path)  # an empty file is no valid archive
            continue
        info = chroot.lstat(path)
        assert info is not None
        chroot.write_file(
            path, b"", mode=stat.S_IMODE(info.st_mode), uid=info.st_uid, gid=info.st_gid
        )
    kept_note = f"; kept {', '.join(p for p in kept if chroot.exists(p))}" if kept else ""
    return (
        f"emptied {len(emptied)} logs the bake wrote" if emptied else "no log written"
    ) + kept_note


def tmp_entries_added(chroot: Chroot, since: float) -> list[str]:
    """What the bake added to /tmp and /var/tmp, deepest first; not a directory that holds
    what the base had."""
    added: list[str] = []
    for directory in ("/tmp", "/var/tmp"):
        if not chroot.is_dir(directory):
            continue
        for path in _entries(chroot, directory):
            if not _changed_since(chroot, path, since):
                continue
            info = chroot.lstat(path)
            if info is not None and stat.S_ISDIR(info.st_mode):
                inside = [f"{path}/{name}" for name in chroot.listdir(path)]
                if any(entry not in added for entry in inside):
                    continue  # it holds what the base had
            added.append(path)
    return added


def empty_tmp(chroot: Chroot, since: float) -> str:
    added = tmp_entries_added(chroot, since)
    for path in added:
        info = chroot.lstat(path)
        if info is not None and stat.S_ISDIR(info.st_mode):
            chroot.remove_directory(path)
        else:
            chroot.remove(path)
    return (
        f"removed {len(added)} entries the bake added to /tmp and /var/tmp"
        if added
        else "nothing added"
    )
