"""The acme-tar provisioner: unpacks .acme.tar packages into the image and keeps Acme's package
database, /var/lib/acme/installed (one line per package: name version release arch)."""

from __future__ import annotations

import contextlib
import os
import shutil
import tarfile
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path, PurePosixPath

from aminator_acme.package import CONTROL_FILES, POSTINST, read_package_info
from aminator_ng.api import (
    BakeError,
    Chroot,
    ManifestEntry,
    PackageInfo,
    PackageRequest,
    Provisioner,
    RequestError,
)

DATABASE = "/var/lib/acme/installed"
#: Where packages are unpacked inside the image for the install, then removed.
STAGING_PARENT = "/var/cache/acme"


def write_file(path: Path, content: bytes, mode: int = 0o644) -> None:
    """Put a new file at ``path``: written beside it, then renamed over it, so that a symlink
    there is replaced, never written through."""
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    temporary = Path(name)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(content)
            os.fchmod(file.fileno(), mode)
        temporary.replace(path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def read_database(chroot: Chroot) -> dict[str, PackageInfo]:
    path = chroot.path(DATABASE)
    if not path.is_file():
        return {}
    installed = {}
    for line in path.read_text().splitlines():
        fields = line.split()
        if len(fields) == 4:
            installed[fields[0]] = PackageInfo(*fields)
    return installed


def write_database(chroot: Chroot, installed: Mapping[str, PackageInfo]) -> None:
    path = chroot.path(DATABASE, follow_last=False)
    path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    lines = [f"{p.name} {p.version} {p.release} {p.arch}\n" for _, p in sorted(installed.items())]
    write_file(path, "".join(lines).encode())


@contextlib.contextmanager
def staging_dir(chroot: Chroot) -> Iterator[Path]:
    """A fresh, empty directory inside the image; removed afterwards, with its parent when the
    bake created that."""
    parent = chroot.path(STAGING_PARENT)
    created_parent = not parent.exists()
    parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="unpack-", dir=parent))
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if created_parent:
            shutil.rmtree(parent, ignore_errors=True)


def unpack(package: Path, info: PackageInfo, target: Path) -> None:
    """Extract a package into an empty directory. tarfile's "data" filter refuses what could
    leave it (absolute or ``..`` paths, links pointing out) and special files, and drops
    set-id bits and the archive's owners."""
    try:
        with tarfile.open(package, "r:") as tar:
            tar.extractall(target, filter="data")
    except tarfile.FilterError as exc:
        raise RequestError(
            f"package {info.name} has an unsafe member: {exc}",
            hint="an Acme package holds relative paths, relative links and plain files only",
        ) from exc
    except tarfile.TarError as exc:
        raise RequestError(f"package {info.name} is damaged: {exc}") from exc
    except OSError as exc:  # the image's filesystem is full, say
        raise BakeError(f"installing package {info.name} failed: cannot unpack it: {exc}") from exc


def place(chroot: Chroot, info: PackageInfo, unpacked: Path) -> None:
    """Move an unpacked payload into the image. Each path is resolved inside the image (an
    absolute symlink there points into the image, not at the host), and a file is renamed over
    what was there, so that a symlink in its place is replaced, never written through."""
    for staged in sorted(unpacked.rglob("*")):
        relative = staged.relative_to(unpacked)
        if str(relative) in CONTROL_FILES:
            continue
        inside = PurePosixPath("/", relative.as_posix())
        try:
            if staged.is_dir() and not staged.is_symlink():
                chroot.path(inside).mkdir(mode=0o755, parents=True, exist_ok=True)
                continue
            target = chroot.path(inside, follow_last=False)
            if target.is_dir() and not target.is_symlink():
                raise IsADirectoryError(f"{inside} is a directory in the image")
            staged.replace(target)
        except OSError as exc:
            raise BakeError(
                f"installing package {info.name} failed: cannot place {inside}: {exc}"
            ) from exc


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
        installed = read_database(chroot)
        with staging_dir(chroot) as staging:
            scripts = []
            for index, (path, info) in enumerate(files):
                unpacked = staging / f"{index:02d}-{info.name}"
                unpacked.mkdir()
                unpack(path, info, unpacked)
                place(chroot, info, unpacked)
                installed[info.name] = info
                postinst = unpacked / POSTINST
                if postinst.is_file():
                    scripts.append((info, "/" + postinst.relative_to(chroot.root).as_posix()))
            write_database(chroot, installed)
            for info, script in scripts:
                # Package scripts run inside the image only, never on the host.
                result = chroot.run(["/bin/sh", "-e", script], check=False)
                if result.returncode != 0:
                    raise BakeError(
                        f"installing package {info.name} failed: its post-install script "
                        f"exited {result.returncode}",
                        hint="see the bake log",
                    )
        if self.motd is not None:
            motd = self.motd if self.motd.endswith("\n") else self.motd + "\n"
            write_file(chroot.path("/etc/motd", follow_last=False), motd.encode())

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
