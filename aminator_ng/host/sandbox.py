"""The two small programs that put a bake's work into namespaces of its own.

``python -m aminator_ng.host.sandbox hold ENGINE_PID HOSTNAME LABEL`` holds a bake's namespaces: a
private mount namespace (the bake's mounts, invisible to the host), a PID namespace whose init
it forks (every command of the bake enters it, so all of them die with it) and a UTS namespace.
It prints the init's pid and lives until its stdin closes (LABEL, the bake's work directory, is
there for process listings only); the kernel ends it and its init when the engine dies, SIGKILL
included (PR_SET_PDEATHSIG), and with the init every process of the namespace.

``python -m aminator_ng.host.sandbox image [--attached] ROOT HOSTNAME -- COMMAND...`` runs one
command inside an image: in new mount, PID, UTS and IPC namespaces, chrooted into ROOT, with the
image's hostname and a /proc of its own PID namespace whose init is the command itself. So a
package script sees only the image's processes (none rooted on the host), and whatever it leaves
running, or mounted, ends with the command; a SIGTERM, SIGINT or SIGHUP to the program ends
the command's whole namespace, and so does its death (the command dies with it). /proc/sys
and /proc/sysrq-trigger are read-only.
Its stdin is the image's /dev/null; with ``--attached`` (``aminate shell``) the caller's own.

Only the standard library and ``aminator_ng.host.syscalls`` are imported: the image program starts
once per command.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import signal
import sys
from collections.abc import Sequence

from aminator_ng.host import syscalls

#: /proc entries that change the host's kernel, made read-only inside the image.
READ_ONLY_PROC = ("/proc/sys", "/proc/sysrq-trigger")
#: How often the bake's init looks for orphans to reap when no SIGCHLD came.
REAP_INTERVAL_S = 5.0


#: Directories any root has, to step out of a chroot through (see ``make_namespace_private``).
STEP_OUT_THROUGH = ("/proc", "/dev", "/sys", "/tmp")


def _make_private(path: str) -> None:
    syscalls.mount(None, path, None, syscalls.MS_REC | syscalls.MS_PRIVATE)


def make_namespace_private() -> None:
    """Make every mount of this (new) mount namespace private, so that nothing mounted from now
    on propagates back to the namespace it was copied from.

    When the engine itself runs in a chroot whose root is not a mount point (a fresh root to
    test a bake host in, say), "/" cannot be named as a mount: the holder steps out to the
    namespace's own root, makes everything private there, and steps back into the chroot. It
    does this once, before anything of the bake runs.
    """
    try:
        _make_private("/")
        return
    except OSError as error:
        if error.errno != errno.EINVAL:
            raise
    from pathlib import Path  # here: the image program, started for every command, never needs it

    def identity(path: Path) -> tuple[int, int]:
        found = path.stat()
        return found.st_dev, found.st_ino

    chroot_fd = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.chdir("/")
        os.chroot(next(path for path in STEP_OUT_THROUGH if Path(path).is_dir()))
        # The working directory is outside the new root now: ".." climbs to the namespace's.
        while identity(Path()) != identity(Path("..")):
            os.chdir("..")
        os.chroot(".")
        _make_private("/")
        os.fchdir(chroot_fd)
        os.chroot(".")
        os.chdir("/")
    finally:
        os.close(chroot_fd)


def _reap_forever() -> None:
    """The bake's init: reap the orphans the namespace's processes leave, until killed."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD})
    while True:
        try:
            while os.waitpid(-1, os.WNOHANG) != (0, 0):
                pass
        except ChildProcessError:
            pass
        signal.sigtimedwait({signal.SIGCHLD}, REAP_INTERVAL_S)


