"""``aminate base create``: bootstrap a root through a distro plugin, lay it out as a disk image
(GPT or whole-disk, ext4 or XFS), and register it with the cloud backend."""

from __future__ import annotations

import logging
import secrets
import shutil
from contextlib import ExitStack
from pathlib import Path

from aminator_ng import __version__
from aminator_ng.bakerecords import BakeRecord
from aminator_ng.cloud import CloudBackend
from aminator_ng.config import EngineSettings
from aminator_ng.diskimage import build_disk_image, check_disk_size, required_tools
from aminator_ng.errors import RequestError
from aminator_ng.host import require_root
from aminator_ng.model import Image
from aminator_ng.namespace import bake_namespace
from aminator_ng.plugin_manager import Hooks
from aminator_ng.recovery import bake_records
from aminator_ng.run import require_tools

log = logging.getLogger(__name__)

BASE_TOOLS = ("mmdebstrap", "nsenter")


def _scratch_dir(settings: EngineSettings, record_id: str, stack: ExitStack) -> Path:
    """The work directory of this base create, named by its record: what ``aminate cleanup``
    removes when the command died."""
    scratch = settings.work_dir / record_id
    scratch.mkdir(parents=True, mode=0o700)
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
    record_id = f"base-{secrets.token_hex(8)}"
    with ExitStack() as stack:
        # Recorded as a bake is: a killed base create's scratch space is cleanup's to remove.
        stack.enter_context(
            bake_records(settings).recorded(BakeRecord.of_this_process(record_id, cloud.name, None))
        )
        stack.enter_context(bake_namespace(settings.work_dir))
        scratch = _scratch_dir(settings, record_id, stack)
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
