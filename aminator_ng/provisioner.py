"""The interface of a provisioner: how packages get into a mounted image."""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import ClassVar

from aminator_ng.chroot import Chroot
from aminator_ng.errors import RequestError
from aminator_ng.model import ManifestEntry, PackageInfo, PackageRequest, Repository


class Provisioner(abc.ABC):
    """Installs packages into a chroot and reports what is installed there."""

    #: The name environments and logs use ("apt", "dnf").
    name: ClassVar[str]

    def required_tools(self) -> list[str]:
        """Host tools this provisioner runs, checked before a bake acquires anything."""
        return []

    def added_repositories(
        self, chroot: Chroot, repositories: Sequence[Repository]
    ) -> AbstractContextManager[None]:
        """The bake's ``--repo`` repositories known to the package manager for the context, and
        every trace of them (sources, keys, indexes, package lists) gone from the image after it.

        Entered in chroot setup, only when the bake has repositories, before ``install``; left
        in chroot teardown. A directory repository is bind-mounted read-only at ``mounted_at``
        by the engine, which removes the directories it made once the context is left. The
        default refuses repositories, so that a provisioner without support says so.
        """
        if repositories:
            raise RequestError(
                f"provisioner {self.name} cannot add repositories",
                hint="leave out --repo (and repo in [bake]), or use a provisioner that can",
            )
        return contextlib.nullcontext()

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