def hold(engine_pid: int, hostname: str) -> int:
    syscalls.die_with_parent()
    if os.getppid() != engine_pid:  # the engine died before the line above
        return 1
    syscalls.unshare(syscalls.CLONE_NEWNS | syscalls.CLONE_NEWPID | syscalls.CLONE_NEWUTS)
    make_namespace_private()
    syscalls.sethostname(hostname)
    # The holder keeps the lifeline's write end (and never writes): the init sees it close if
    # the holder died before the init could ask to die with it. The init says it is ready, so
    # that the holder never ends before that either.
    lifeline, lifeline_end = os.pipe()
    ready_end, ready = os.pipe()
    init = os.fork()
    if init == 0:
        try:
            syscalls.die_with_parent()
            os.close(lifeline_end)
            if select.select([lifeline], [], [], 0)[0]:
                os._exit(1)
            os.write(ready, b"+")
            null = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(null, fd)
            os.closerange(3, os.sysconf("SC_OPEN_MAX"))
            _reap_forever()
        finally:
            os._exit(1)
    os.close(ready)
    if os.read(ready_end, 1) != b"+":
        return 1
    print(init, flush=True)
    sys.stdin.read()  # until the engine closes it, or dies
    return 0


def _read_only_proc() -> None:
    for entry in READ_ONLY_PROC:
        try:
            syscalls.mount(entry, entry, None, syscalls.MS_BIND | syscalls.MS_REC)
            syscalls.mount(
                None,
                entry,
                None,
                syscalls.MS_BIND
                | syscalls.MS_REMOUNT
                | syscalls.MS_RDONLY
                | syscalls.MS_NOSUID
                | syscalls.MS_NODEV
                | syscalls.MS_NOEXEC,
            )
        except FileNotFoundError:
            continue


def _exec_in_image(root: str, command: Sequence[str], attached: bool) -> None:
    """In the child, pid 1 of the new PID namespace: become ``command`` inside the image."""
    syscalls.die_with_parent()
    os.chroot(root)
    os.chdir("/")
    try:
        syscalls.mount(
            "proc",
            "/proc",
            "proc",
            syscalls.MS_NOSUID | syscalls.MS_NODEV | syscalls.MS_NOEXEC,
        )
    except FileNotFoundError:  # an image without /proc: its commands go without
        pass
    else:
        _read_only_proc()
    # stdin from the image's own /dev/null: no descriptor of a host file reaches the image
    # (but the operator's terminal, for ``aminate shell``).
    if not attached:
        with contextlib.suppress(OSError):
            null = os.open("/dev/null", os.O_RDWR)
            os.dup2(null, 0)
    os.closerange(3, os.sysconf("SC_OPEN_MAX"))
    os.execvpe(command[0], list(command), os.environ)


def image(root: str, hostname: str, command: Sequence[str], *, attached: bool = False) -> int:
    flags = (
        syscalls.CLONE_NEWNS | syscalls.CLONE_NEWPID | syscalls.CLONE_NEWUTS | syscalls.CLONE_NEWIPC
    )
    syscalls.unshare(flags)
    # Nothing the command mounts propagates back: it mounts below the image root only.
    try:
        _make_private("/")
    except OSError as error:  # a root that is not a mount point (see make_namespace_private)
        if error.errno != errno.EINVAL:
            raise
        _make_private(root)
    syscalls.sethostname(hostname)
    child = os.fork()
    if child == 0:
        try:
            _exec_in_image(root, command, attached)
        except OSError as error:
            print(
                f"aminator-ng: cannot run {command[0]} in the image: {error.strerror}",
                file=sys.stderr,
                flush=True,
            )
            os._exit(127 if error.errno == errno.ENOENT else 126)
        os._exit(126)

    # The engine ends a command with SIGTERM (a terminal, with SIGINT or SIGHUP): its namespace
    # ends with it, every process of it. The parent-death signal is not enough for that: a
    # command that changes its credentials loses it (apt-get does), and outlives this process.
    def end_namespace(signum: int, frame: object) -> None:
        os.kill(child, signal.SIGKILL)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, end_namespace)
    _, status = os.waitpid(child, 0)
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


def main(argv: Sequence[str]) -> int:
    match list(argv):
        case ["hold", engine_pid, hostname, _label]:
            return hold(int(engine_pid), hostname)
        case ["image", root, hostname, "--", *command] if command:
            return image(root, hostname, command)
        case ["image", "--attached", root, hostname, "--", *command] if command:
            return image(root, hostname, command, attached=True)
    print(
        "usage: python -m aminator_ng.host.sandbox hold ENGINE_PID HOSTNAME LABEL\n"
        "       python -m aminator_ng.host.sandbox image [--attached] ROOT HOSTNAME -- COMMAND...",
        file=sys.stderr,
    )
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
