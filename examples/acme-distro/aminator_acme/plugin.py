"""Hook implementations of the acme plugin: it recognises Acme Linux, prepares its chroot,
reads .acme.tar files and provisions them."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from aminator_acme.package import SUFFIX, is_acme_package, read_package_info
from aminator_acme.provisioner import AcmeProvisioner
from aminator_ng.api import (
    API_VERSION,
    BakeError,
    Chroot,
    Distro,
    EngineSettings,
    PackageInfo,
    Provisioner,
    declared,
    hookimpl,
    replaced_file,
)

#: The plugin API this plugin is written for: the same major version, this minor or a later one.
REQUIRED_API = (2, 0)


def api_fits(version: str, required: tuple[int, int]) -> bool:
    major, minor = (int(part) for part in version.split(".")[:2])
    return major == required[0] and minor >= required[1]


if not api_fits(API_VERSION, REQUIRED_API):
    raise ImportError(f"aminator-acme needs plugin API 2.0 or a later 2.x, not {API_VERSION}")

FAMILY = "acme"
#: Present inside the image while it is being baked, so that package scripts can tell.
BAKING_MARKER = "/etc/acme/baking"


@dataclass(frozen=True)
class AcmeSettings:
    """This plugin's [plugins.NAME] table, NAME being whatever it is installed as (acme)."""

    motd: str | None = declared(str, None, "text written to /etc/motd of the image", flag=True)


@hookimpl
def aminator_settings() -> type[AcmeSettings]:
    return AcmeSettings


@hookimpl
def aminator_detect_distro(os_release: Mapping[str, str], root: Path) -> Distro | None:
    ids = {os_release.get("ID", "")} | set(os_release.get("ID_LIKE", "").split())
    if FAMILY not in ids:
        return None  # not mine: ask the next plugin
    return Distro(
        family=FAMILY,
        os_id=os_release.get("ID", ""),
        version_id=os_release.get("VERSION_ID", ""),
        pretty_name=os_release.get("PRETTY_NAME", "Acme Linux"),
        package_format="acme-tar",
    )


@contextlib.contextmanager
def directory(chroot: Chroot, inside: str) -> Iterator[None]:
    """A directory inside the image for the context; removed again if this created it and it
    is still empty."""
    if chroot.exists(inside) and not chroot.is_dir(inside):
        raise BakeError(f"{inside} in the image is not a directory")
    created = not chroot.exists(inside)
    if created:
        chroot.make_directory(inside)
    try:
        yield
    finally:
        if created:
            with contextlib.suppress(OSError):
                chroot.remove_directory(inside)


@hookimpl
def aminator_prepare_chroot(chroot: Chroot, distro: Distro, stack: ExitStack) -> None:
    if distro.family != FAMILY:
        return  # every plugin's implementation is called: leave other families alone
    stack.enter_context(directory(chroot, "/etc/acme"))
    stack.enter_context(replaced_file(chroot, BAKING_MARKER, b"aminator-ng\n", mode=0o644))


@hookimpl
def aminator_provisioner(distro: Distro, settings: EngineSettings) -> Provisioner | None:
    if distro.family != FAMILY:
        return None
    return AcmeProvisioner(motd=settings.of(AcmeSettings).motd)


@hookimpl
def aminator_package_file_suffixes() -> list[str]:
    return [SUFFIX]


@hookimpl
def aminator_read_package_file(path: Path) -> PackageInfo | None:
    if not is_acme_package(path):
        return None  # not mine
    return read_package_info(path)
