"""Hook implementations of the local backend."""

from __future__ import annotations

from aminator_local.backend import LocalCloud
from aminator_ng.api import CloudBackend, EngineSettings, hookimpl


@hookimpl(trylast=True)
def aminator_cloud_backend(name: str, settings: EngineSettings) -> CloudBackend | None:
    return LocalCloud(settings) if name == LocalCloud.name else None
