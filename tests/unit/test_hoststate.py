"""tests/hoststate.py read against a /proc and /sys/block of the test's own making: mount tables
of several mount namespaces, processes tied to a directory in each way, zombies, the test run's
own ancestry, and loop devices."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.hoststate import (
    Host,
    Process,
    choose_processes_under,
    held_under,
    lies_under,
    lineage,
    loop_devices,
    mentions,
    mount_point,
    mount_targets,
    namespace_readers,
    parse_stat,
    processes_left_under,
    processes_rooted_under,
    processes_under,
    read_mounts,
    read_processes,
)

ROOT = "/tmp/run/test_a1"
HOST_NAMESPACE = 4026531841
BAKE_NAMESPACE = 4026532500


def mountinfo_line(target: str, mount_id: int = 40) -> str:
    escaped = target.replace("\\", "\\134").replace(" ", "\\040").replace("\t", "\\011")
    return f"{mount_id} 1 0:{mount_id} / {escaped} rw,relatime shared:1 - tmpfs tmpfs rw"


@dataclass
class FakeProcess:
    pid: int
    ppid: int = 1
    argv: list[str] = field(default_factory=lambda: ["sleep", "60"])
    state: str = "S"
    root: str = "/"
    cwd: str = "/"
    namespace: int = HOST_NAMESPACE


def seen_from(root: str, table: list[str]) -> list[str]:
    """A mount table as a process rooted at ``root`` reads it: only what lies beneath its root,
    named from there, as the kernel shows it."""
    if root == "/":
        return table
    return [target.removeprefix(root) or "/" for target in table if lies_under(target, root)]


def make_host(
    tmp_path: Path,
    processes: list[FakeProcess],
    own_pid: int,
    mount_tables: dict[int, list[str]] | None = None,
) -> Host:
    """A /proc as the kernel lays it out, for the files hoststate reads; every process shows
    its namespace's mount table (``/`` and nothing else unless given)."""
    proc = tmp_path / "proc"
    tables = mount_tables or {}
    for fake in processes:
        directory = proc / str(fake.pid)
        (directory / "ns").mkdir(parents=True)
        name = Path(fake.argv[0]).name if fake.argv else "kworker/0:1"
        # Field 22, the start time, is 4242; the name holds what names may: spaces and ')'.
        rest = " ".join(["0"] * 17)
        (directory / "stat").write_text(
            f"{fake.pid} ({name}) x) {fake.state} {fake.ppid} {rest} 4242 0 0\n"
        )
        (directory / "cmdline").write_bytes(b"".join(a.encode() + b"\0" for a in fake.argv))
        (directory / "root").symlink_to(fake.root)
        (directory / "cwd").symlink_to(fake.cwd)
        (directory / "ns" / "mnt").symlink_to(f"mnt:[{fake.namespace}]")
        table = seen_from(fake.root, tables.get(fake.namespace, ["/"]))
        lines = [mountinfo_line(target, 40 + i) for i, target in enumerate(table)]
        (directory / "mountinfo").write_text("".join(line + "\n" for line in lines))
    (proc / "self").symlink_to(str(own_pid))
    (proc / "meminfo").write_text("MemTotal: 1 kB\n")  # not a process: ignored
    return Host(proc=proc, sys_block=tmp_path / "sys" / "block", own_pid=own_pid)


def add_loop_device(host: Host, name: str, backing: str) -> None:
    directory = host.sys_block / name / "loop"
    directory.mkdir(parents=True)
    (directory / "backing_file").write_text(backing + "\n")


def test_a_mount_point_with_escaped_characters_is_decoded() -> None:
    line = r"36 35 98:0 /mnt1 /tmp/a\040b/tab\011and\134slash rw,noatime master:1 - ext3 /dev/x rw"
    assert mount_point(line) == "/tmp/a b/tab\tand\\slash"
    assert mount_point(mountinfo_line("/srv/my disk\\x")) == "/srv/my disk\\x"


def test_stat_is_read_past_a_name_holding_spaces_and_parentheses() -> None:
    rest = " ".join(str(n) for n in range(5, 22))
    assert parse_stat(f"77 (a (b) c) R 12 {rest} 9000 0\n") == ("a (b) c", "R", 12, 9000)


