"""``aminate shell BAKE_ID``: a shell in the chroot of what a preserved bake kept.

The kept volume is attached and mounted in namespaces of the shell's own, as a bake does, and a
shell (or the given command) runs inside the image as package scripts do; leaving it lets go of
the mount and the device and keeps the volume. The bake's record is held meanwhile, so that no
``cleanup --preserved`` releases the volume under the shell.
"""

from __future__ import annotations

from collections.abc import Sequence

from aminator_ng.contract.cloud import CloudBackend
from aminator_ng.contract.model import Volume
from aminator_ng.contract.settings import EngineSettings
from aminator_ng.errors import NotFoundError, RequestError
from aminator_ng.pipeline.host_seam import ENGINE_TOOLS, LinuxHost
from aminator_ng.pipeline.recovery import bake_records


def open_shell(
    cloud: CloudBackend, settings: EngineSettings, bake_id: str, command: Sequence[str]
) -> int:
    """Run ``command`` (a login shell if empty) in the kept volume of a preserved bake; return
    its exit status."""
    host = LinuxHost()
    host.require("aminate shell", [*ENGINE_TOOLS, *cloud.required_tools()])
    records = bake_records(settings)
    with records.held(bake_id) as record:
        if record.cloud != cloud.name:
            raise RequestError(
                f"bake {bake_id} baked on {record.cloud}",
                hint=f"run: aminate --cloud {record.cloud} shell {bake_id}",
            )
        if not record.kept_volumes:
            raise NotFoundError(f"bake {bake_id} kept no volume")
        volume = Volume(**record.kept_volumes[0])
        work_dir = settings.work_dir / f"shell-{bake_id}"
        with (
            host.namespace(work_dir),
            cloud.attached(volume, bake_id) as device,
            host.mounted_root(device, work_dir / "root") as root,
            host.chroot(root) as chroot,
        ):
            argv = list(command) or [
                "/bin/bash" if chroot.is_file("/bin/bash") else "/bin/sh",
                "-l",
            ]
            return chroot.run_attached(argv)
