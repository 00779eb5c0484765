"""Mounts, and finding who keeps a mount busy."""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from aminator_ng.errors import CleanupError, CommandError
from aminator_ng.host.run import run

log = logging.getLogger(__name__)

UNMOUNT_ATTEMPTS = 5


def is_mountpoint(path: Path) -> bool:
    return run(["findmnt", "--mountpoint", path], check=False).returncode == 0


def _is_under(link: str, target: Path) -> bool:
    return link == str(target) or link.startswith(f"{target}/")


def processes_using(target: Path) -> list[tuple[int, str]]:
    """Processes whose root, working directory or an open file lies under ``target``."""
    holders: list[tuple[int, str]] = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        links = [proc / "root", proc / "cwd"]
        with contextlib.suppress(OSError):
            links.extend((proc / "fd").iterdir())
        for link in links:
            try:
                if _is_under(os.readlink(link), target):
                    comm = (proc / "comm").read_text().strip()
                    holders.append((int(proc.name), comm))
                    break
            except OSError:
                continue
    return holders


def unmount(target: Path, *, recursive: bool = False) -> None:
    """Unmount with a bounded retry; when it stays busy, say which processes hold it.

    ``recursive`` unmounts what is mounted below ``target`` first, by the paths the kernel's
    mount table holds at that moment.
    """
    argv: list[str | Path] = ["umount", "--recursive"] if recursive else ["umount"]
    for attempt in range(1, UNMOUNT_ATTEMPTS + 1):
        try:
            run([*argv, target], what=f"unmount {target}")
            return
        except CommandError as exc:
            if not is_mountpoint(target):
                return
            if attempt == UNMOUNT_ATTEMPTS:
                holders = ", ".join(f"pid {pid} ({comm})" for pid, comm in processes_using(target))
                raise CleanupError(
                    f"cannot unmount {target}: {exc.stderr_tail or 'busy'}"
                    + (f"; held by {holders}" if holders else ""),
                    hint="stop those processes, then run: umount -R " + str(target),
                ) from exc
            time.sleep(0.2 * attempt)


def mount(
    source: str | Path,
    target: Path,
    *,
    fstype: str | None = None,
    options: Sequence[str] = (),
    bind: bool = False,
) -> None:
    """Mount ``source`` on ``target`` (in the bake's namespace, during a bake)."""
    argv: list[str | Path] = ["mount"]
    if bind:
        argv.append("--bind")
    if fstype:
        argv += ["-t", fstype]
    if options:
        argv += ["-o", ",".join(options)]
    run([*argv, source, target], what=f"mount {source} on {target}")


@contextlib.contextmanager
def mounted(
    source: str | Path,
    target: Path,
    *,
    fstype: str | None = None,
    options: Sequence[str] = (),
    bind: bool = False,
    recursive_unmount: bool = False,
) -> Iterator[Path]:
    """``source`` mounted on ``target`` for as long as the context lasts; with
    ``recursive_unmount`` whatever was mounted below it goes too."""
    mount(source, target, fstype=fstype, options=options, bind=bind)
    try:
        yield target
    finally:
        unmount(target, recursive=recursive_unmount)
