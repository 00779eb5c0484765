"""A bake's namespaces, held by a child of the engine: the engine's own process never enters them.

``bake_namespace`` starts the holder (``aminator_ng.host.sandbox hold``), and for as long as the
context lasts every command the engine runs enters the holder's mount, PID and UTS namespaces
(see ``run.commands_entering``). The bake's mounts are made there, invisible to the host. When the
context ends, or the engine dies (SIGKILL included), the holder and its init die, the kernel ends
every process of the PID namespace, and the mounts go with the mount namespace's last process.

The engine reaches files in the namespace through ``reach``: ``/proc/ENGINE/fd/N/root/...``,
where N is a descriptor of the init's /proc directory, so the path can never lead into another
process that reused the init's pid. The same path works for the commands the engine starts.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from aminator_ng.errors import BakeError
from aminator_ng.host.run import commands_entering, helper_process

log = logging.getLogger(__name__)

#: How long the namespace's processes may take to end once the holder is gone.
END_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class BakeNamespace:
    """A running bake namespace: its init's pid, and a descriptor of its /proc directory."""

    init_pid: int
    proc_fd: int

    @property
    def proc_dir(self) -> str:
        """The init's /proc directory, as a path any process of the engine's can open."""
        return f"/proc/{os.getpid()}/fd/{self.proc_fd}"

    def reach(self, path: Path) -> Path:
        """Where the engine's process (or any command) finds ``path`` of the namespace."""
        return Path(self.proc_dir, "root", *path.parts[1:])

    def entry(self) -> list[str]:
        """The nsenter argv that enters the namespaces (the command follows ``--``), with the
        init's root directory: the engine's own, which need not be the namespace's (a chroot)."""
        return [
            "nsenter",
            f"--mount={self.proc_dir}/ns/mnt",
            f"--pid={self.proc_dir}/ns/pid",
            f"--uts={self.proc_dir}/ns/uts",
            f"--root={self.proc_dir}/root",
        ]


def sandbox_program(*args: str) -> list[str]:
    """The argv of one of ``aminator_ng.host.sandbox``'s programs, run by this interpreter."""
    return [sys.executable, "-s", "-m", "aminator_ng.host.sandbox", *args]


@contextlib.contextmanager
def bake_namespace(work_dir: Path, hostname: str = "localhost") -> Iterator[BakeNamespace]:
    """Namespaces of the bake's own for the context; every command entered into them.
    ``work_dir`` names the bake in process listings."""
    with contextlib.ExitStack() as stack:
        holder = stack.enter_context(
            helper_process(
                sandbox_program("hold", str(os.getpid()), hostname, str(work_dir)),
                what="the bake's namespace",
            )
        )
        text = holder.read_line()
        try:
            init_pid = int(text)
        except ValueError:
            raise BakeError(f"the bake's namespace did not start: it said {text!r}") from None
        proc_fd = os.open(f"/proc/{init_pid}", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        stack.callback(os.close, proc_fd)
        pidfd = os.pidfd_open(init_pid)
        stack.callback(_wait_until_ended, pidfd, init_pid)
        stack.callback(holder.end)  # first, so that the init ends before it is waited for
        namespace = BakeNamespace(init_pid, proc_fd)
        log.debug("bake namespace: init %d", init_pid)
        stack.enter_context(commands_entering(namespace.entry()))
        yield namespace


def _wait_until_ended(pidfd: int, init_pid: int) -> None:
    """After the holder ended: its init ends too (the kernel's parent-death signal), and with it
    every process of the namespace."""
    try:
        ready, _, _ = select.select([pidfd], [], [], END_TIMEOUT_S)
    finally:
        os.close(pidfd)
    if not ready:
        raise BakeError(f"the bake's namespace (init pid {init_pid}) did not end")
