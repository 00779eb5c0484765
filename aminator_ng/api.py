"""The one module plugins import: what the engine promises to plugin authors.

Everything a plugin may use is re-exported here; the rest of ``aminator_ng`` is private and may
change without notice. ``API_VERSION`` follows semantic versioning: a plugin can check the major
number it was written for.
"""

from __future__ import annotations

from aminator_ng.contract.base_creator import BaseCreator, BootstrappedRoot
from aminator_ng.contract.cloud import CloudBackend, Leftover, NotSupportedError
from aminator_ng.contract.hookspecs import hookimpl
from aminator_ng.contract.model import (
    BakeFacts,
    Distro,
    HygieneOutcome,
    Image,
    ImageSpec,
    ManifestEntry,
    PackageCacheLayout,
    PackageInfo,
    PackageRequest,
    Repository,
    SbomPackage,
    ShippedFile,
    Snapshot,
    Volume,
)
from aminator_ng.contract.provisioner import Provisioner, staged_package_files
from aminator_ng.contract.request import BakeRequest
from aminator_ng.contract.settings import EngineSettings, Flag, Setting, declared, parse_duration
from aminator_ng.errors import (
    AminatorError,
    BakeError,
    BakeTimeoutError,
    CleanupError,
    CloudError,
    CommandError,
    ConfigError,
    ConflictError,
    HostError,
    ImageKeptError,
    NotFoundError,
    RequestError,
)
from aminator_ng.host.blockdev import (
    Filesystem,
    backing_file,
    detach_loop_device,
    find_root_filesystem,
    loop_device,
    loop_devices_over,
    partition_nodes,
    probe,
)
from aminator_ng.host.chroot import (
    Chroot,
    check_unchanged,
    created_directories,
    replaced_file,
    resolve_in_root,
)
from aminator_ng.host.durable import partial_path, sync_file, write_whole
from aminator_ng.host.imagefs import ImagePathError
from aminator_ng.host.locks import LockHeldError, file_lock
from aminator_ng.host.run import Completed, HostPackages, find_tool, run

API_VERSION = "2.1"

__all__ = [
    "API_VERSION",
    "AminatorError",
    "BakeError",
    "BakeFacts",
    "BakeRequest",
    "BakeTimeoutError",
    "BaseCreator",
    "BootstrappedRoot",
    "Chroot",
    "CleanupError",
    "CloudBackend",
    "CloudError",
    "CommandError",
    "Completed",
    "ConfigError",
    "ConflictError",
    "Distro",
    "EngineSettings",
    "Filesystem",
    "Flag",
    "HostError",
    "HostPackages",
    "HygieneOutcome",
    "Image",
    "ImageKeptError",
    "ImagePathError",
    "ImageSpec",
    "Leftover",
    "LockHeldError",
    "ManifestEntry",
    "NotFoundError",
    "NotSupportedError",
    "PackageCacheLayout",
    "PackageInfo",
    "PackageRequest",
    "Provisioner",
    "Repository",
    "RequestError",
    "SbomPackage",
    "Setting",
    "ShippedFile",
    "Snapshot",
    "Volume",
    "backing_file",
    "check_unchanged",
    "created_directories",
    "declared",
    "detach_loop_device",
    "file_lock",
    "find_root_filesystem",
    "find_tool",
    "hookimpl",
    "loop_device",
    "loop_devices_over",
    "parse_duration",
    "partial_path",
    "partition_nodes",
    "probe",
    "replaced_file",
    "resolve_in_root",
    "run",
    "staged_package_files",
    "sync_file",
    "write_whole",
]