@pytest.mark.parametrize(
    "text",
    [ROOT, ROOT + "/", ROOT + "/gnupg", "--homedir=" + ROOT + "/gnupg", "file://" + ROOT + "/x"],
)
def test_an_argument_naming_the_directory_or_below_mentions_it(text: str) -> None:
    assert mentions(text, ROOT)


@pytest.mark.parametrize("text", [ROOT + "0", ROOT + ".raw", "/var" + ROOT, "/tmp/run", ""])
def test_a_longer_or_other_name_does_not_mention_it(text: str) -> None:
    assert not mentions(text, ROOT)


def test_the_run_and_its_ancestors_are_spared_and_others_chosen_by_each_tie(
    tmp_path: Path,
) -> None:
    processes = [
        FakeProcess(1, ppid=0, argv=["/sbin/init"]),
        FakeProcess(50, argv=["pytest", f"--basetemp={ROOT}"]),  # the run's parent
        FakeProcess(100, ppid=50, argv=["python", "-m", "pytest"], cwd=ROOT),  # the run itself
        FakeProcess(200, ppid=100, argv=["gpg-agent", "--homedir", f"{ROOT}/gnupg", "--daemon"]),
        FakeProcess(201, cwd=f"{ROOT}/work"),
        FakeProcess(202, root=f"{ROOT}/image"),
        FakeProcess(203, state="Z", argv=[], cwd=ROOT),  # a zombie: holds nothing any more
        FakeProcess(204, argv=["sleep", f"{ROOT}0"], cwd="/tmp/run"),  # another test's
        FakeProcess(205, argv=[]),  # a kernel thread
    ]
    host = make_host(tmp_path, processes, own_pid=100)
    assert lineage(read_processes(host), 100) == {100, 50, 1}
    chosen = {p.pid: p.ties_to(ROOT) for p in processes_under(ROOT, host)}
    assert chosen == {200: ["command line"], 201: ["cwd"], 202: ["root"]}
    assert processes_rooted_under(ROOT, host) == [202]
    assert 203 not in {p.pid for p in read_processes(host)}


def test_choosing_works_on_processes_read_once() -> None:
    processes = [
        Process(10, 1, "S", "sh", 1, cwd=ROOT),
        Process(11, 10, "S", "cat", 1, argv=("cat", f"{ROOT}/log")),
        Process(12, 10, "R", "python", 1, root="/"),
    ]
    # Spared: the own process (11) and its parent (10), although both are tied to ROOT.
    assert choose_processes_under(processes, ROOT, own_pid=11) == []
    assert [p.pid for p in choose_processes_under(processes, ROOT, own_pid=12)] == [11]


def test_one_reader_per_namespace_is_chosen_preferring_an_unchrooted_one() -> None:
    def process(pid: int, namespace: int | None, root: str) -> Process:
        return Process(pid, 1, "S", "x", 1, root=root, mount_namespace=namespace)

    chrooted, plain, other, unknown = (
        process(7, BAKE_NAMESPACE, "/srv/image"),
        process(8, BAKE_NAMESPACE, "/"),
        process(9, HOST_NAMESPACE, "/"),
        process(10, None, "/"),
    )
    readers = namespace_readers([chrooted, plain, other, unknown])
    assert readers == {BAKE_NAMESPACE: plain, HOST_NAMESPACE: other}
    assert namespace_readers([chrooted]) == {BAKE_NAMESPACE: chrooted}


def test_mounts_are_read_once_per_namespace_and_named_by_it(tmp_path: Path) -> None:
    processes = [
        FakeProcess(1, ppid=0, argv=["/sbin/init"]),
        FakeProcess(100, argv=["pytest"]),
        # A bake's namespace: a package script chrooted into the image, and the holder.
        FakeProcess(301, namespace=BAKE_NAMESPACE, root=f"{ROOT}/image"),
        FakeProcess(300, argv=["unshare", "--mount", "sleep", "inf"], namespace=BAKE_NAMESPACE),
    ]
    tables = {
        HOST_NAMESPACE: ["/", "/proc", f"{ROOT}/mnt"],
        BAKE_NAMESPACE: ["/", f"{ROOT}/image", f"{ROOT}/image/proc"],
    }
    host = make_host(tmp_path, processes, own_pid=100, mount_tables=tables)
    mounts = read_mounts(host)
    assert sorted((m.namespace, m.target, m.in_own_namespace) for m in mounts) == [
        (HOST_NAMESPACE, "/", True),
        (HOST_NAMESPACE, "/proc", True),
        (HOST_NAMESPACE, f"{ROOT}/mnt", True),
        (BAKE_NAMESPACE, "/", False),
        (BAKE_NAMESPACE, f"{ROOT}/image", False),
        (BAKE_NAMESPACE, f"{ROOT}/image/proc", False),
    ]
    assert {m.reader.pid for m in mounts if m.namespace == BAKE_NAMESPACE} == {300}
    assert mount_targets(host).count(f"{ROOT}/mnt") == 1


