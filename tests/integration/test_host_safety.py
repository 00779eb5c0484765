"""Package scripts are untrusted: nothing they do reaches the host, as root, for real.

Each attack is a real .deb whose postinst does what an attacker's would: walk up its ancestors'
/proc entries to the host's /, read the host's hostname, write /proc/sys, leave a daemon, swap a
directory the engine touches for a symlink to a host directory. The host directories they aim at
are the test's own, and each is compared byte for byte (content, mode, owner) before and after.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import stat
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from aminator_ng.host.namespace import bake_namespace
from tests.hoststate import held_under, processes_rooted_under
from tests.integration.conftest import (
    BASE_NAME,
    Workspace,
    assert_one_error_line,
    mounted_image,
    wait_for_postinst,
)
from tests.integration.debs import build_deb

pytestmark = pytest.mark.privileged

IMAGE_HOSTNAME = "baked-image"
#: Where the escaping postinst writes what it saw, inside the image.
REPORT = "var/lib/escape-report"


def victim_dir(tmp_path: Path) -> Path:
    """A host directory of the test's own, with a file, a private file and a subdirectory."""
    victim = tmp_path / "victim"
    (victim / "sub").mkdir(parents=True)
    (victim / "file").write_text("original\n")
    (victim / "private").write_text("secret\n")
    (victim / "private").chmod(0o600)
    (victim / "sub" / "nested").write_text("nested\n")
    victim.chmod(0o751)
    return victim


def tree_state(root: Path) -> dict[str, tuple[int, int, int, bytes]]:
    """Every entry under ``root`` (itself included): mode, owner, group and content."""
    state = {}
    for path in [root, *sorted(root.rglob("*"))]:
        info = path.lstat()
        content = path.read_bytes() if stat.S_ISREG(info.st_mode) else b""
        state[str(path.relative_to(root))] = (info.st_mode, info.st_uid, info.st_gid, content)
    return state


def namespaces_of(pids: list[int], kind: str) -> set[str]:
    """The namespaces of this kind that these processes are in (those still running)."""
    found = set()
    for pid in pids:
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            found.add(os.readlink(f"/proc/{pid}/ns/{kind}"))
    return found


@pytest.fixture
def named_base(
    workspace: Workspace, modified_base: Callable[[Callable[[Path], None]], Path]
) -> str:
    """The Debian base with a hostname of its own."""

    def name_it(root: Path) -> None:
        (root / "etc/hostname").write_text(f"{IMAGE_HOSTNAME}\n")

    imported = workspace.aminate("base", "import", "named", str(modified_base(name_it)))
    assert imported.returncode == 0, imported.stderr
    return "named"


ESCAPE_POSTINST = """
victim={victim}
pid=$$
while [ -n "$pid" ] && [ "$pid" != 0 ]; do
    echo "ancestor $pid root=$(readlink /proc/$pid/root)" >> /{report}
    echo escaped > /proc/$pid/root$victim/escaped-$pid 2>/dev/null || true
    chmod 777 /proc/$pid/root$victim 2>/dev/null || true
    pid=$(awk '/^PPid:/ {{print $2}}' /proc/$pid/status 2>/dev/null || true)
done
for proc in /proc/[0-9]*; do
    echo "visible ${{proc#/proc/}} root=$(readlink $proc/root)" >> /{report}
    echo escaped > $proc/root$victim/visible 2>/dev/null || true
done
echo "hostname $(hostname)" >> /{report}
# Writing back the value it has: harmless to the host even if it got through.
if cat /proc/sys/kernel/sysrq > /proc/sys/kernel/sysrq 2>/dev/null; then
    echo "proc-sys writable" >> /{report}
fi
chmod 600 /proc/1/fd/0 2>/dev/null || true
setsid sh -c 'sleep 1000' </dev/null >/dev/null 2>&1 &
"""


