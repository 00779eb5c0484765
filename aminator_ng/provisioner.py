"""The interface of a provisioner: how packages get into a mounted image."""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import ClassVar

from aminator_ng.chroot import Chroot
from aminator_ng.model import ManifestEntry, PackageInfo, PackageRequest


class Provisioner(abc.ABC):
    """Installs packages into a chroot and reports what is installed there."""

    #: The name environments and logs use ("apt", "dnf").
    name: ClassVar[str]

    def required_tools(self) -> list[str]:
        """Host tools this provisioner runs, checked before a bake acquires anything."""
        return []

    @abc.abstractmethod
    def install(self, chroot: Chroot, packages: Sequence[PackageRequest]) -> None:
        """Install package files and names in one transaction, dependencies included.

        Raise RequestError (exit 2) for a package the repositories do not have or whose
        dependencies cannot be met, and BakeError (exit 1) when the install itself fails
        (a failing maintainer script), naming the package.
        """

    @abc.abstractmethod
    def query(self, chroot: Chroot, names: Sequence[str]) -> list[PackageInfo]:
        """The installed packages of these names, from the image's package database."""

    @abc.abstractmethod
    def manifest(self, chroot: Chroot) -> list[ManifestEntry]:
        """Every package installed in the image."""
