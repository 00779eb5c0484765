"""Repositories added to a Debian image for one bake (``--repo``), and gone from it afterwards.

A directory repository, bind-mounted read-only by the engine at ``.../N/pool``, gets a flat
index (``dpkg-scanpackages``) at ``.../N/Packages`` and the source ``deb [trusted=yes]
file:.../N ./``. A source line is written as given, with ``signed-by`` naming the ``--repo-key``
files copied to /etc/apt/keyrings. Every file is written with ``replaced_file``, so that leaving
restores the image's files exactly as they were.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from pathlib import Path, PurePosixPath

from aminator_ng.api import (
    BakeError,
    Chroot,
    CommandError,
    Repository,
    RequestError,
    created_directories,
    find_tool,
    replaced_file,
    run,
)

log = logging.getLogger(__name__)

#: The one sources file the added repositories live in for the bake.
SOURCES_FILE = "/etc/apt/sources.list.d/aminator-ng.list"
KEYRING_DIR = "/etc/apt/keyrings"
INDEX_TOOL = "dpkg-scanpackages"
SOURCES_HEADER = "# Written by aminator-ng for one bake, and removed after it.\n"
_ARMORED = b"-----BEGIN PGP"
#: What apt says when a repository's signature, key or Release file is wrong: the request's fault.
_NOT_VERIFIED = (
    "NO_PUBKEY",
    "signatures couldn't be verified",
    "is not signed",
    "EXPKEYSIG",
    "BADSIG",
    "does not have a Release file",
    "Not Found",
)


def has_added_repositories(chroot: Chroot) -> bool:
    return chroot.exists(SOURCES_FILE)


def update_failure(error: CommandError) -> Exception:
    """An ``apt-get update`` failure with added repositories: a repository that cannot be
    verified or does not exist is the request's fault; anything else stays a failed bake."""
    lines = [line.strip() for line in error.stderr_tail.splitlines()]
    reasons = [line for line in lines if line.startswith(("E:", "W:")) and "ignored" not in line]
    if any(marker in line for line in reasons for marker in _NOT_VERIFIED):
        detail = next(line for line in reasons if any(m in line for m in _NOT_VERIFIED))
        return RequestError(
            f"a repository cannot be used: {detail[3:].strip()}",
            hint="check --repo (the URI, suite and components) and --repo-key "
            "(the key the repository is signed with)",
        )
    return error


@contextlib.contextmanager
def flat_index(chroot: Chroot, repository: Repository) -> Iterator[str]:
    """An index of a mounted directory repository, next to its pool; yields its source line."""
    if repository.mounted_at is None:
        raise BakeError(f"repository {repository.spec} is not mounted in the image")
    pool = PurePosixPath(repository.mounted_at)
    base = pool.parent
    # dpkg-dev is needed only when a bake has a directory repository.
    find_tool(INDEX_TOOL)
    result = run(
        [INDEX_TOOL, "--multiversion", pool.name],
        cwd=chroot.path(str(base)),
        what=f"index the packages of {repository.directory}",
    )
    if not result.stdout.strip():
        raise RequestError(f"repository directory holds no .deb packages: {repository.spec}")
    with replaced_file(chroot, f"{base}/Packages", result.stdout.encode()):
        yield f"deb [trusted=yes] file:{base} ./"


@contextlib.contextmanager
def placed_key(chroot: Chroot, key: Path, name: str) -> Iterator[str]:
    """A key file copied into the image's keyrings; yields its path inside the image."""
    data = key.read_bytes()
    suffix = ".asc" if data.lstrip().startswith(_ARMORED) else ".gpg"
    inside = f"{KEYRING_DIR}/{name}{suffix}"
    with replaced_file(chroot, inside, data, mode=0o644):
        yield inside


@contextlib.contextmanager
def written_sources(chroot: Chroot, repositories: Sequence[Repository]) -> Iterator[list[str]]:
    """Every repository's index, keys and sources line in the image; yields the lines."""
    with ExitStack() as stack:
        lines: list[str] = []
        keyrings: dict[Path, str] = {}
        for repository in repositories:
            if repository.source is None:
                lines.append(stack.enter_context(flat_index(chroot, repository)))
                continue
            source = repository.source
            if repository.keys:
                if not keyrings:
                    stack.enter_context(created_directories(chroot, KEYRING_DIR))
                for key in repository.keys:
                    if key not in keyrings:
                        name = f"aminator-ng-{len(keyrings)}"
                        keyrings[key] = stack.enter_context(placed_key(chroot, key, name))
                signed_by = ",".join(keyrings[key] for key in repository.keys)
                source = source.with_option(f"signed-by={signed_by}")
            lines.append(str(source))
        content = SOURCES_HEADER + "".join(f"{line}\n" for line in lines)
        stack.enter_context(replaced_file(chroot, SOURCES_FILE, content.encode()))
        for line in lines:
            log.info("added repository: %s", line)
        yield lines
