"""Repositories added to an RPM image for one bake (``--repo``), and gone from it afterwards.

A URL becomes a repository section with that ``baseurl``; its ``--repo-key`` files are copied to
/etc/pki/rpm-gpg and imported into the image's rpm database for the bake, and the imported keys
are erased again afterwards. A directory, bind-mounted read-only by the engine at ``.../N/pool``,
is indexed with createrepo_c into ``.../N/repodata`` and added as ``file://.../N``; its packages
are the operator's own files, checked as dnf checks package files given on the command line
(``localpkg_gpgcheck``, off unless the image turns it on), unless keys are given. Every file is
written with ``replaced_file``, so that leaving restores the image's files exactly as they were.
"""

from __future__ import annotations

import contextlib
import logging
import re
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
    replaced_file,
    run,
)
from aminator_redhat.rpmdb import signing_keys

log = logging.getLogger(__name__)

#: The one repository file the added repositories live in for the bake.
REPO_FILE = "/etc/yum.repos.d/aminator-ng.repo"
KEY_DIR = "/etc/pki/rpm-gpg"
#: Every added repository's id starts with this; dnf's errors name the id.
REPO_ID_PREFIX = "aminator-ng-"
INDEX_TOOL = "createrepo_c"
REPO_FILE_HEADER = "# Written by aminator-ng for one bake, and removed after it.\n"


URL_HINT = "give dnf the repository's URL (its baseurl) or a directory of .rpm files"
#: A repository's root URL, as dnf's baseurl takes it.
_REPOSITORY_URL = re.compile(r"^(?:https?|ftp)://[^\s/]+\S*$|^file:///\S+$")


def parse_repository(spec: str, keys: Sequence[Path]) -> Repository:
    """A ``--repo`` URL, a repository's baseurl; the keys sign it."""
    text = spec.strip()
    if _REPOSITORY_URL.match(text):
        return Repository(spec, parsed=text, keys=tuple(keys))
    if text.split(maxsplit=1)[:1] in (["deb"], ["deb-src"]):
        raise RequestError(f"dnf cannot use an apt source line: --repo {spec}", hint=URL_HINT)
    raise RequestError(
        f"bad --repo {spec!r}: neither a repository URL nor a directory", hint=URL_HINT
    )


@contextlib.contextmanager
def indexed_directory(chroot: Chroot, repository: Repository) -> Iterator[str]:
    """Repository metadata for a mounted directory of .rpm files; yields its baseurl."""
    if repository.mounted_at is None or repository.directory is None:
        raise BakeError(f"repository {repository.spec} is not mounted in the image")
    if not any(repository.directory.rglob("*.rpm")):
        raise RequestError(f"repository directory holds no .rpm packages: {repository.spec}")
    base = PurePosixPath(repository.mounted_at).parent
    try:
        run(
            [INDEX_TOOL, "--quiet", "--no-database", chroot.path(str(base))],
            what=f"index the packages of {repository.directory}",
        )
        yield f"file://{base}"
    finally:
        for made in ("repodata", ".repodata"):
            chroot.remove(f"{base}/{made}")


@contextlib.contextmanager
def imported_keys(chroot: Chroot, keys: Sequence[str]) -> Iterator[None]:
    """The key files (paths inside the image) imported into its rpm database for the context;
    the keys that were not there before are erased again on leaving."""
    before = signing_keys(chroot)
    try:
        for key in keys:
            try:
                chroot.run(["rpmkeys", "--import", key], what=f"import the repository key {key}")
            except CommandError as exc:
                raise RequestError(
                    f"cannot import the repository key {key}: {exc.stderr_tail.strip()[-200:]}",
                    hint="give --repo-key an OpenPGP public key, as 'gpg --armor --export KEYID' "
                    "writes it",
                ) from exc
        yield
    finally:
        for added in sorted(signing_keys(chroot) - before):
            chroot.run(["rpm", "--erase", added], what=f"remove the bake's signing key {added}")


def _section(index: int, repository: Repository, baseurl: str, keys: Sequence[str]) -> str:
    # A directory holds the operator's own files; anything else is checked, as dnf's default.
    checked = bool(keys) or repository.directory is None
    lines = [
        f"[{REPO_ID_PREFIX}{index}]",
        f"name=aminator-ng bake repository {index}: {repository.spec}",
        f"baseurl={baseurl}",
        "enabled=1",
        f"gpgcheck={int(checked)}",
        "skip_if_unavailable=False",
    ]
    if keys:
        lines.append("gpgkey=" + " ".join(f"file://{key}" for key in keys))
    return "\n".join(lines) + "\n"


@contextlib.contextmanager
def written_repositories(chroot: Chroot, repositories: Sequence[Repository]) -> Iterator[None]:
    """Every repository's index, keys and section in the image, for the context."""
    with ExitStack() as stack:
        placed: dict[Path, str] = {}
        sections: list[str] = []
        for index, repository in enumerate(repositories):
            if repository.directory is not None:
                baseurl = stack.enter_context(indexed_directory(chroot, repository))
            else:
                baseurl = str(repository.parsed)
            for key in repository.keys:
                if key not in placed:
                    if not placed:
                        stack.enter_context(created_directories(chroot, KEY_DIR))
                    inside = f"{KEY_DIR}/aminator-ng-{len(placed)}.asc"
                    stack.enter_context(replaced_file(chroot, inside, key.read_bytes()))
                    placed[key] = inside
            keys = [placed[key] for key in repository.keys]
            sections.append(_section(index, repository, baseurl, keys))
            log.info("added repository %s%d: %s", REPO_ID_PREFIX, index, baseurl)
        content = REPO_FILE_HEADER + "\n".join(sections)
        stack.enter_context(created_directories(chroot, REPO_FILE.rsplit("/", 1)[0]))
        stack.enter_context(replaced_file(chroot, REPO_FILE, content.encode()))
        if placed:
            stack.enter_context(imported_keys(chroot, list(placed.values())))
        yield
