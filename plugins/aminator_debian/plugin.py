"""Hook implementations of the Debian family plugin."""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from aminator_debian.apt import AptProvisioner
from aminator_debian.bootstrap import DebianBaseCreator
from aminator_debian.version import package_info
from aminator_ng.api import (
    BaseCreator,
    Chroot,
    Distro,
    EngineSettings,
    HostPackages,
    PackageInfo,
    Provisioner,
    RequestError,
    declared,
    hookimpl,
    replaced_file,
    run,
)

FAMILY = "debian"
RECOGNISED_IDS = {"debian", "ubuntu"}
#: invoke-rc.d asks this script whether to start a service; 101 means "no".
POLICY_RC_D = b"#!/bin/sh\n# Installed by aminator-ng for the bake: no service starts.\nexit 101\n"
DEB_MAGIC = b"!<arch>\ndebian-binary"
#: On a Debian or Ubuntu bake host: the package of each tool a bake or ``base create`` calls,
#: the engine's and this plugin's.
HOST_TOOL_PACKAGES = {
    "blkid": "util-linux",
    "chroot": "coreutils",
    "cp": "coreutils",
    "dpkg-deb": "dpkg",
    "dpkg-scanpackages": "dpkg-dev",
    "e2fsck": "e2fsprogs",
    "findmnt": "util-linux",
    "fstrim": "util-linux",
    "gpgv": "gpgv",
    "losetup": "mount",
    "mkfs.ext4": "e2fsprogs",
    "mkfs.xfs": "xfsprogs",
    "mmdebstrap": "mmdebstrap",
    "mount": "mount",
    "nsenter": "util-linux",
    "partx": "util-linux",
    "resize2fs": "e2fsprogs",
    "sfdisk": "fdisk",
    "sync": "coreutils",
    "xfs_growfs": "xfsprogs",
    "umount": "mount",
}


@dataclass(frozen=True)
class DebianSettings:
    """The ``[plugins.NAME]`` table of this plugin (``debian`` as it is installed)."""

    install_recommends: bool = declared(
        bool, True, "install the packages' Recommends too, as apt does by default", flag=True
    )


@hookimpl
def aminator_settings() -> type[DebianSettings]:
    return DebianSettings


@hookimpl
def aminator_host_packages(os_release: Mapping[str, str]) -> HostPackages | None:
    if not Distro.ids_of(os_release) & RECOGNISED_IDS:
        return None
    return HostPackages(HOST_TOOL_PACKAGES, "apt-get install")


@hookimpl(trylast=True)
def aminator_detect_distro(os_release: Mapping[str, str], root: Path) -> Distro | None:
    if not Distro.ids_of(os_release) & RECOGNISED_IDS:
        return None
    return Distro.from_os_release(os_release, family=FAMILY, package_format="deb")


@hookimpl
def aminator_prepare_chroot(chroot: Chroot, distro: Distro, stack: ExitStack) -> None:
    if distro.family != FAMILY:
        return
    stack.enter_context(replaced_file(chroot, "/usr/sbin/policy-rc.d", POLICY_RC_D, mode=0o755))


@hookimpl(trylast=True)
def aminator_provisioner(distro: Distro, settings: EngineSettings) -> Provisioner | None:
    if distro.package_format != "deb":
        return None
    own = settings.of(DebianSettings)
    return AptProvisioner(install_recommends=own.install_recommends)


def _is_deb(path: Path) -> bool:
    try:
        with path.open("rb") as file:
            return file.read(len(DEB_MAGIC)) == DEB_MAGIC
    except OSError:
        return False


@hookimpl
def aminator_package_file_suffixes() -> list[str]:
    return [".deb"]


@hookimpl(trylast=True)
def aminator_read_package_file(path: Path) -> PackageInfo | None:
    if not _is_deb(path):
        if path.suffix == ".deb":
            raise RequestError(
                f"not a valid .deb package: {path}", hint="the file is damaged or not a .deb"
            )
        return None
    result = run(
        ["dpkg-deb", "--show", "--showformat", "${Package}\\t${Version}\\t${Architecture}", path],
        check=False,
    )
    fields = result.stdout.split("\t")
    if result.returncode != 0 or len(fields) != 3 or not all(fields):
        raise RequestError(
            f"not a valid .deb package: {path}",
            hint=(result.stderr.strip().splitlines() or ["dpkg-deb cannot read it"])[-1],
        )
    return package_info(*fields)


@hookimpl
def aminator_base_creator() -> BaseCreator:
    return DebianBaseCreator()
