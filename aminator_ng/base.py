"""``aminate base create``: bootstrap a root through a distro plugin, lay it out as a disk image
(GPT or whole-disk, ext4 or XFS), and register it with the cloud backend."""

from __future__ import annotations

import logging
import shutil
import tempfile
from contextlib import ExitStack
from pathlib import Path

from aminator_ng import __version__
from aminator_ng.cloud import CloudBackend
from aminator_ng.config import EngineSettings
from aminator_ng.diskimage import build_disk_image, check_disk_size, required_tools
from aminator_ng.errors import RequestError
from aminator_ng.host import require_root
from aminator_ng.model import Image
from aminator_ng.namespace import bake_namespace
from aminator_ng.plugin_manager import Hooks
from aminator_ng.run import require_tools

log = logging.getLogger(__name__)

BASE_TOOLS = ("mmdebstrap", "nsenter")


def _scratch_dir(settings: EngineSettings, stack: ExitStack) -> Path:
    settings.work_dir.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="base-", dir=settings.work_dir))
    stack.callback(shutil.rmtree, scratch, ignore_errors=True)
    return scratch


def create_base(
    hooks: Hooks,
    cloud: CloudBackend,
    settings: EngineSettings,
    *,
    name: str,
    suite: str,
    mirror: str | None,
    security_mirror: str | None,
    size_bytes: int,
    include: list[str],
    layout: str = "gpt",
    filesystem: str = "ext4",
) -> Image:
    if not cloud.imports_images:
        raise cloud.import_not_supported()
    require_root("aminate base create")
    size_bytes = check_disk_size(size_bytes, layout, filesystem)
    require_tools((*BASE_TOOLS, *required_tools(layout, filesystem)))
    cloud.check_name_available(name)
    # The bootstrap's mounts and processes live in namespaces of their own (hostname localhost)
    # and die with the engine.
    with ExitStack() as stack:
        stack.enter_context(bake_namespace(settings.work_dir))
        scratch = _scratch_dir(settings, stack)
        tree = scratch / "root"
        tree.mkdir()
        log.info("bootstrapping %s into %s", suite, tree)
        if not hooks.bootstrap_root(tree, suite, mirror, security_mirror, include):
            raise RequestError(
                f"no plugin can bootstrap suite {suite}",
                hint="the Debian plugin knows bookworm, trixie, bullseye, buster, forky and sid",
            )
        disk = scratch / "disk.raw"
        build_disk_image(tree, disk, size_bytes, layout=layout, filesystem=filesystem)
        image = cloud.import_image(
            name,
            disk,
            f"{suite} base, bootstrapped by aminator-ng",
            {
                "suite": suite,
                "layout": layout,
                "filesystem": filesystem,
                "bootstrapped_by": f"aminator-ng {__version__}",
            },
        )
    log.info("registered base image %s as %s", image.image_id, image.name)
    return image
