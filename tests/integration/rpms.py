"""Test RPMs built with rpmbuild, and a synthetic RPM-managed root to bake them on.

No RHEL-family userland can be downloaded here, so the root is a Debian minbase with rpm and
dnf, made RPM-managed: its rpm database at /var/lib/rpm, an os-release naming an RHEL-like
distribution, a tiny rpm that provides /bin/sh (scriptlets need it and no other rpm in the root
provides it), dnf's releasever, and a signed repository made with createrepo_c inside the image.
Its systemctl and service are scripts that really start a ``sleep`` daemon and leave a marker,
so that a test sees any service a bake lets start.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tests.hoststate import processes_left_under

BASE_NAME = "synthel-9"
#: The first bytes of every RPM file.
RPM_LEAD = b"\xed\xab\xee\xdb"
OS_RELEASE = """NAME="Synthetic Enterprise Linux"
VERSION="9 (synthetic)"
ID="synthel"
ID_LIKE="rhel centos fedora"
VERSION_ID="9"
PRETTY_NAME="Synthetic Enterprise Linux 9"
"""
#: Where the fake service managers leave their traces inside the image.
STARTED_DIR = "/var/lib/started-units"
ENABLED_DIR = "/etc/enabled-units"
FAKE_SYSTEMCTL = f"""#!/bin/sh
# A systemctl that really starts a daemon: the test's way to see a unit started in a bake.
verb=$1; unit=$2
case "$verb" in
    start|restart)
        mkdir -p {STARTED_DIR} && echo "systemctl $*" > "{STARTED_DIR}/$unit"
        setsid sleep 1000 </dev/null >/dev/null 2>&1 &
        ;;
    enable)
        case "$*" in *--now*) echo "systemctl $*" > "{STARTED_DIR}/$unit.now" ;; esac
        mkdir -p {ENABLED_DIR} && touch "{ENABLED_DIR}/$unit"
        ;;
