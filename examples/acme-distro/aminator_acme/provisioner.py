"""The acme-tar provisioner: unpacks .acme.tar packages into the image and keeps Acme's package
database, /var/lib/acme/installed (one line per package: name version release arch).

Packages given by name come from pools, directories of .acme.tar files: a ``--repo`` directory
on the host (the engine mounts it into the image), or a pool the image holds already, written
``acme-pool:/PATH`` (Acme's own repository syntax).

Every file goes into the image through the ``Chroot`` methods, which resolve each path inside the
image as they act: a symlink in the image (or one a package script made) never leads a write out
of it.
"""

from __future__ import annotations

import contextlib
import io
import tarfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from aminator_acme.package import CONTROL_FILES, POSTINST, SUFFIX, package_info, read_package_info
from aminator_ng.api import (
    BakeError,
    Chroot,
    ImagePathError,
    ManifestEntry,
    PackageInfo,
    PackageRequest,
    Provisioner,
    Repository,
    RequestError,
    created_directories,
)

DATABASE = "/var/lib/acme/installed"
#: Where post-install scripts are put for their run, on the bake's own tmpfs /run.
SCRIPTS_DIR = "/run/acme-scripts"
UNSAFE_HINT = "an Acme package holds relative paths, directories, plain files and symlinks only"
POOL_PREFIX = "acme-pool:"
POOL_HINT = "write acme-pool:/PATH, a directory of .acme.tar files inside the image"


@dataclass(frozen=True)
class Pool:
    """A directory of .acme.tar files inside the image."""

    inside: PurePosixPath


@dataclass(frozen=True)
class Member:
    """One payload entry of a package, checked: where it goes and what it is."""

    inside: PurePosixPath
    kind: str  # "dir", "file" or "symlink"
    mode: int = 0o755
    content: bytes = b""
    target: str = ""


def _unsafe(info: PackageInfo, member: tarfile.TarInfo, why: str) -> RequestError:
    return RequestError(
        f"package {info.name} has an unsafe member {member.name!r}: {why}", hint=UNSAFE_HINT
    )


def _checked(info: PackageInfo, member: tarfile.TarInfo) -> PurePosixPath:
    """Where a member goes inside the image: a relative path without ``..``."""
    name = PurePosixPath(member.name)
    if name.is_absolute():
        raise _unsafe(info, member, "an absolute path")
    if ".." in name.parts:
        raise _unsafe(info, member, "a path with '..'")
    return PurePosixPath("/", name)


def payload(data: bytes, info: PackageInfo) -> tuple[list[Member], bytes | None]:
    """A package's payload members, checked, and its post-install script. Owners are dropped
    (root owns everything) and so are set-id and sticky bits; hard links, devices and FIFOs are
    refused."""
    members: list[Member] = []
    script = None
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            for member in tar:
                name = member.name.removeprefix("./")
                if name in ("", "."):
                    continue
                if name in CONTROL_FILES:
                    if name == POSTINST and member.isreg():
                        script = _read(tar, member)
                    continue
                inside = _checked(info, member)
                mode = member.mode & 0o755  # no set-id or sticky bit, no group or other write
                if member.isdir():
                    members.append(Member(inside, "dir", mode))
                elif member.isreg():
                    members.append(Member(inside, "file", mode, _read(tar, member)))
                elif member.issym():
                    members.append(Member(inside, "symlink", target=member.linkname))
                else:
                    raise _unsafe(info, member, "neither a directory, a file nor a symlink")
    except tarfile.TarError as exc:
        raise RequestError(f"package {info.name} is damaged: {exc}") from exc
    return members, script


