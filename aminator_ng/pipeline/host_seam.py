"""The host seam: what a bake asks of the machine it runs on, beside the cloud backend.

``LinuxHost`` is the real one: root, host tools, the bake's namespaces, partition nodes, the root
filesystem's mount, and the chroot's API filesystems. Unit tests give the bake a fake host (and a
fake cloud), so that the order of its steps, its teardown on errors and signals, and
preserve-on-error are proven without root.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import re
import socket
import stat
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

from aminator_ng.errors import HostError
from aminator_ng.host.blockdev import find_root_filesystem, partition_nodes, wait_until_released
from aminator_ng.host.chroot import (
    Chroot,
    api_filesystems,
    host_resolv_conf,
    image_hostname,
    replaced_file,
)
from aminator_ng.host.grow import (
    check_growable,
    grow_mounted_filesystem,
    grow_partition,
    grow_unmounted_filesystem,
)
from aminator_ng.host.mount import mounted
from aminator_ng.host.namespace import BakeNamespace, bake_namespace
from aminator_ng.host.run import require_tools, run
from aminator_ng.host.signals import deferred
from aminator_ng.pipeline.secret_scan import HostTraces, changed_files

log = logging.getLogger(__name__)

RESOLV_CONF = "/etc/resolv.conf"
#: XFS: copies of one image carry its UUID. ext4: no cache flush for each fsync in the image
#: (dpkg makes a hundred for a few packages); the root is flushed once, before the snapshot.
ROOT_MOUNT_OPTIONS = {"xfs": ["nouuid"], "ext4": ["nobarrier"]}
#: Host tools the engine's own Linux layer runs in every bake.
ENGINE_TOOLS = ("blkid", "findmnt", "fstrim", "mount", "nsenter", "partx", "sync", "umount")


@dataclass(frozen=True)
class MountedRoot:
    device: Path
    #: Where the root is mounted in the bake's namespace.
    mount_point: Path
    fstype: str
    #: Where the engine's process reaches it.
    reached: Path


class BakeHost(Protocol):
    """The machine a bake runs on."""

    def require(self, action: str, tools: Sequence[str]) -> None:
        """Raise HostError unless ``action`` can run here: as root, with ``tools``."""

    def require_tools(self, tools: Sequence[str]) -> None:
        """Raise HostError naming a missing tool (and its package)."""

    def namespace(self, work_dir: Path) -> AbstractContextManager[object]:
        """The bake's namespaces for the context (see ``namespace.bake_namespace``)."""

    def mounted_root(
        self, device: Path, mount_point: Path, *, grow: bool = False
    ) -> AbstractContextManager[MountedRoot]:
        """The root filesystem of ``device`` mounted on ``mount_point`` in the bake's
        namespace, first grown to the end of the device with ``grow``; flushed and trimmed
        when the context ends well, unmounted (and its device let go) in any case."""

    def chroot(self, root: MountedRoot) -> AbstractContextManager[Chroot]:
        """A chroot on the mounted root: API filesystems, the host's resolver, the image's own
        hostname; undone when the context ends."""

    def traces(self) -> HostTraces:
        """The host's hostname, addresses and nameservers, which the image must not hold."""

    def placed_files(self, chroot: Chroot) -> list[str]:
        """The files the chroot holds of the host's for the bake only, restored when it ends
        (the host's resolv.conf): the secret scan leaves them out."""

    def undo_copies_of_placed_files(self, chroot: Chroot, since: float) -> str:
        """Give the copies package scripts made of those files (systemd-resolved's backup of
        resolv.conf, say) what the base had in their place, and say what was done."""


def require_root(action: str) -> None:
    if os.geteuid() != 0:
        raise HostError(f"{action} must run as root", hint="run it with sudo")


