"""Base images of every disk layout and root filesystem: made by ``aminate base create``, baked,
exported; and XFS copies of one image mounted side by side (the engine mounts XFS with nouuid)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import stat
import struct
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from aminator_ng.errors import CommandError
from aminator_ng.host.blockdev import find_root_filesystem, loop_device, partition_nodes
from aminator_ng.host.diskimage import MIB, build_disk_image, root_partition_type
from aminator_ng.host.mount import mounted
from tests.hoststate import loop_devices, mount_targets, release_everything_under
from tests.integration.conftest import Workspace, dpkg_status, mounted_image

pytestmark = pytest.mark.privileged

#: The session base of conftest.py is a GPT, ext4 disk: the other three are made here.
NEW_COMBINATIONS = [("gpt", "xfs"), ("whole", "ext4"), ("whole", "xfs")]
ALL_COMBINATIONS = [("gpt", "ext4"), *NEW_COMBINATIONS]
SIZE = "1G"
GIB = 1 << 30


def base_name(layout: str, filesystem: str) -> str:
    return f"debian-12-{layout}-{filesystem}"


def combination_id(combination: tuple[str, str]) -> str:
    return "-".join(combination)


@dataclass(frozen=True)
class CreatedBase:
    """A base made by ``aminate base create``: its exported disk, and the image it registered."""

    raw: Path
    image: dict[str, Any]


@pytest.fixture(scope="module")
def created_bases(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], CreatedBase]:
    """One base per new combination, made at once (in stores of their own), then exported."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    root = tmp_path_factory.mktemp("layouts")
    started: dict[tuple[str, str], tuple[Workspace, subprocess.Popen[str]]] = {}
    created: dict[tuple[str, str], CreatedBase] = {}
    try:
        for layout, filesystem in NEW_COMBINATIONS:
            space = Workspace(root / f"{layout}-{filesystem}")
            argv = ["base", "create", base_name(layout, filesystem), "--layout", layout]
            argv += ["--fs", filesystem, "--size", SIZE, "--output", "json"]
            started[layout, filesystem] = (space, space.start(*argv))
        for combination, (space, process) in started.items():
            stdout, stderr = process.communicate(timeout=900)
            assert process.returncode == 0, stderr
            image = json.loads(stdout)
            raw = space.scratch / "base.raw"
            exported = space.aminate("export", image["image_id"], str(raw))
            assert exported.returncode == 0, exported.stderr
            space.assert_nothing_left()
            shutil.rmtree(space.home)
            created[combination] = CreatedBase(raw, image)
    finally:
        for _, process in started.values():
            if process.poll() is None:  # SIGTERM: the engine releases what it holds
                process.send_signal(signal.SIGTERM)
                process.communicate(timeout=120)
        release_everything_under(str(root))
    return created


def base_disk(request: pytest.FixtureRequest, layout: str, filesystem: str) -> Path:
    """The exported base disk of a combination; only the fixtures a test needs are made."""
    if (layout, filesystem) == ("gpt", "ext4"):
        session_base: Path = request.getfixturevalue("base_raw")
        return session_base
    created: dict[tuple[str, str], CreatedBase] = request.getfixturevalue("created_bases")
    return created[layout, filesystem].raw


@pytest.fixture
def space(tmp_path: Path) -> Iterator[Workspace]:
    """A store of the test's own; on teardown, nothing may be left."""
    workspace = Workspace(tmp_path)
    try:
        yield workspace
        workspace.assert_nothing_left()
    finally:
        release_everything_under(str(tmp_path))


def blkid(path: Path, *, offset: int = 0) -> dict[str, str]:
    argv = ["blkid", "-p", "-o", "export"]
    if offset:
        argv += ["--offset", str(offset)]
    result = subprocess.run([*argv, str(path)], capture_output=True, text=True, check=False)
    assert result.returncode in (0, 2), result.stderr
    return dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)