def _read(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    content = tar.extractfile(member)
    assert content is not None
    return content.read()


def make_parents(chroot: Chroot, inside: PurePosixPath) -> None:
    """The directories above ``inside`` that the image lacks, made (they stay: they are the
    package's)."""
    for parent in reversed(inside.parents[:-1]):
        if not chroot.is_dir(str(parent)):
            chroot.make_directory(str(parent))


def place(chroot: Chroot, info: PackageInfo, members: Sequence[Member]) -> None:
    for member in members:
        try:
            make_parents(chroot, member.inside)
            if member.kind == "dir":
                if not chroot.is_dir(str(member.inside)):
                    chroot.make_directory(str(member.inside), member.mode)
            elif member.kind == "file":
                chroot.write_file(member.inside, member.content, mode=member.mode)
            else:
                chroot.symlink(member.inside, member.target)
        except (OSError, ImagePathError) as exc:
            raise BakeError(
                f"installing package {info.name} failed: cannot place {member.inside}: {exc}"
            ) from exc


def read_database(chroot: Chroot) -> dict[str, PackageInfo]:
    if not chroot.is_file(DATABASE):
        return {}
    installed = {}
    for line in chroot.read_bytes(DATABASE).decode().splitlines():
        fields = line.split()
        if len(fields) == 4:
            installed[fields[0]] = PackageInfo(*fields)
    return installed


def write_database(chroot: Chroot, installed: Mapping[str, PackageInfo]) -> None:
    make_parents(chroot, PurePosixPath(DATABASE))
    lines = [f"{p.name} {p.version} {p.release} {p.arch}\n" for _, p in sorted(installed.items())]
    chroot.write_file(DATABASE, "".join(lines).encode())


@contextlib.contextmanager
def placed_script(chroot: Chroot, name: str, script: bytes) -> Iterator[str]:
    """A post-install script in the image for the context; yields its path inside."""
    inside = f"{SCRIPTS_DIR}/{name}"
    chroot.write_file(inside, script, mode=0o700)
    try:
        yield inside
    finally:
        chroot.remove(inside)


def pooled_file(chroot: Chroot, pools: Sequence[PurePosixPath], request: PackageRequest) -> str:
    """Where the package a name (or ``NAME=VERSION-RELEASE``) asks for is in the pools: the one
    file of that name, or of that version."""
    # Names hold no "_", and neither do versions: the prefix is the name's (and version's).
    pinned = request.pinned_version
    wanted = f"{request.name}_{pinned}_" if pinned else f"{request.name}_"
    found = sorted(
        str(pool / entry)
        for pool in pools
        for entry in chroot.listdir(pool)
        if entry.startswith(wanted) and entry.endswith(SUFFIX)
    )
    if not found:
        where = ", ".join(map(str, pools)) or "no pool"
        raise RequestError(
            f"package {request.spec} is in no Acme pool ({where})",
            hint="give the path of its .acme.tar file, or --repo a directory that holds it",
        )
    if len(found) > 1:
        raise RequestError(
            f"package {request.name} is in the pools more than once: {', '.join(found)}",
            hint=f"pin one: {request.name}=VERSION-RELEASE",
        )
    return found[0]


class AcmeProvisioner(Provisioner):
    name = "acme-tar"

    def __init__(self, *, motd: str | None = None) -> None:
        self.motd = motd
        #: The pools of the bake's repositories, while they are added.
        self.pools: list[PurePosixPath] = []

    def parse_repository(self, spec: str, keys: Sequence[Path]) -> Repository:
        """``acme-pool:/PATH``: a pool inside the image. Acme Linux signs nothing, so the
        keys are not its."""
        if not spec.startswith(POOL_PREFIX):
            raise RequestError(f"not an Acme repository: --repo {spec}", hint=POOL_HINT)
        inside = PurePosixPath(spec.removeprefix(POOL_PREFIX))
        if not inside.is_absolute() or ".." in inside.parts:
            raise RequestError(f"an Acme pool is an absolute path: --repo {spec}", hint=POOL_HINT)
        return Repository(spec, parsed=Pool(inside))

    @contextlib.contextmanager
    def added_repositories(
        self, chroot: Chroot, repositories: Sequence[Repository]
    ) -> Iterator[None]:
        """Acme's pools are only read: nothing is written into the image for them."""
        pools = []
        for repository in repositories:
            if repository.mounted_at is not None:
                pools.append(PurePosixPath(repository.mounted_at))
            elif isinstance(repository.parsed, Pool):
                pool = repository.parsed.inside
                if not chroot.is_dir(pool):
                    raise RequestError(
                        f"the image has no pool {pool}: --repo {repository.spec}", hint=POOL_HINT
                    )
                pools.append(pool)
        self.pools = pools
        try:
            yield
        finally:
            self.pools = []

    def install(self, chroot: Chroot, packages: Sequence[PackageRequest]) -> None:
        names = [request.spec for request in packages if request.path is None]
        if names and not self.pools:
            raise RequestError(
                f"Acme Linux installs package files, or names from a pool: {', '.join(names)}",
                hint=f"give the paths of .acme.tar files, or --repo a pool ({POOL_HINT})",
            )
        # Any other file a plugin claimed (a .deb, say) is refused here, before any change.
        unpacked = []
        for request in packages:
            if request.path is not None:
                data, info = request.path.read_bytes(), read_package_info(request.path)
            else:
                inside = pooled_file(chroot, self.pools, request)
                data = chroot.read_bytes(inside)
                info = package_info(data, inside)
            unpacked.append((info, *payload(data, info)))
        installed = read_database(chroot)
        for info, members, _ in unpacked:
            place(chroot, info, members)
            installed[info.name] = info
        write_database(chroot, installed)
        with created_directories(chroot, SCRIPTS_DIR):
            for info, _, script in unpacked:
                if script is not None:
                    self._run_postinst(chroot, info, script)
        if self.motd is not None:
            motd = self.motd if self.motd.endswith("\n") else self.motd + "\n"
            chroot.write_file("/etc/motd", motd.encode())

    def _run_postinst(self, chroot: Chroot, info: PackageInfo, script: bytes) -> None:
        # Package scripts run inside the image only, never on the host.
        with placed_script(chroot, f"{info.name}.postinst", script) as inside:
            result = chroot.run(["/bin/sh", "-e", inside], check=False)
        if result.returncode != 0:
            raise BakeError(
                f"installing package {info.name} failed: its post-install script "
                f"exited {result.returncode}",
                hint="see the bake log",
            )

    def query(self, chroot: Chroot, names: Sequence[str]) -> list[PackageInfo]:
        installed = read_database(chroot)
        return [installed[name] for name in names if name in installed]

    def manifest(self, chroot: Chroot) -> list[ManifestEntry]:
        """The packages Acme's database records (what the image's other tools installed is not
        Acme's to list)."""
        return [
            ManifestEntry(p.name, p.full_version, p.arch, p.name, p.full_version)
            for _, p in sorted(read_database(chroot).items())
        ]