esac
exit 0
"""
FAKE_SERVICE = f"""#!/bin/sh
# A SysV service command that really starts a daemon.
mkdir -p {STARTED_DIR} && echo "service $*" > "{STARTED_DIR}/$1.sysv"
setsid sleep 1000 </dev/null >/dev/null 2>&1 &
exit 0
"""
#: The files a bake shims in the image, and must give back unchanged.
SHIMMED = ("usr/bin/systemctl", "usr/sbin/service")
#: What the test package's %post does: prove it ran inside the image, and try to start a unit
#: every way an rpm scriptlet does.
GREETER_POST = """mkdir -p /var/lib/greeter
cat /etc/os-release > /var/lib/greeter/post-ran
systemctl enable --now greeterd.service
systemctl start greeterd.service
service greeterd start
"""


def build_rpm(
    out_dir: Path,
    name: str,
    version: str = "1.0",
    release: str = "1",
    *,
    epoch: str = "",
    arch: str = "noarch",
    requires: Sequence[str] = (),
    provides: Sequence[str] = (),
    post: str | None = None,
    files: bool = True,
) -> Path:
    """A binary package ``name-version-release.arch.rpm`` in ``out_dir``."""
    top = out_dir / "rpmbuild"
    spec = out_dir / f"{name}-{version}-{release}.spec"
    header = [
        f"Name: {name}",
        *([f"Epoch: {epoch}"] if epoch else []),
        f"Version: {version}",
        f"Release: {release}",
        f"Summary: test package {name}",
        "License: MIT",
        "AutoReqProv: no",
        *(f"Requires: {r}" for r in requires),
        *(f"Provides: {p}" for p in provides),
    ]
    if arch == "noarch":
        header.append("BuildArch: noarch")
    body = ["", "%description", f"test package {name}", ""]
    if files:
        body += [
            "%install",
            f"mkdir -p %{{buildroot}}/usr/share/{name}",
            f"echo '{name} {version}-{release}' > %{{buildroot}}/usr/share/{name}/README",
            "",
            "%files",
            f"/usr/share/{name}/README",
        ]
    else:
        body += ["%files"]
    if post is not None:
        body += ["", "%post", post]
    spec.write_text("\n".join(header + body) + "\n")
    target = [] if arch == "noarch" else ["--target", arch]
    subprocess.run(
        # A database of its own: Debian's rpmbuild would make one under ~/.rpmdb.
        [
            "rpmbuild",
            "-bb",
            "--quiet",
            *target,
            "--define",
            f"_dbpath {top}/rpmdb",
            "--define",
            f"_topdir {top}",
            str(spec),
        ],
        check=True,
        capture_output=True,
    )
    built = top / "RPMS" / arch / f"{name}-{version}-{release}.{arch}.rpm"
    rpm = out_dir / built.name
    shutil.move(built, rpm)
    return rpm


class SigningKey:
    """A GnuPG key of the test's own that signs RPMs, in a GNUPGHOME of its own."""

    def __init__(self, home: Path, email: str) -> None:
        self.home = home
        self.email = email
        home.mkdir(mode=0o700, parents=True)
        params = "\n".join(
            [
                "%no-protection",
                "Key-Type: RSA",
                "Key-Length: 2048",
                f"Name-Real: {email}",
                f"Name-Email: {email}",
                "Expire-Date: 0",
                "%commit",
            ]
        )
        self.public = home / "public.asc"
        try:
            self._gpg("--gen-key", input=params)
            self.public.write_text(self._gpg("--armor", "--export", email))
        except BaseException:
            self.close()  # nobody else can: the caller never gets the key
            raise

    def _gpg(self, *args: str, input: str | None = None) -> str:
        return subprocess.run(
            ["gpg", "--batch", "--quiet", *args],
            env={**os.environ, "GNUPGHOME": str(self.home)},
            input=input,
            capture_output=True,
            text=True,
            check=True,
        ).stdout

    def close(self) -> None:
        """End the gpg-agent that gpg started for this home, and wait until it has."""
        subprocess.run(
            ["gpgconf", "--kill", "all"],
            env={**os.environ, "GNUPGHOME": str(self.home)},
            capture_output=True,
            check=True,
        )
        processes_left_under(str(self.home), timeout_s=10)

    def sign(self, rpm: Path) -> Path:
        subprocess.run(
            [
                "rpmsign",
                "--addsign",
                "--define",
                f"_dbpath {self.home}/rpmdb",
                "--define",
                f"_gpg_name {self.email}",
                "--define",
                "__gpg /usr/bin/gpg",
                str(rpm),
            ],
            env={**os.environ, "GNUPGHOME": str(self.home)},
            capture_output=True,
            check=True,
        )
        return rpm


def repository(directory: Path, rpms: Sequence[Path], key: SigningKey | None = None) -> Path:
    """A dnf repository of copies of these packages, signed with ``key`` if one is given,
    indexed with createrepo_c."""
    directory.mkdir(parents=True, exist_ok=True)
    for rpm in rpms:
        copy = directory / rpm.name
        shutil.copy(rpm, copy)
        if key is not None:
            key.sign(copy)
    subprocess.run(["createrepo_c", "--quiet", str(directory)], check=True, capture_output=True)
    return directory


