"""Debian version strings: ``[epoch:]upstream[-revision]`` (deb-version(7))."""

from __future__ import annotations

from aminator_ng.api import PackageInfo


def split_version(full: str) -> tuple[str, str, str]:
    """(epoch, upstream version, revision); the revision is what follows the last ``-``."""
    epoch, sep, rest = full.partition(":")
    if not sep:
        epoch, rest = "", full
    upstream, sep, revision = rest.rpartition("-")
    if not sep:
        return epoch, rest, ""
    return epoch, upstream, revision


def package_info(name: str, full_version: str, arch: str) -> PackageInfo:
    epoch, version, release = split_version(full_version)
    return PackageInfo(name=name, version=version, release=release, arch=arch, epoch=epoch)
