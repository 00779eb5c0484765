"""What the host holds that a test may have left, read from /proc and /sys, and its last-resort
release: processes whose root, working directory or command line lies under (or mentions) a
directory, mounts under it in every mount namespace on the machine, and loop devices over files
under it. Only what lies under the given directory is ever touched: other work on the machine
holds processes, mounts and loop devices of its own."""

from __future__ import annotations

import contextlib
import os
import re
import select
import shlex
import signal
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

_OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")
#: Characters that continue a file name: ``/tmp/x/test_a1`` does not mention ``/tmp/x/test_a``.
_NAME_CHARACTER = re.compile(r"[\w.~-]")
#: How long killed processes get to end, how often mounts are read again while releasing, and
#: how long a loop device gets to detach once its last user is gone.
_KILL_TIMEOUT_S = 10.0
_UNMOUNT_PASSES = 5
_DETACH_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Host:
    """Where the kernel's views are read: the real ones, or a tree a unit test made."""

    proc: Path = Path("/proc")
    sys_block: Path = Path("/sys/block")
    #: The process whose own mount namespace is "ours"; it and its ancestors are never held.
    own_pid: int = field(default_factory=os.getpid)


@dataclass(frozen=True)
class Process:
    pid: int
    ppid: int
    state: str
    name: str
    #: Since boot, in clock ticks: tells a process from a later one given the same pid.
    start_time: int
    argv: tuple[str, ...] = ()
    root: str | None = None
    cwd: str | None = None
    #: The inode of its mount namespace, None when unreadable.
    mount_namespace: int | None = None

    @property
    def command(self) -> str:
        text = shlex.join(self.argv) if self.argv else f"[{self.name}]"
        return text if len(text) <= 200 else text[:197] + "..."

    def ties_to(self, root: str) -> list[str]:
        """How this process holds ``root``: through its root, its working directory, its argv."""
        ties = []
        if self.root is not None and lies_under(self.root, root):
            ties.append("root")
        if self.cwd is not None and lies_under(self.cwd, root):
            ties.append("cwd")
        if any(mentions(argument, root) for argument in self.argv):
            ties.append("command line")
        return ties

    def describe(self, root: str) -> str:
        return f"process {self.pid} ({', '.join(self.ties_to(root))}): {self.command}"


@dataclass(frozen=True)
class Mount:
    #: As the namespace's own processes name it (a chrooted reader's root prefixed).
    target: str
    namespace: int
    #: The process it was read through, and through which its namespace is entered.
    reader: Process
    in_own_namespace: bool

    def describe(self) -> str:
        if self.in_own_namespace:
            return f"mount {self.target}"
        return (
            f"mount {self.target} in mount namespace mnt:[{self.namespace}] "
            f"of process {self.reader.pid}: {self.reader.command}"
        )


def lies_under(path: str, root: str) -> bool:
    """Whether ``path`` is ``root`` or below it, also when named from another mount namespace's
    root: the kernel names a root or working directory in another namespace from that
    namespace's own root, so when the tests run in a chroot (a fresh root to test in) such a
    path carries the chroot's location in front."""
    root = root.rstrip("/")
    start = path.find(root)
    while start != -1:
        rest = path[start + len(root) :]
        if rest == "" or rest.startswith("/"):
            return True
        start = path.find(root, start + 1)
    return False


def mentions(text: str, root: str) -> bool:
    """Whether ``text`` (an argument, say ``--homedir=/tmp/x/gnupg``) names ``root`` or a path
    under it, as a whole path and not as the start of a longer name."""
    root = root.rstrip("/")
    start = text.find(root)
    while start != -1:
        end = start + len(root)
        starts_a_name = start == 0 or not _NAME_CHARACTER.fullmatch(text[start - 1])
        ends_a_name = end == len(text) or not _NAME_CHARACTER.fullmatch(text[end])
        if starts_a_name and ends_a_name:
            return True
        start = text.find(root, start + 1)
    return False


def decode_mountinfo_field(text: str) -> str:
    """The kernel writes space, tab, newline and backslash in paths as octal escapes."""
    return _OCTAL_ESCAPE.sub(lambda match: chr(int(match.group(1), 8)), text)


def mount_point(mountinfo_line: str) -> str:
    """The mount point, the fifth field of a line of /proc/PID/mountinfo."""
    return decode_mountinfo_field(mountinfo_line.split(" ")[4])


