"""``aminate base create``: bootstrap a root with a distro plugin's base creator, lay it out as
a disk image (GPT or whole-disk, ext4 or XFS), and register it with the cloud backend."""

from __future__ import annotations

import logging
import secrets
import shutil
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from aminator_ng import __version__
from aminator_ng.contract.base_creator import BaseCreator
from aminator_ng.contract.cloud import CloudBackend
from aminator_ng.contract.model import Image
from aminator_ng.contract.settings import EngineSettings
from aminator_ng.host.diskimage import build_disk_image, check_disk_size, required_tools
from aminator_ng.host.namespace import bake_namespace
from aminator_ng.host.run import require_tools
from aminator_ng.pipeline.bake_records import BakeRecord
from aminator_ng.pipeline.host_seam import require_root
from aminator_ng.pipeline.recovery import bake_records

log = logging.getLogger(__name__)

#: What every base create runs, whichever plugin bootstraps the root.
BASE_TOOLS = ("nsenter",)


def _scratch_dir(settings: EngineSettings, record_id: str, stack: ExitStack) -> Path:
    """The work directory of this base create, named by its record: what ``aminate cleanup``
    removes when the command died."""
    scratch = settings.work_dir / record_id
    scratch.mkdir(parents=True, mode=0o700)
    stack.callback(shutil.rmtree, scratch, ignore_errors=True)
    return scratch


def create_base(
    creator: BaseCreator,
    cloud: CloudBackend,
    settings: EngineSettings,
    *,
    name: str,
    options: Any,
    size_bytes: int,
    layout: str = "gpt",
    filesystem: str = "ext4",
) -> Image:
    if not cloud.imports_images:
        raise cloud.import_not_supported()
    require_root("aminate base create")
    size_bytes = check_disk_size(size_bytes, layout, filesystem)
    require_tools((*BASE_TOOLS, *creator.required_tools(), *required_tools(layout, filesystem)))
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
        log.info("bootstrapping a %s root into %s", creator.name, tree)
        made = creator.bootstrap(tree, options)
        disk = scratch / "disk.raw"
        build_disk_image(tree, disk, size_bytes, layout=layout, filesystem=filesystem)
        image = cloud.import_image(
            name,
            disk,
            f"{made.description}, bootstrapped by aminator-ng",
            {
                **made.tags,
                "layout": layout,
                "filesystem": filesystem,
                "bootstrapped_by": f"aminator-ng {__version__}",
            },
        )
    log.info("registered base image %s as %s", image.image_id, image.name)
    return image