def assert_disk_layout(raw: Path, layout: str, filesystem: str) -> None:
    """The disk is laid out as asked, by blkid and sfdisk (not by the engine's own probing)."""
    whole = blkid(raw)
    if layout == "whole":
        assert "PTTYPE" not in whole, whole
        assert (whole.get("TYPE"), whole.get("LABEL")) == (filesystem, "root"), whole
        return
    assert whole.get("PTTYPE") == "gpt", whole
    table = subprocess.run(
        ["sfdisk", "--json", str(raw)], capture_output=True, text=True, check=True
    ).stdout
    partitions = json.loads(table)["partitiontable"]["partitions"]
    assert len(partitions) == 1, partitions
    assert partitions[0]["start"] == 2048
    assert partitions[0]["type"].upper() == root_partition_type()
    root = blkid(raw, offset=2048 * 512)
    assert (root.get("TYPE"), root.get("LABEL")) == (filesystem, "root"), root


@pytest.mark.parametrize("combination", ALL_COMBINATIONS, ids=combination_id)
def test_a_base_of_each_layout_and_filesystem_bakes_into_a_larger_root(
    combination: tuple[str, str],
    request: pytest.FixtureRequest,
    space: Workspace,
    debs: dict[str, Path],
) -> None:
    layout, filesystem = combination
    name = base_name(layout, filesystem)
    base = base_disk(request, layout, filesystem)
    assert_disk_layout(base, layout, filesystem)
    imported = space.aminate("base", "import", name, str(base))
    assert imported.returncode == 0, imported.stderr
    grown_gib = -(-base.stat().st_size // GIB) + 1

    baked = space.aminate(
        "-b", name, "--root-volume-size", str(grown_gib), str(debs["hello"]), "--output", "json"
    )
    assert baked.returncode == 0, baked.stderr
    result = baked.json()
    assert result["base_image_name"] == name
    assert [p["name"] for p in result["packages"]] == ["hello"]

    raw = space.scratch / "baked.raw"
    exported = space.aminate("export", result["image_id"], str(raw))
    assert exported.returncode == 0, exported.stderr
    assert raw.stat().st_size == grown_gib * GIB
    assert_disk_layout(raw, layout, filesystem)
    if layout == "gpt":
        # The partition reaches the end of the disk, and the backup table sits there.
        verified = subprocess.run(["sfdisk", "--verify", str(raw)], capture_output=True, text=True)
        assert verified.returncode == 0 and "No errors detected" in verified.stdout, verified
        table = json.loads(
            subprocess.run(["sfdisk", "--json", str(raw)], capture_output=True, text=True).stdout
        )["partitiontable"]
        [root_partition] = table["partitions"]
        assert (root_partition["start"] + root_partition["size"]) * 512 > (grown_gib * GIB) - MIB
    with mounted_image(raw, space.scratch / "baked") as root:
        assert dpkg_status(root, "hello") == "ii"
        assert dpkg_status(root, "jq") == "ii"
        assert (root / "usr/bin/hello").is_file()
        usage = os.statvfs(root)
        assert usage.f_blocks * usage.f_frsize > (grown_gib - 0.25) * GIB, usage


@pytest.mark.parametrize("combination", NEW_COMBINATIONS, ids=combination_id)
def test_base_create_tags_the_layout_and_filesystem(
    combination: tuple[str, str], created_bases: dict[tuple[str, str], CreatedBase]
) -> None:
    layout, filesystem = combination
    image = created_bases[combination].image
    assert image["name"] == base_name(layout, filesystem)
    assert image["tags"]["layout"] == layout
    assert image["tags"]["filesystem"] == filesystem
    assert image["tags"]["suite"] == "bookworm"


@contextlib.contextmanager
def mounted_taking_its_uuid(raw: Path, mount_point: Path) -> Iterator[Path]:
    """A disk's root mounted read-only without ``nouuid`` (unlike ``mounted_image``), so that
    the kernel refuses any other XFS filesystem with its UUID mounted without ``nouuid``."""
    mount_point.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        device = stack.enter_context(loop_device(raw, read_only=True))
        root_fs = find_root_filesystem(device, stack.enter_context(partition_nodes(device)))
        assert root_fs.fstype == "xfs"
        stack.enter_context(mounted(root_fs.device, mount_point, fstype="xfs", options=["ro"]))
        yield mount_point


@pytest.mark.parametrize("layout", ["gpt", "whole"])
def test_xfs_copies_of_one_image_mount_side_by_side(
    layout: str,
    created_bases: dict[tuple[str, str], CreatedBase],
    space: Workspace,
    debs: dict[str, Path],
) -> None:
    base = created_bases[layout, "xfs"].raw
    name = base_name(layout, "xfs")
    imported = space.aminate("base", "import", name, str(base))
    assert imported.returncode == 0, imported.stderr
    copy = space.scratch / "copy.raw"
    shutil.copyfile(base, copy)

    # The base is mounted without nouuid: its UUID is now taken.
    with mounted_taking_its_uuid(base, space.scratch / "base"):
        # A copy mounted without nouuid is refused, so the bake below proves the engine's nouuid.
        with (
            pytest.raises(CommandError, match="mount"),
            mounted_taking_its_uuid(copy, space.scratch / "copy"),
        ):
            pass
        baked = space.aminate("-b", name, str(debs["hello"]), "--output", "json")
        assert baked.returncode == 0, baked.stderr


@pytest.mark.parametrize(
    ("layout", "size", "smallest"), [("whole", "299M", "300M"), ("gpt", "301M", "302M")]
)
def test_a_disk_too_small_for_xfs_is_refused_before_bootstrapping(
    layout: str, size: str, smallest: str, space: Workspace
) -> None:
    result = space.aminate(
        "base", "create", "tiny", "--layout", layout, "--fs", "xfs", "--size", size
    )
    assert result.returncode == 2, result.stderr
    assert f"hint: use at least {smallest}" in result.stderr
    assert "bootstrapping" not in result.stderr
    assert space.images() == []


# What a disk image keeps of its tree: ownership, modes, times, hard links, xattrs, ACLs,
# capabilities, device nodes, FIFOs, symlinks and holes.

CAP_NET_RAW = 13
#: ``setcap cap_net_raw+ep``: VFS_CAP_REVISION_2 with the effective flag; permitted, inheritable.
CAPABILITY = struct.pack("<IIIII", 0x02000001, 1 << CAP_NET_RAW, 0, 0, 0)
ACL_UNDEFINED_ID = 0xFFFFFFFF


def access_acl(*entries: tuple[int, int, int]) -> bytes:
    """A ``system.posix_acl_access`` value: version 2, then (tag, permissions, id) entries."""
    return struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *entry) for entry in entries)


