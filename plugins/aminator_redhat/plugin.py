"""Hook implementations of the RPM family plugin."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from aminator_ng.api import (
    Chroot,
    Distro,
    EngineSettings,
    HostPackages,
    PackageInfo,
    Provisioner,
    RequestError,
    declared,
    hookimpl,
    resolve_in_root,
)
from aminator_redhat.dnf import DnfProvisioner
from aminator_redhat.rpmdb import is_rpm_file, read_rpm_file
from aminator_redhat.shims import shim_service_managers

FAMILY = "redhat"
RECOGNISED_IDS = {"rhel", "fedora", "centos", "amzn", "rocky", "almalinux"}
DNF_PATHS = ("/usr/bin/dnf", "/usr/bin/dnf-3", "/usr/bin/dnf5")
YUM_PATHS = ("/usr/bin/yum",)
#: The packages of this plugin's tools: on a Debian or Ubuntu bake host, and on one of its own
#: family (with the engine's tools there too).
TOOLS_ON_DEBIAN_HOSTS = {"rpm": "rpm", "createrepo_c": "createrepo-c"}
HOST_TOOL_PACKAGES = {
    "blkid": "util-linux",
    "chroot": "coreutils",
    "cp": "coreutils",
    "createrepo_c": "createrepo_c",
    "e2fsck": "e2fsprogs",
    "findmnt": "util-linux",
    "fstrim": "util-linux",
    "gpgv": "gnupg2",
    "losetup": "util-linux",
    "mkfs.ext4": "e2fsprogs",
    "mkfs.xfs": "xfsprogs",
    "mount": "util-linux",
    "nsenter": "util-linux",
    "partx": "util-linux",
    "resize2fs": "e2fsprogs",
    "rpm": "rpm",
    "sfdisk": "util-linux",
    "sync": "coreutils",
    "xfs_growfs": "xfsprogs",
    "umount": "util-linux",
}
DNF_RELEASES = "Amazon Linux 2023, RHEL, Rocky or AlmaLinux 8 or later, CentOS Stream, Fedora"


@dataclass(frozen=True)
class RedHatSettings:
    """The ``[plugins.NAME]`` table of this plugin (``redhat`` as it is installed)."""

    gpgcheck: bool = declared(
        bool,
        True,
        "check package signatures (off only knowingly: the image is tagged gpgcheck=off)",
        flag=True,
    )


@hookimpl
def aminator_settings() -> type[RedHatSettings]:
    return RedHatSettings


@hookimpl
def aminator_host_packages(os_release: Mapping[str, str]) -> HostPackages | None:
    ids = Distro.ids_of(os_release)
    if ids & {"debian", "ubuntu"}:
        return HostPackages(TOOLS_ON_DEBIAN_HOSTS)
    if ids & RECOGNISED_IDS:
        return HostPackages(HOST_TOOL_PACKAGES, "dnf install")
    return None


def _has_any(root: Path, candidates: Sequence[str]) -> bool:
    return any(resolve_in_root(root, inside).is_file() for inside in candidates)


@hookimpl(trylast=True)
def aminator_detect_distro(os_release: Mapping[str, str], root: Path) -> Distro | None:
    if not Distro.ids_of(os_release) & RECOGNISED_IDS:
        return None
    described = os_release.get("PRETTY_NAME") or os_release.get("ID", "")
    if not _has_any(root, DNF_PATHS):
        if _has_any(root, YUM_PATHS):
            raise RequestError(
                f"the base image ({described}) installs with yum only: yum-only releases "
                "(Amazon Linux 2, RHEL 7, CentOS 7) are past end of support, and aminator-ng "
                "installs with dnf",
                hint=f"bake from a dnf release: {DNF_RELEASES}",
            )
        raise RequestError(
            f"the base image ({described}) has no dnf to install with",
            hint=f"bake from a base image that has dnf: {DNF_RELEASES}",
        )
    return Distro.from_os_release(os_release, family=FAMILY, package_format="rpm")


@hookimpl
def aminator_prepare_chroot(chroot: Chroot, distro: Distro, stack: ExitStack) -> None:
    if distro.family != FAMILY:
        return
    shim_service_managers(chroot, stack)


@hookimpl(trylast=True)
def aminator_provisioner(distro: Distro, settings: EngineSettings) -> Provisioner | None:
    if distro.package_format != "rpm":
        return None
    return DnfProvisioner(gpgcheck=settings.of(RedHatSettings).gpgcheck)


@hookimpl
def aminator_package_file_suffixes() -> list[str]:
    return [".rpm"]


@hookimpl(trylast=True)
def aminator_read_package_file(path: Path) -> PackageInfo | None:
    if not is_rpm_file(path):
        if path.suffix == ".rpm":
            raise RequestError(
                f"not a valid .rpm package: {path}", hint="the file is damaged or not an .rpm"
            )
        return None
    return read_rpm_file(path)