def test_a_postinst_cannot_reach_the_host_through_its_ancestors(
    workspace: Workspace, named_base: str, tmp_path: Path
) -> None:
    victim = victim_dir(tmp_path)
    before = tree_state(victim)
    null_mode = Path("/dev/null").stat().st_mode
    deb = build_deb(
        tmp_path, "escaper", postinst=ESCAPE_POSTINST.format(victim=victim, report=REPORT)
    )
    result = workspace.aminate("-b", named_base, "--output", "json", str(deb))
    assert result.returncode == 0, result.stderr

    assert tree_state(victim) == before
    assert Path("/dev/null").stat().st_mode == null_mode
    assert not processes_rooted_under(str(workspace.home))
    image_raw = workspace.scratch / "escaper.raw"
    exported = workspace.aminate("export", result.json()["image_id"], str(image_raw))
    assert exported.returncode == 0, exported.stderr
    with mounted_image(image_raw, tmp_path / "image") as root:
        report = (root / REPORT).read_text().splitlines()
    # Every process the script could see, its ancestors included, is the image's own: its
    # root is the image's /, and the first of them is the install itself, pid 1.
    ancestors = [line for line in report if line.startswith("ancestor ")]
    visible = [line for line in report if line.startswith("visible ")]
    assert ancestors and visible
    assert all(line.endswith(" root=/") for line in ancestors + visible), report
    assert ancestors[-1].startswith("ancestor 1 ")
    assert f"hostname {IMAGE_HOSTNAME}" in report
    assert socket.gethostname() != IMAGE_HOSTNAME
    assert "proc-sys writable" not in report


#: Directories the engine touches after the install: policy-rc.d, resolv.conf, the package
#: lists, the bake's tmpfs, the staged package and the staging directory.
SWAPPED = (
    "/usr/sbin",
    "/etc",
    "/var/lib/apt",
    "/run",
    "/run/aminator-ng/packages",
    "/run/aminator-ng",
)


@pytest.mark.parametrize(
    ("swapped", "how"),
    [(swapped, "absolute") for swapped in SWAPPED]
    # A relative symlink climbs out of the image when the host, not the image, resolves it.
    + [("/usr/sbin", "relative"), ("/run/aminator-ng", "relative")],
)
def test_a_directory_swapped_for_a_symlink_to_the_host_changes_nothing_there(
    workspace: Workspace, tmp_path: Path, swapped: str, how: str
) -> None:
    victim = victim_dir(tmp_path)
    before = tree_state(victim)
    target = str(victim) if how == "absolute" else "../" * 12 + str(victim).lstrip("/")
    # A mount point in the script's own namespace moves only once unmounted there.
    unmount = f"umount -l {swapped} 2>/dev/null || true\n" if swapped == "/run" else ""
    postinst = f"{unmount}mv {swapped} {swapped}.moved-away\nln -s {target} {swapped}\n"
    deb = build_deb(tmp_path, "swapper", postinst=postinst)
    result = workspace.aminate("-b", BASE_NAME, "--output", "json", str(deb))

    assert tree_state(victim) == before, f"{swapped} swapped: the host directory changed"
    assert held_under(str(tmp_path)) == []
    if result.returncode == 0:
        return  # nothing the engine touched lay below the swapped directory
    line = assert_one_error_line(result, 1, "replaced during the bake")
    assert any(part in line for part in (swapped, *Path(swapped).parents)), line
    # The staged package is removed as the install ends; the rest in the chroot's teardown.
    assert result.json()["error"]["step"] in ("install", "chroot_teardown")
    assert workspace.baked_images() == []


def test_a_bake_killed_during_the_install_leaves_nothing_on_the_host(
    workspace: Workspace, debs: dict[str, Path]
) -> None:
    process = workspace.start("-b", BASE_NAME, str(debs["slow"]))
    try:
        wait_for_postinst(workspace, process)
        held = held_under(str(workspace.home))
        # The bake's mounts are in a namespace of its own: not in this process's mount table.
        own = Path("/proc/self/mountinfo").read_text()
        assert any(line.startswith("mount ") for line in held), held
        assert str(workspace.home) not in own
        # The engine itself never left the host's namespaces; the install and its script did.
        for kind in ("mnt", "pid", "uts"):
            mine = os.readlink(f"/proc/self/ns/{kind}")
            assert os.readlink(f"/proc/{process.pid}/ns/{kind}") == mine
            theirs = namespaces_of(processes_rooted_under(str(workspace.home)), kind)
            assert theirs and mine not in theirs
    finally:
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=60)
    # No command afterwards: the kernel ends the namespaces, and with them everything.
    deadline = time.monotonic() + 10
    while held_under(str(workspace.home)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert held_under(str(workspace.home)) == []
    # What a killed bake leaves in the store (its volume, its record) is cleanup's.
    assert workspace.aminate("cleanup").returncode == 0


def test_a_namespace_ended_as_soon_as_it_started_leaves_no_init() -> None:
    """A bake that fails at once (a bad request) ends its namespace right after starting it:
    the init must already die with its holder then."""
    inits = []
    for _ in range(40):
        with bake_namespace(Path("/")) as namespace:
            inits.append(namespace.init_pid)
    # Each was waited for on leaving; none may linger as a process of that pid and program.
    for pid in inits:
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            assert "aminator_ng.host.sandbox" not in Path(f"/proc/{pid}/cmdline").read_text()
