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
import re
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, replace
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


SOURCE_HINT = "--repo takes a one-line source, 'deb [options] URI suite [component...]'"
_SOURCE_LINE = re.compile(r"^(deb|deb-src)\s+(?:\[([^\]]*)\]\s*)?(\S+)\s+(\S+)(?:\s+(.+))?$")
_SOURCE_OPTION = re.compile(r"^[A-Za-z][A-Za-z0-9-]*[+-]?=\S+$")
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:\S+$")
_BARE_URL = re.compile(r"^(?:https?|ftp)://\S+$|^file:///\S+$")


@dataclass(frozen=True)
class SourceLine:
    """An apt one-line source, ``deb [options] URI suite [component...]`` (sources.list(5)).

    A suite ending in ``/`` names a flat repository and takes no components; any other suite
    needs at least one.
    """

    type: str
    uri: str
    suite: str
    components: tuple[str, ...] = ()
    #: ``name=value`` (or ``name+=value``, ``name-=value``) as written between the brackets.
    options: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str) -> SourceLine:
        """Raise ValueError saying what is wrong with ``text``."""
        match = _SOURCE_LINE.match(text.strip())
        if match is None:
            raise ValueError("expected deb [options] URI suite [component...]")
        kind, options_text, uri, suite, rest = match.groups()
        options = tuple(options_text.split()) if options_text else ()
        for option in options:
            if not _SOURCE_OPTION.match(option):
                raise ValueError(f"option {option!r} is not name=value")
        if not _URI.match(uri):
            raise ValueError(f"{uri!r} is not a URI (http://..., https://..., file:/...)")
        components = tuple(rest.split()) if rest else ()
        if suite.endswith("/") and components:
            raise ValueError(f"the flat suite {suite!r} takes no components")
        if not suite.endswith("/") and not components:
            raise ValueError(f"the suite {suite!r} needs a component (main, say)")
        return cls(kind, uri, suite, components, options)

    def option_names(self) -> set[str]:
        return {re.split(r"[+-]?=", option, maxsplit=1)[0].lower() for option in self.options}

    def with_option(self, option: str) -> SourceLine:
        return replace(self, options=(*self.options, option))

    def __str__(self) -> str:
        options = f"[{' '.join(self.options)}] " if self.options else ""
        return " ".join([f"{self.type} {options}{self.uri}", self.suite, *self.components])


def parse_repository(spec: str, keys: Sequence[Path]) -> Repository:
    """A ``--repo`` source line; the keys sign it unless it names its own ``signed-by``."""
    text = spec.strip()
    if text.split(maxsplit=1)[:1] in (["deb"], ["deb-src"]):
        try:
            source = SourceLine.parse(text)
        except ValueError as exc:
            raise RequestError(f"bad --repo {spec!r}: {exc}", hint=SOURCE_HINT) from exc
        signing = () if "signed-by" in source.option_names() else tuple(keys)
        return Repository(spec, parsed=source, keys=signing)
    if _BARE_URL.match(text):
        raise RequestError(
            f"apt needs a one-line source, not a bare URL: --repo {spec}",
            hint=f"write it as --repo 'deb {text} SUITE COMPONENT'",
        )
    raise RequestError(
        f"bad --repo {spec!r}: neither a source line nor a directory", hint=SOURCE_HINT
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
            if not isinstance(repository.parsed, SourceLine):
                lines.append(stack.enter_context(flat_index(chroot, repository)))
                continue
            source = repository.parsed
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
