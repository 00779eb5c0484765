"""``aminate base create``: bootstrap a root with a distro plugin's base creator, lay it out as
a disk image (GPT or whole-disk, ext4 or XFS), and register it with the cloud backend."""

from __future__ import annotations

import abc
import logging
import secrets
import shutil
from collections.abc import Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aminator_ng import __version__
from aminator_ng.bakerecords import BakeRecord
from aminator_ng.cloud import CloudBackend
from aminator_ng.config import EngineSettings, Setting, made_from, settings_of
from aminator_ng.diskimage import build_disk_image, check_disk_size, required_tools
from aminator_ng.host import require_root
from aminator_ng.model import Image
from aminator_ng.namespace import bake_namespace
from aminator_ng.recovery import bake_records
from aminator_ng.run import require_tools

log = logging.getLogger(__name__)

#: What every base create runs, whichever plugin bootstraps the root.
BASE_TOOLS = ("nsenter",)


@dataclass(frozen=True)
class BootstrappedRoot:
    """What a base creator made: the base image's description and its tags."""

    description: str
    tags: Mapping[str, str] = field(default_factory=dict)


class BaseCreator(abc.ABC):
    """What a distro plugin offers ``aminate base create`` (``aminator_base_creator``): its
    options, its tools, and the bootstrap of a root tree."""

    #: What ``--distro`` names it by.
    name: str
    #: The dataclass of its options (fields made with ``declared``; each becomes a flag of
    #: ``base create``); None for none.
    options: type | None = None

    def required_tools(self) -> list[str]:
        """Host tools the bootstrap runs, checked before anything is made."""
        return []

    @abc.abstractmethod
    def bootstrap(self, target: Path, options: Any) -> BootstrappedRoot:
        """Fill the empty directory ``target`` with a root tree, as ``options`` (an instance
        of ``options``, or None) ask. Raise RequestError for options it cannot meet."""

    def option_settings(self) -> tuple[Setting, ...]:
        return settings_of(self.options) if self.options is not None else ()

    def options_from(self, given: Mapping[str, Any]) -> Any:
        """The options instance, from the flags given (by setting name), checked."""
        if self.options is None:
            return None
        checked = {
            s.name: s.check(given[s.name], s.flag_source(given[s.name]))
            for s in self.option_settings()
            if s.name in given
        }
        return made_from(self.options, checked)


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