def test_a_namespace_only_chrooted_processes_hold_is_named_from_its_root(tmp_path: Path) -> None:
    processes = [
        FakeProcess(100, argv=["pytest"]),
        FakeProcess(301, namespace=BAKE_NAMESPACE, root=f"{ROOT}/image"),
    ]
    tables = {BAKE_NAMESPACE: ["/", f"{ROOT}/image", f"{ROOT}/image/proc"]}
    host = make_host(tmp_path, processes, own_pid=100, mount_tables=tables)
    bake_mounts = [m.target for m in read_mounts(host) if m.namespace == BAKE_NAMESPACE]
    assert bake_mounts == [f"{ROOT}/image", f"{ROOT}/image/proc"]


def test_loop_devices_over_deleted_files_are_found(tmp_path: Path) -> None:
    host = make_host(tmp_path, [FakeProcess(100)], own_pid=100)
    add_loop_device(host, "loop3", f"{ROOT}/volume.raw (deleted)")
    add_loop_device(host, "loop0", "/var/lib/other/disk.raw")
    assert loop_devices(host) == [
        ("/dev/loop0", "/var/lib/other/disk.raw"),
        ("/dev/loop3", f"{ROOT}/volume.raw"),
    ]


def test_everything_held_is_named_precisely(tmp_path: Path) -> None:
    processes = [
        FakeProcess(1, ppid=0, argv=["/sbin/init"]),
        FakeProcess(100, argv=["pytest"]),
        FakeProcess(300, argv=["unshare", "--mount", "sleep", "inf"], namespace=BAKE_NAMESPACE),
        FakeProcess(400, argv=["gpg-agent", "--homedir", f"{ROOT}/gnupg"], cwd=f"{ROOT}/gnupg"),
    ]
    tables = {
        HOST_NAMESPACE: ["/", f"{ROOT}/own mount", "/tmp/run/test_a10"],
        BAKE_NAMESPACE: ["/", f"{ROOT}/image"],
    }
    host = make_host(tmp_path, processes, own_pid=100, mount_tables=tables)
    add_loop_device(host, "loop7", f"{ROOT}/image.raw")
    assert held_under(ROOT + "/", host) == [
        f"process 400 (cwd, command line): gpg-agent --homedir {ROOT}/gnupg",
        f"mount {ROOT}/own mount",
        f"mount {ROOT}/image in mount namespace mnt:[{BAKE_NAMESPACE}] "
        "of process 300: unshare --mount sleep inf",
        f"/dev/loop7 over {ROOT}/image.raw",
    ]
    assert held_under("/tmp/run/test_b1", host) == []


def test_the_real_host_is_read_without_error() -> None:
    own = [p for p in read_processes(Host()) if p.pid == os.getpid()]
    assert len(own) == 1 and own[0].state in ("R", "S")
    assert "/" in mount_targets()


def test_a_process_ending_is_waited_for_and_a_zombie_is_no_leftover(tmp_path: Path) -> None:
    ending = subprocess.Popen(["sleep", "0.5"], cwd=tmp_path)
    staying = subprocess.Popen(["sleep", "30"], cwd=tmp_path)
    try:
        left = processes_left_under(str(tmp_path), timeout_s=0.1)
        assert sorted(p.pid for p in left) == sorted([ending.pid, staying.pid])
        staying.kill()
        # Neither is reaped yet: both are zombies, which hold nothing.
        assert processes_left_under(str(tmp_path), timeout_s=10) == []
        assert ending.poll() == 0
    finally:
        for process in (ending, staying):
            process.kill()
            process.wait()