def build_synthetic_root(
    tree: Path,
    sh_provider: Path,
    key: SigningKey,
    served: Sequence[Path],
    unconfigured: Mapping[str, tuple[Sequence[Path], SigningKey | None]],
) -> None:
    """Fill the empty directory ``tree`` with the synthetic RPM-managed root: ``served`` signed
    with ``key`` in its configured repository, and ``unconfigured`` repositories under /srv for
    ``--repo file:///srv/NAME``."""
    subprocess.run(
        [
            "mmdebstrap",
            "--quiet",
            "--variant=minbase",
            "--include=rpm,dnf",
            "--dpkgopt=path-exclude=/usr/share/doc/*",
            "--dpkgopt=path-exclude=/usr/share/man/*",
            "--dpkgopt=path-exclude=/usr/share/locale/*",
            "bookworm",
            str(tree),
        ],
        check=True,
        capture_output=True,
    )
    (tree / "etc/os-release").unlink()
    (tree / "etc/os-release").write_text(OS_RELEASE)
    (tree / "usr/lib/os-release").unlink(missing_ok=True)
    (tree / "etc/rpm").mkdir(exist_ok=True)
    (tree / "etc/rpm/macros.dbpath").write_text("%_dbpath /var/lib/rpm\n")
    (tree / "etc/dnf/vars").mkdir(parents=True, exist_ok=True)
    (tree / "etc/dnf/vars/releasever").write_text("9\n")
    for inside, script in (
        ("usr/bin/systemctl", FAKE_SYSTEMCTL),
        ("usr/sbin/service", FAKE_SERVICE),
    ):
        path = tree / inside
        path.unlink(missing_ok=True)
        path.write_text(script)
        path.chmod(0o755)
    keys = tree / "etc/pki/rpm-gpg"
    keys.mkdir(parents=True)
    shutil.copy(key.public, keys / "RPM-GPG-KEY-synthel")
    repository(tree / "srv/repo", served, key)
    for name, (packages, signer) in unconfigured.items():
        repository(tree / "srv" / name, packages, signer)
    (tree / "etc/yum.repos.d").mkdir(exist_ok=True)
    (tree / "etc/yum.repos.d/synthel.repo").write_text(
        "[synthel]\nname=Synthetic Enterprise Linux packages\nbaseurl=file:///srv/repo\n"
        "enabled=1\ngpgcheck=1\ngpgkey=file:///etc/pki/rpm-gpg/RPM-GPG-KEY-synthel\n"
    )
    shutil.copy(sh_provider, tree / "tmp" / sh_provider.name)
    for argv in (
        ["rpm", "--initdb"],
        ["rpm", "--install", f"/tmp/{sh_provider.name}"],
        ["rpmkeys", "--import", "/etc/pki/rpm-gpg/RPM-GPG-KEY-synthel"],
    ):
        subprocess.run(["chroot", str(tree), *argv], check=True, capture_output=True)
    (tree / "tmp" / sh_provider.name).unlink()


def make_raw(tree: Path, raw: Path, size: str = "1G") -> Path:
    """A whole-disk ext4 image of ``tree``, made without a loop device or a mount."""
    subprocess.run(
        ["mkfs.ext4", "-q", "-d", str(tree), str(raw), size], check=True, capture_output=True
    )
    return raw


def rpm_query(root: Path, *args: str) -> list[str]:
    """Query the image's rpm database from the host."""
    result = subprocess.run(
        ["rpm", "--root", str(root), "--dbpath", "/var/lib/rpm", "--query", *args],
        capture_output=True,
        text=True,
        check=False,
    )
    return sorted(result.stdout.split())


def image_state(root: Path) -> dict[str, Any]:
    """What a bake may not change in the image beyond the packages it installs."""
    return {
        "shims": {inside: (root / inside).read_bytes() for inside in SHIMMED},
        "modes": {inside: (root / inside).stat().st_mode for inside in SHIMMED},
        "repo files": sorted(p.name for p in (root / "etc/yum.repos.d").iterdir()),
        "keys": sorted(p.name for p in (root / "etc/pki/rpm-gpg").iterdir()),
        "signing keys": rpm_query(root, "gpg-pubkey"),
        "dnf cache": sorted(p.name for p in (root / "var/cache/dnf").glob("*")),
        "engine dirs": (root / "var/cache/aminator-ng").exists(),
        "started": sorted(p.name for p in (root / STARTED_DIR.lstrip("/")).glob("*")),
    }
