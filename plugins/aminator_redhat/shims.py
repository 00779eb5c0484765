"""No daemon starts during the install: ``systemctl`` and ``service`` are shimmed in the image.

An rpm scriptlet starts services with ``systemctl start`` (or ``enable --now``, ``restart``) or
with the SysV ``service`` command; no invoke-rc.d policy stands in front of either. For the
install, each of them that the image has is replaced by a script that starts and stops nothing.
Verbs that only change unit files (enable, preset, mask, ...) still reach the image's own
systemctl, copied to the chroot's private /run, so that a package's units are enabled as its
scriptlets ask. Leaving puts every original back byte for byte; a package that installed a new
systemctl or service during the bake keeps its version.
"""

from __future__ import annotations

import logging
import stat
from contextlib import ExitStack

from aminator_ng.api import Chroot, created_directories, replaced_file

log = logging.getLogger(__name__)

SYSTEMCTL_PATHS = ("/usr/bin/systemctl", "/bin/systemctl")
SERVICE_PATHS = ("/usr/sbin/service", "/sbin/service")
#: The image's own systemctl, for the verbs that only change unit files; /run is the bake's tmpfs.
REAL_SYSTEMCTL = "/run/aminator-ng/systemctl"

SYSTEMCTL_SHIM = f"""#!/bin/sh
# Installed by aminator-ng for the bake: no unit starts or stops in the image.
verb=
for arg in "$@"; do
    case "$arg" in -*) ;; *) verb=$arg; break ;; esac
done
case "$verb" in
    enable|disable|reenable|preset|preset-all|mask|unmask|link|revert|add-wants|add-requires|\\
    set-default|get-default|is-enabled|list-unit-files|cat)
        # --now would start or stop the unit as well.
        for arg in "$@"; do
            shift
            [ "$arg" = --now ] || set -- "$@" "$arg"
        done
        exec {REAL_SYSTEMCTL} "$@" ;;
    is-active|status) exit 3 ;;
    is-failed) exit 1 ;;
esac
echo "aminator-ng: not running 'systemctl $*' in the image" >&2
exit 0
""".encode()

SERVICE_SHIM = b"""#!/bin/sh
# Installed by aminator-ng for the bake: no service starts or stops in the image.
[ "$2" = status ] && exit 3
echo "aminator-ng: not running 'service $*' in the image" >&2
exit 0
"""


def _present(chroot: Chroot, candidates: tuple[str, ...]) -> list[str]:
    """The candidate paths the image has, each file once (/bin may be a link to /usr/bin)."""
    found: dict[object, str] = {}
    for inside in candidates:
        info = chroot.lstat(inside)
        if info is None or not (stat.S_ISREG(info.st_mode) or stat.S_ISLNK(info.st_mode)):
            continue
        found.setdefault((info.st_dev, info.st_ino), inside)
    return list(found.values())


def shim_service_managers(chroot: Chroot, stack: ExitStack) -> None:
    """Enter the shims on ``stack``: leaving it restores the image's files."""
    systemctls = _present(chroot, SYSTEMCTL_PATHS)
    real = next((inside for inside in systemctls if chroot.is_file(inside)), None)
    if real is not None:
        stack.enter_context(created_directories(chroot, REAL_SYSTEMCTL.rsplit("/", 1)[0]))
        stack.enter_context(
            replaced_file(chroot, REAL_SYSTEMCTL, chroot.read_bytes(real), mode=0o755)
        )
    for inside in systemctls:
        stack.enter_context(
            replaced_file(chroot, inside, SYSTEMCTL_SHIM, mode=0o755, keep_if_replaced=True)
        )
    services = _present(chroot, SERVICE_PATHS)
    for inside in services:
        stack.enter_context(
            replaced_file(chroot, inside, SERVICE_SHIM, mode=0o755, keep_if_replaced=True)
        )
    if systemctls or services:
        log.info("no service starts in the install: shimmed %s", ", ".join(systemctls + services))
