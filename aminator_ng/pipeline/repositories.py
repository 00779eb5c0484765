"""Repositories added for one bake: ``--repo`` directories and ``--repo-key`` files checked
before anything is acquired, the other specs read by the bake's provisioner once it is known,
and directory repositories bind-mounted read-only into the image."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path

from aminator_ng.contract.model import Repository
from aminator_ng.contract.provisioner import Provisioner
from aminator_ng.errors import NotFoundError, RequestError
from aminator_ng.host.chroot import Chroot, created_directories, mounted_inside

log = logging.getLogger(__name__)

REPOSITORY_HINT = (
    "--repo takes a directory of package files, or a repository as the image's package "
    "manager names one (a source line, a URL: see docs/operator-guide.md)"
)
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


def _holds_files(directory: Path) -> bool:
    return any(p.is_file() for p in directory.rglob("*"))


def read_repositories(specs: Sequence[str], keys: Sequence[Path]) -> tuple[Repository, ...]:
    """Check every ``--repo`` directory and ``--repo-key`` before anything is acquired.

    An existing directory is a directory repository. Any other spec that starts with ``/`` or
    ``.``, or holds neither a colon nor a space, names a directory that is not there; the rest
    (source lines, URLs, a plugin's own syntax) are left to the bake's provisioner
    (``parse_repositories``).
    """
    for key in keys:
        read_repository_key(key)
    repositories: list[Repository] = []
    for spec in specs:
        text = spec.strip()
        directory = Path(text)
        if text and directory.is_dir():
            if not _holds_files(directory):
                raise RequestError(f"repository directory holds no package files: {spec}")
            repositories.append(Repository(spec, directory=directory.resolve()))
        elif not text:
            raise RequestError("bad --repo '': it is empty", hint=REPOSITORY_HINT)
        elif text.startswith(("/", ".")) or not (":" in text or any(c.isspace() for c in text)):
            raise NotFoundError(f"repository directory not found: {spec}", hint=REPOSITORY_HINT)
        else:
            repositories.append(Repository(spec))
    return tuple(repositories)


def parse_repositories(
    provisioner: Provisioner, repositories: Sequence[Repository], keys: Sequence[Path]
) -> tuple[Repository, ...]:
    """Every repository that is not a directory, as the bake's provisioner reads it, with the
    ``--repo-key`` files it takes (checked by ``read_repositories`` already)."""
    key_files = tuple(key.resolve() for key in keys)
    parsed = tuple(
        repository
        if repository.directory is not None
        else provisioner.parse_repository(repository.spec, key_files)
        for repository in repositories
    )
    if key_files and not any(repository.keys for repository in parsed):
        raise RequestError(
            "--repo-key signs --repo repositories, and none of them takes the key",
            hint=f"a directory takes no key, nor a repository that names its own "
            f"(provisioner {provisioner.name})",
        )
    return parsed


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