class LinuxHost:
    """The real host: namespaces, loop partitions, mounts and chroots of this Linux machine."""

    def __init__(self) -> None:
        self._namespace: BakeNamespace | None = None
        #: The base's own resolv.conf (None when it had none, or a link), for copies of the
        #: host's that package scripts make.
        self._base_resolv_conf: bytes | None = None

    def require(self, action: str, tools: Sequence[str]) -> None:
        require_root(action)
        require_tools(tools)

    def require_tools(self, tools: Sequence[str]) -> None:
        require_tools(tools)

    @contextlib.contextmanager
    def namespace(self, work_dir: Path) -> Iterator[BakeNamespace]:
        with ExitStack() as stack:
            self._namespace = stack.enter_context(bake_namespace(work_dir))
            try:
                yield self._namespace
            finally:
                self._namespace = None
                with deferred():  # its end is a release: never cut short
                    stack.close()

    @contextlib.contextmanager
    def mounted_root(
        self, device: Path, mount_point: Path, *, grow: bool = False
    ) -> Iterator[MountedRoot]:
        """Leaving unmounts the root with whatever is still mounted below it, by the paths the
        kernel's mount table holds then."""
        assert self._namespace is not None, "mounted_root outside the bake's namespace"
        with ExitStack() as stack:
            parts = stack.enter_context(partition_nodes(device))
            root_fs = find_root_filesystem(device, parts)
            if grow:
                check_growable(root_fs)
                grow_partition(device, root_fs)
                grow_unmounted_filesystem(root_fs)
            mount_point.mkdir(parents=True, exist_ok=True)
            stack.callback(remove_empty_dirs, mount_point, mount_point.parent.parent)
            # Left after the unmount: the filesystem is shut down before anything goes on.
            stack.callback(wait_until_released, root_fs.device)
            options = ROOT_MOUNT_OPTIONS.get(root_fs.fstype, [])
            stack.enter_context(
                mounted(
                    root_fs.device,
                    mount_point,
                    fstype=root_fs.fstype,
                    options=options,
                    recursive_unmount=True,
                )
            )
            log.info("mounted %s (%s) on %s", root_fs.device, root_fs.fstype, mount_point)
            if grow:
                grow_mounted_filesystem(root_fs, mount_point)
            reached = self._namespace.reach(mount_point)
            yield MountedRoot(root_fs.device, mount_point, root_fs.fstype, reached)
            # Only on success: flush, then let the loop device punch holes for freed blocks so
            # that the snapshot stays small.
            run(["sync", "-f", mount_point], what=f"sync {mount_point}")
            run(["sync", root_fs.device], what=f"flush {root_fs.device}")
            run(["fstrim", mount_point], what=f"trim {mount_point}", check=False)

    @contextlib.contextmanager
    def chroot(self, root: MountedRoot) -> Iterator[Chroot]:
        # No process of the image outlives its command (each runs in a PID namespace of its
        # own), so none is left to end here.
        chroot = Chroot(root.reached, mount_point=root.mount_point)
        chroot = replace(chroot, hostname=image_hostname(chroot))
        with ExitStack() as stack:
            stack.enter_context(api_filesystems(chroot))
            base = chroot.lstat(RESOLV_CONF)
            if base is not None and stat.S_ISREG(base.st_mode):
                self._base_resolv_conf = chroot.read_bytes(RESOLV_CONF)
            # A package that makes resolv.conf its own (systemd-resolved, resolvconf: a link to
            # its stub) keeps what it made; otherwise the base's file comes back as it was.
            stack.enter_context(
                replaced_file(chroot, RESOLV_CONF, host_resolv_conf(), keep_if_replaced=True)
            )
            yield chroot

    def traces(self) -> HostTraces:
        return host_traces()

    def placed_files(self, chroot: Chroot) -> list[str]:
        # Still the engine's copy: a package that made resolv.conf its own replaced it.
        info = chroot.lstat(RESOLV_CONF)
        if info is None or not stat.S_ISREG(info.st_mode):
            return []
        return [RESOLV_CONF] if chroot.read_bytes(RESOLV_CONF) == host_resolv_conf() else []

    def undo_copies_of_placed_files(self, chroot: Chroot, since: float) -> str:
        host = host_resolv_conf()
        if not host:
            return "the host has no resolv.conf: nothing of it to copy"
        copies: list[str] = []
        for path, fd, _ in changed_files(chroot.root, since, lambda i: i.st_size == len(host)):
            with os.fdopen(fd, "rb") as file:
                if path == RESOLV_CONF or file.read() != host:
                    continue
            copies.append(path)
            if self._base_resolv_conf is None:
                chroot.remove(path)
            else:
                chroot.write_file(path, self._base_resolv_conf, mode=0o644)
        if not copies:
            return "no copy of the host's resolv.conf"
        done = "removed" if self._base_resolv_conf is None else "gave the base's resolv.conf to"
        return f"{done} {', '.join(copies)} (a package's copy of the host's)"


#: The address ranges for documentation (RFC 5737, RFC 3849): a lab host may use them, but
#: examples in every package's docs do too, so finding one tells nothing of the host.
DOCUMENTATION_NETWORKS = tuple(
    ipaddress.ip_network(n)
    for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32")
)


def _is_own(address: str) -> bool:
    """Whether an address tells this host apart: not loopback, link-local, unspecified or for
    documentation, which every machine or manual shares."""
    try:
        parsed = ipaddress.ip_address(address.split("%")[0])
    except ValueError:
        return False
    if parsed.is_loopback or parsed.is_link_local or parsed.is_unspecified:
        return False
    return not any(parsed in network for network in DOCUMENTATION_NETWORKS)


def _local_ipv4_addresses() -> list[str]:
    # The kernel's routing trie marks each local address with "/32 host LOCAL".
    try:
        text = Path("/proc/net/fib_trie").read_text()
    except OSError:
        return []
    return re.findall(r"\|-- ([0-9.]+)\n\s+/32 host LOCAL", text)


def _local_ipv6_addresses() -> list[str]:
    try:
        lines = Path("/proc/net/if_inet6").read_text().splitlines()
    except OSError:
        return []
    return [str(ipaddress.IPv6Address(bytes.fromhex(line.split()[0]))) for line in lines if line]


def _is_distinctive(hostname: str) -> bool:
    """Whether a hostname tells this host apart where it is found: a short plain word ("vm",
    "debian") is in too many files to be looked for."""
    return len(hostname) >= 8 or any(c.isdigit() or c == "-" for c in hostname)


def host_traces() -> HostTraces:
    hostname = socket.gethostname()
    names = dict.fromkeys(n for n in (hostname, hostname.split(".")[0]) if _is_distinctive(n))
    addresses = dict.fromkeys(_local_ipv4_addresses() + _local_ipv6_addresses())
    nameservers = re.findall(rb"^\s*nameserver\s+(\S+)", host_resolv_conf(), flags=re.MULTILINE)
    return HostTraces(
        hostnames=tuple(name for name in names if not name.startswith("localhost")),
        addresses=tuple(a for a in addresses if _is_own(a)),
        nameservers=tuple(dict.fromkeys(n.decode() for n in nameservers if _is_own(n.decode()))),
    )


def remove_empty_dirs(path: Path, stop: Path) -> None:
    """Remove ``path`` and its parents up to (not including) ``stop`` while they are empty."""
    current = path
    while current != stop and stop in current.parents:
        try:
            current.rmdir()
        except OSError:
            return
        current = current.parent
