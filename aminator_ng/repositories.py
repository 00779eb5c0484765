"""Repositories added for one bake: ``--repo`` specs and ``--repo-key`` files checked before
anything is acquired, and directory repositories bind-mounted read-only into the image."""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path

from aminator_ng.chroot import Chroot, created_directories, mounted_inside
from aminator_ng.errors import NotFoundError, RequestError
from aminator_ng.model import Repository, SourceLine

log = logging.getLogger(__name__)

PACKAGE_FILE_SUFFIXES = (".deb", ".rpm")
REPOSITORY_HINT = (
    "--repo takes an apt one-line source, 'deb [options] URI suite [component...]', "
    "a repository URL (a dnf baseurl), or a directory of package files"
)
#: A repository's root URL, as dnf's baseurl takes it.
_REPOSITORY_URL = re.compile(r"^(?:https?|ftp)://[^\s/]+\S*$|^file:///\S+$")
#: Where directory repositories are bind-mounted inside the image, ``N/pool`` for the Nth: on the
#: bake's own tmpfs /run, with their indexes beside them.
REPOSITORY_MOUNTS = "/run/aminator-ng/repos"
#: Nothing in a repository directory is changed or run from inside the image.
REPOSITORY_MOUNT_OPTIONS = ("ro", "nosuid", "nodev", "noexec")
_ARMORED_KEY = b"-----BEGIN PGP PUBLIC KEY BLOCK-----"


def read_repository_key(path: Path) -> Path:
    """A ``--repo-key`` file, checked to be an OpenPGP public key (armored or binary)."""
    if not path.is_file():
        raise NotFoundError(f"repository key not found: {path}")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise RequestError(f"cannot read repository key {path}: {exc.strerror}") from exc
    armored = data.lstrip().startswith(_ARMORED_KEY)
    # A binary OpenPGP packet's first byte has its high bit set.
    if not armored and not (data and data[0] & 0x80):
        raise RequestError(
            f"not an OpenPGP public key: {path}",
            hint="export it with 'gpg --export KEYID' or 'gpg --armor --export KEYID'",
        )
    return path.resolve()


def _holds_package_files(directory: Path) -> bool:
    return any(p.suffix in PACKAGE_FILE_SUFFIXES for p in directory.rglob("*"))


def read_repositories(specs: Sequence[str], keys: Sequence[Path]) -> tuple[Repository, ...]:
    """Check every ``--repo`` and ``--repo-key`` before anything is acquired.

    An existing directory is a directory repository, ``http(s)://``, ``ftp://`` and ``file:///``
    a repository URL; anything else must be an apt one-line source. The keys sign every URL and
    every source line that does not name its own ``signed-by``.
    """
    key_files = tuple(read_repository_key(key) for key in keys)
    repositories: list[Repository] = []
    for spec in specs:
        text = spec.strip()
        directory = Path(text)
        if text and directory.is_dir():
            if not _holds_package_files(directory):
                raise RequestError(f"repository directory holds no package files: {spec}")
            repositories.append(Repository(spec, directory=directory.resolve()))
        elif text.split(maxsplit=1)[:1] in (["deb"], ["deb-src"]):
            try:
                source = SourceLine.parse(text)
            except ValueError as exc:
                raise RequestError(f"bad --repo {spec!r}: {exc}", hint=REPOSITORY_HINT) from exc
            signing = () if "signed-by" in source.option_names() else key_files
            repositories.append(Repository(spec, source=source, keys=signing))
        elif _REPOSITORY_URL.match(text):
            repositories.append(Repository(spec, url=text, keys=key_files))
        elif not text or any(c.isspace() for c in text):
            raise RequestError(
                f"bad --repo {spec!r}: neither a source line nor a directory",
                hint=REPOSITORY_HINT,
            )
        else:
            raise NotFoundError(f"repository directory not found: {spec}", hint=REPOSITORY_HINT)
    if key_files and not any(r.keys for r in repositories):
        raise RequestError(
            "--repo-key signs --repo source lines and URLs, and there is none without its own "
            "signed-by",
            hint="give the repository as --repo 'deb URI suite component' or --repo URL, "
            "with its key",
        )
    return tuple(repositories)


@contextlib.contextmanager
def mounted_repositories(
    chroot: Chroot, repositories: Sequence[Repository]
) -> Iterator[tuple[Repository, ...]]:
    """The directory repositories bind-mounted read-only into the image (``mounted_at`` set),
    unmounted and their mount points removed on leaving; source lines pass through."""
    with ExitStack() as stack:
        placed: list[Repository] = []
        for index, repository in enumerate(repositories):
            if repository.directory is None:
                placed.append(repository)
                continue
            inside = f"{REPOSITORY_MOUNTS}/{index}/pool"
            stack.enter_context(created_directories(chroot, inside))
            stack.enter_context(
                mounted_inside(
                    chroot,
                    inside,
                    repository.directory,
                    bind=True,
                    options=REPOSITORY_MOUNT_OPTIONS,
                )
            )
            log.info("repository %s mounted read-only at %s", repository.directory, inside)
            placed.append(replace(repository, mounted_at=inside))
        yield tuple(placed)