def parse_stat(text: str) -> tuple[str, str, int, int]:
    """(name, state, ppid, start time) from /proc/PID/stat; the name may hold spaces and ')'."""
    name = text[text.index("(") + 1 : text.rindex(")")]
    fields = text[text.rindex(")") + 2 :].split()
    # After the name: state, ppid, ...; the start time is field 22 of the whole line.
    return name, fields[0], int(fields[1]), int(fields[19])


def _readlink(path: Path) -> str | None:
    try:
        return os.readlink(path)
    except OSError:
        return None


def _namespace_inode(link: str | None) -> int | None:
    """``mnt:[4026531841]`` -> 4026531841."""
    if link is None or not link.startswith("mnt:["):
        return None
    return int(link.removeprefix("mnt:[").removesuffix("]"))


def read_process(directory: Path) -> Process | None:
    """A process as /proc shows it; None when it is gone (or is not a process directory)."""
    try:
        name, state, ppid, start_time = parse_stat((directory / "stat").read_text())
        argv = (directory / "cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError, IndexError):
        return None
    return Process(
        pid=int(directory.name),
        ppid=ppid,
        state=state,
        name=name,
        start_time=start_time,
        argv=tuple(os.fsdecode(argument) for argument in argv if argument),
        root=_readlink(directory / "root"),
        cwd=_readlink(directory / "cwd"),
        mount_namespace=_namespace_inode(_readlink(directory / "ns" / "mnt")),
    )


def read_processes(host: Host) -> list[Process]:
    """Every process that runs; zombies (and dead ones) hold nothing any more."""
    processes = []
    for directory in host.proc.iterdir():
        if directory.name.isdigit():
            process = read_process(directory)
            if process is not None and process.state not in ("Z", "X"):
                processes.append(process)
    return processes


def lineage(processes: Iterable[Process], pid: int) -> set[int]:
    """``pid`` and its ancestors: the test run itself, which is never a leftover."""
    parents = {process.pid: process.ppid for process in processes}
    found = set()
    while pid > 0 and pid not in found:
        found.add(pid)
        pid = parents.get(pid, 0)
    return found


def choose_processes_under(processes: Iterable[Process], root: str, own_pid: int) -> list[Process]:
    processes = list(processes)
    spared = lineage(processes, own_pid)
    return [p for p in processes if p.pid not in spared and p.ties_to(root)]


def processes_under(root: str, host: Host | None = None) -> list[Process]:
    """Processes whose root or working directory lies under ``root`` or whose argv mentions it."""
    host = host or Host()
    return choose_processes_under(read_processes(host), root, host.own_pid)


def processes_left_under(root: str, timeout_s: float) -> list[Process]:
    """The processes tied to ``root`` that have not ended within ``timeout_s``: a daemon told to
    stop (``gpgconf --kill`` returns before the agent has exited) takes a moment to end."""
    deadline = time.monotonic() + timeout_s
    while (left := processes_under(root)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def processes_rooted_under(root: str, host: Host | None = None) -> list[int]:
    """Pids of the processes chrooted under ``root`` (a package script in an image, say)."""
    host = host or Host()
    return [
        process.pid
        for process in read_processes(host)
        if process.root is not None and lies_under(process.root, root)
    ]


def namespace_readers(processes: Iterable[Process]) -> dict[int, Process]:
    """One process per mount namespace to read its mount table through. A chrooted process
    shows only the mounts under its root, so one whose root is / is chosen where there is one."""
    readers: dict[int, Process] = {}
    for process in processes:
        if process.mount_namespace is None:
            continue
        chosen = readers.get(process.mount_namespace)
        if chosen is None or (chosen.root != "/" and process.root == "/"):
            readers[process.mount_namespace] = process
    return readers


def seen_from_namespace_root(reader_root: str | None, target: str) -> str:
    """A chrooted process's mountinfo names mount points from its root: name them from the
    namespace's root, as ``nsenter --mount`` and the other processes there see them."""
    if reader_root in (None, "/"):
        return target
    return reader_root.rstrip("/") + ("" if target == "/" else target)


def read_mounts(host: Host | None = None, processes: list[Process] | None = None) -> list[Mount]:
    """Every mount of every mount namespace on the machine, read once per namespace."""
    host = host or Host()
    if processes is None:
        processes = read_processes(host)
    own = next((p for p in processes if p.pid == host.own_pid), None)
    own_namespace = own.mount_namespace if own is not None else None
    mounts = []
    for namespace, reader in namespace_readers(processes).items():
        try:
            lines = (host.proc / str(reader.pid) / "mountinfo").read_text().splitlines()
        except OSError:
            continue  # ended since
        for line in lines:
            mounts.append(
                Mount(
                    target=seen_from_namespace_root(reader.root, mount_point(line)),
                    namespace=namespace,
                    reader=reader,
                    in_own_namespace=namespace == own_namespace,
                )
            )
    return mounts


def mount_targets(host: Host | None = None) -> list[str]:
    """The mount points of every mount namespace on the machine."""
    return [mount.target for mount in read_mounts(host)]


def loop_devices(host: Host | None = None) -> list[tuple[str, str]]:
    """(device, backing file) of every attached loop device."""
    host = host or Host()
    pairs = []
    for backing_file in sorted(host.sys_block.glob("loop*/loop/backing_file")):
        with contextlib.suppress(OSError):
            backing = backing_file.read_text().strip().removesuffix(" (deleted)")
            pairs.append((f"/dev/{backing_file.parent.parent.name}", backing))
    return pairs


def held_under(root: str, host: Host | None = None) -> list[str]:
    """Every process, mount (in any mount namespace) and loop device under ``root``, named."""
    host = host or Host()
    processes = read_processes(host)
    return (
        [p.describe(root) for p in choose_processes_under(processes, root, host.own_pid)]
        + [m.describe() for m in read_mounts(host, processes) if lies_under(m.target, root)]
        + [
            f"{device} over {backing}"
            for device, backing in loop_devices(host)
            if lies_under(backing, root)
        ]
    )


def kill_and_wait(processes: Iterable[Process], timeout_s: float = _KILL_TIMEOUT_S) -> None:
    """SIGKILL each process, through a pidfd checked to be that process and not a later one
    given its pid, and wait until each has ended."""
    pidfds = []
    for process in processes:
        try:
            pidfd = os.pidfd_open(process.pid)
        except OSError:
            continue  # ended already
        now = read_process(Path("/proc") / str(process.pid))
        if now is None or now.start_time != process.start_time:
            os.close(pidfd)
            continue
        with contextlib.suppress(ProcessLookupError):
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        pidfds.append(pidfd)
    deadline = time.monotonic() + timeout_s
    try:
        for pidfd in pidfds:
            # A pidfd turns readable when its process has ended.
            select.select([pidfd], [], [], max(0.0, deadline - time.monotonic()))
    finally:
        for pidfd in pidfds:
            os.close(pidfd)


def unmount(mount: Mount) -> None:
    if mount.in_own_namespace:
        command = ["umount", "--lazy", mount.target]
    else:
        # Entering the namespace sets the root to the namespace's own, where the target is named.
        command = ["nsenter", "--target", str(mount.reader.pid), "--mount"]
        command += ["umount", "--lazy", mount.target]
    subprocess.run(command, check=False, capture_output=True)


def release_everything_under(root: str) -> None:
    """Last-resort release after a failed test, so that one failure does not leak into others.

    Processes tied to ``root`` are killed first (a namespace they alone held ends with them).
    Mounts left under ``root`` in another namespace are unmounted inside it, never by killing
    the namespace's processes: that namespace may be another bake's, holding a copy of a mount
    that was ours when it was made."""
    kill_and_wait(processes_under(root))
    for _ in range(_UNMOUNT_PASSES):
        # Read again after every pass: mounts stack, and an unmount here may end copies there.
        held = [mount for mount in read_mounts() if lies_under(mount.target, root)]
        if not held:
            break
        own = [mount for mount in held if mount.in_own_namespace]
        for mount in sorted(own or held, key=lambda mount: mount.target, reverse=True):
            unmount(mount)
    for device, backing in loop_devices():
        if lies_under(backing, root):
            subprocess.run(["partx", "-d", device], check=False, capture_output=True)
            subprocess.run(["losetup", "-d", device], check=False, capture_output=True)
    # A device still open (a dying namespace's filesystem flushing to it) is only marked to
    # detach on its last close: wait for that, so the caller finds it gone.
    deadline = time.monotonic() + _DETACH_TIMEOUT_S
    while time.monotonic() < deadline and any(lies_under(b, root) for _, b in loop_devices()):
        time.sleep(0.05)
