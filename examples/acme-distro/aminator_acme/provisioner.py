"""The acme-tar provisioner: unpacks .acme.tar packages into the image and keeps Acme's package
database, /var/lib/acme/installed (one line per package: name version release arch).

Every file goes into the image through the ``Chroot`` methods, which resolve each path inside the
image as they act: a symlink in the image (or one a package script made) never leads a write out
of it.
"""

from __future__ import annotations

import contextlib
import tarfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from aminator_acme.package import CONTROL_FILES, POSTINST, read_package_info
from aminator_ng.api import (
    BakeError,
    Chroot,
    ImagePathError,
    ManifestEntry,
    PackageInfo,
    PackageRequest,
    Provisioner,
    RequestError,
    created_directories,
)

DATABASE = "/var/lib/acme/installed"
#: Where post-install scripts are put for their run, on the bake's own tmpfs /run.
SCRIPTS_DIR = "/run/acme-scripts"
UNSAFE_HINT = "an Acme package holds relative paths, directories, plain files and symlinks only"


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


def payload(path: Path, info: PackageInfo) -> tuple[list[Member], bytes | None]:
    """A package's payload members, checked, and its post-install script. Owners are dropped
    (root owns everything) and so are set-id and sticky bits; hard links, devices and FIFOs are
    refused."""
    members: list[Member] = []
    script = None
    try:
        with tarfile.open(path, "r:") as tar:
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


class AcmeProvisioner(Provisioner):
    name = "acme-tar"

    def __init__(self, *, motd: str | None = None) -> None:
        self.motd = motd

    def install(self, chroot: Chroot, packages: Sequence[PackageRequest]) -> None:
        names = [request.spec for request in packages if request.path is None]
        if names:
            raise RequestError(
                f"Acme Linux installs package files only, not names: {', '.join(names)}",
                hint="give the paths of .acme.tar files",
            )
        # Any other file a plugin claimed (a .deb, say) is refused here, before any change.
        files = [(p.path, read_package_info(p.path)) for p in packages if p.path is not None]
        unpacked = [(info, *payload(path, info)) for path, info in files]
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