#: user::rw- user:1000:r-- group::r-- mask::r-- other::---
ACL = access_acl(
    (0x01, 6, ACL_UNDEFINED_ID),
    (0x02, 4, 1000),
    (0x04, 4, ACL_UNDEFINED_ID),
    (0x10, 4, ACL_UNDEFINED_ID),
    (0x20, 0, ACL_UNDEFINED_ID),
)


def make_tree(tree: Path) -> None:
    tree.mkdir()
    (tree / "owned").write_text("owned\n")
    os.chown(tree / "owned", 1234, 5678)
    (tree / "owned").chmod(0o640)
    os.utime(tree / "owned", ns=(1_000_000_000, 1_500_000_000_000_000_000))
    (tree / "setuid").write_text("#!/bin/sh\n")
    (tree / "setuid").chmod(0o4755)
    (tree / "capable").write_text("#!/bin/sh\n")
    os.setxattr(tree / "capable", "security.capability", CAPABILITY)
    (tree / "acl").write_text("acl\n")
    os.setxattr(tree / "acl", "system.posix_acl_access", ACL)
    (tree / "noted").write_text("noted\n")
    os.setxattr(tree / "noted", "user.note", b"kept")
    (tree / "one").write_text("linked\n")
    (tree / "two").hardlink_to(tree / "one")
    (tree / "link").symlink_to("one")
    os.lchown(tree / "link", 42, 42)
    os.mkfifo(tree / "fifo")
    os.mknod(tree / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    with (tree / "sparse").open("wb") as sparse:
        sparse.seek(8 * MIB)
        sparse.write(b"end\n")
    (tree / "tmp").mkdir()
    (tree / "tmp").chmod(0o1777)


def describe_tree(root: Path) -> dict[str, Any]:
    """What must survive, per path; hard links as the set of their paths."""
    described: dict[str, Any] = {}
    links: dict[int, set[str]] = {}
    for directory, dirs, files in os.walk(root):
        names = [*dirs, *files] if directory != str(root) else [".", *dirs, *files]
        for name in names:
            path = Path(directory, name)
            relative = str(path.relative_to(root)) if name != "." else "."
            if relative == "lost+found":
                continue
            info = path.lstat()
            xattrs = {
                key: os.getxattr(path, key, follow_symlinks=False)
                for key in os.listxattr(path, follow_symlinks=False)
                if not key.startswith("trusted.SGI_ACL")  # XFS's own view of ACLs, to root
            }
            described[relative] = {
                "mode": stat.filemode(info.st_mode),
                "owner": (info.st_uid, info.st_gid),
                "size": None if stat.S_ISDIR(info.st_mode) else info.st_size,
                "mtime": info.st_mtime_ns // 10**9,  # mkfs.ext4 -d keeps whole seconds
                "rdev": info.st_rdev,
                "target": os.readlink(path) if stat.S_ISLNK(info.st_mode) else None,
                "xattrs": xattrs,
            }
            if info.st_nlink > 1 and not stat.S_ISDIR(info.st_mode):
                links.setdefault(info.st_ino, set()).add(relative)
    described["hard links"] = sorted(sorted(group) for group in links.values())
    return described


@pytest.mark.parametrize("combination", ALL_COMBINATIONS, ids=combination_id)
def test_the_disk_keeps_what_the_tree_holds(combination: tuple[str, str], tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    layout, filesystem = combination
    tree = tmp_path / "tree"
    make_tree(tree)
    tree.chmod(0o750)
    raw = tmp_path / "disk.raw"
    try:
        build_disk_image(tree, raw, 320 * MIB, layout=layout, filesystem=filesystem)
        # The XFS filesystem was filled through a loop device and a mount: both are gone.
        assert not [dev for dev, backing in loop_devices() if backing.startswith(str(tmp_path))]
        assert not [target for target in mount_targets() if target.startswith(str(tmp_path))]
        assert sorted(p.name for p in tmp_path.iterdir()) == ["disk.raw", "tree"]
        assert_disk_layout(raw, layout, filesystem)
        with mounted_image(raw, tmp_path / "mnt") as root:
            expected, found = describe_tree(tree), describe_tree(root)
            if filesystem == "ext4":  # mkfs.ext4 -d gives the root directory its own mode, times
                del expected["."], found["."]
            assert found == expected
            assert (root / "sparse").stat().st_blocks * 512 < MIB
    finally:
        release_everything_under(str(tmp_path))


def test_a_failed_xfs_fill_releases_what_it_acquired(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    tree = tmp_path / "tree"
    tree.mkdir()
    with (tree / "big").open("wb") as big:  # more data than the filesystem holds
        for _ in range(320):
            big.write(b"x" * MIB)
    raw = tmp_path / "disk.raw"
    try:
        with pytest.raises(CommandError, match=r"copy .* into the xfs filesystem"):
            build_disk_image(tree, raw, 300 * MIB, layout="whole", filesystem="xfs")
        assert not [dev for dev, backing in loop_devices() if backing.startswith(str(tmp_path))]
        assert not [target for target in mount_targets() if target.startswith(str(tmp_path))]
        assert sorted(p.name for p in tmp_path.iterdir()) == ["disk.raw", "tree"]
    finally:
        release_everything_under(str(tmp_path))
