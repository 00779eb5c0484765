"""How fast a bake is, next to the same chroot sequence typed by hand.

Run as root from the checkout, after the README's set-up:

    .venv/bin/python bench/bake_benchmark.py [--runs N] [--mode compare|volumes|concurrent|all]
                                             [--store xfs|here] [--base-raw FILE]

It works in a scratch directory of its own (removed afterwards): by default an XFS filesystem
on a sparse file (``--store xfs``), so that volume and snapshot copies are reflink clones, or
the filesystem of the system's temporary directory (``--store here``). Modes:

- ``compare``: the example package baked onto a base with every default step (hygiene, secret
  scan, SBOM), with the package cache warm (a second bake) and cold (cleared first), and the
  same sequence by hand (copy the base disk, attach, mount, bind /proc /sys /dev, apt-get
  update, apt-get install ./pkg.deb, clean, tear down), alternating, N times each. Prints each
  one's median wall and CPU time, the ratios, and the bake's own extra steps.
- ``volumes``: the create_volume and snapshot steps of bakes onto a 2 GiB and a 32 GiB base.
- ``concurrent``: the wall time of one bake, and of 4 started at once, alternating; and the same
  for a piece of pure CPU work, which shows how four processes scale on the machine's CPUs.

Figures are printed, never asserted: this is not a test.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
AMINATE = [sys.executable, "-m", "aminator_ng"]
PACKAGE_TREE = REPO / "examples" / "hello"
#: The steps a hand-typed sequence does not do: what the bake spends on its own guarantees.
EXTRA_STEPS = ("inspect", "hygiene", "scan", "name", "sbom", "snapshot", "register", "publish")
HAND_SEQUENCE = r"""
set -euo pipefail
base=$1 deb=$2 work=$3
mkdir -p "$work/root"
cp --reflink=auto --sparse=always "$base" "$work/disk.raw"
dev=$(losetup --show -f "$work/disk.raw")
trap 'umount -R "$work/root" 2>/dev/null || true; partx -d "$dev"; losetup -d "$dev"' EXIT
partx -a "$dev"
mount "${dev}p1" "$work/root"
for fs in proc sys dev; do mount --rbind "/$fs" "$work/root/$fs"; done
cp /etc/resolv.conf "$work/root/etc/resolv.conf"
cp "$deb" "$work/root/tmp/pkg.deb"
chroot "$work/root" apt-get update -q
chroot "$work/root" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q /tmp/pkg.deb
chroot "$work/root" apt-get clean
rm -rf "$work/root/var/lib/apt/lists/"*_* "$work/root/tmp/pkg.deb"
umount -R "$work/root"
partx -d "$dev"
losetup -d "$dev"
trap - EXIT
rm -f "$work/disk.raw"
"""


@dataclass(frozen=True)
class Run:
    wall_s: float
    cpu_s: float
    result: dict[str, Any] | None = None


def timed(argv: Sequence[str], env: dict[str, str]) -> tuple[Run, str]:
    """Wall time, and the CPU time of the command and every descendant it waited for."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:4])[:200]} failed ({done.returncode}):\n{done.stderr}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Run(wall, cpu), done.stdout


class Bench:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.home = root / "home"
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("AMINATOR_")},
            "AMINATOR_HOME": str(self.home),
            "AMINATOR_LOG_DIR": str(root / "log"),
            "XDG_CONFIG_HOME": str(root / "config"),
            "PYTHONPATH": str(REPO),
        }
        self.deb = root / "hello_1.0-1_all.deb"
        subprocess.run(
            ["dpkg-deb", "--root-owner-group", "--build", str(PACKAGE_TREE), str(self.deb)],
            check=True,
            capture_output=True,
        )

    def aminate(self, *args: str) -> tuple[Run, str]:
        return timed([*AMINATE, *args], self.env)

    def bake(self, base: str, *options: str) -> Run:
        run, stdout = self.aminate("-b", base, "--output", "json", *options, str(self.deb))
        return Run(run.wall_s, run.cpu_s, json.loads(stdout))

    def hand(self, base_raw: Path) -> Run:
        work = self.root / "hand"
        run, _ = timed(
            ["bash", "-c", HAND_SEQUENCE, "hand", str(base_raw), str(self.deb), str(work)], self.env
        )
        return run

    def base(self, name: str, raw: Path | None) -> Path:
        """A base in the store (imported, or made with base create), and its disk as a file."""
        if raw is not None:
            _, stdout = self.aminate("base", "import", name, str(raw), "--output", "json")
        else:
            _, stdout = self.aminate(
                "base", "create", name, "--suite", "bookworm", "--output", "json"
            )
        exported = self.root / f"{name}.raw"
        self.aminate("export", json.loads(stdout)["image_id"], str(exported))
        return exported


@contextlib.contextmanager
def scratch(store: str) -> Iterator[Path]:
    """The benchmark's directory: on a fresh XFS filesystem, or where temporary files go."""
    root = Path(tempfile.mkdtemp(prefix="aminator-bench-"))
    try:
        if store == "here":
            yield root
            return
        image = root / "xfs.img"
        with image.open("wb") as file:
            file.truncate(200 * 2**30)
        subprocess.run(["mkfs.xfs", "-q", "-m", "reflink=1", str(image)], check=True)
        mount_point = root / "xfs"
        mount_point.mkdir()
        subprocess.run(["mount", "-o", "loop", str(image), str(mount_point)], check=True)
        try:
            yield mount_point
        finally:
            subprocess.run(["umount", str(mount_point)], check=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def report(label: str, runs: Sequence[Run]) -> None:
    walls = [r.wall_s for r in runs]
    cpus = [r.cpu_s for r in runs]
    print(
        f"  {label:<28} wall {median(walls):6.2f} s  cpu {median(cpus):6.2f} s  (n={len(runs)}, "
        f"wall {min(walls):.2f}-{max(walls):.2f})"
    )


def step_times(runs: Sequence[Run], steps: Sequence[str]) -> dict[str, float]:
    """Each step's median duration over the bakes."""
    times: dict[str, list[float]] = {step: [] for step in steps}
    for run in runs:
        assert run.result is not None
        for step in run.result["steps"]:
            if step["name"] in times:
                times[step["name"]].append(step["duration_s"])
    return {step: median(values) for step, values in times.items() if values}


def compare(bench: Bench, base_raw: Path, runs: int) -> None:
    hand: list[Run] = []
    warm: list[Run] = []
    cold: list[Run] = []
    bench.bake("bench-base")  # the cache's first fill, not measured
    for index in range(runs):
        order = ["hand", "warm", "cold"]
        order = order[index % 3 :] + order[: index % 3]
        for kind in order:
            if kind == "hand":
                hand.append(bench.hand(base_raw))
            elif kind == "warm":
                warm.append(bench.bake("bench-base"))
            else:
                bench.aminate("cache", "clear")
                cold.append(bench.bake("bench-base"))
                assert cold[-1].result and cold[-1].result["package_cache"]["index"] == "refreshed"
    print("compare: the example package (one dependency, jq, pulling two more) onto a base")
    report("by hand", hand)
    report("bake, package cache warm", warm)
    report("bake, package cache cold", cold)
    hand_wall = median([r.wall_s for r in hand])
    hand_cpu = median([r.cpu_s for r in hand])
    for label, bakes in (("warm", warm), ("cold", cold)):
        wall = median([r.wall_s for r in bakes]) / hand_wall
        cpu = median([r.cpu_s for r in bakes]) / hand_cpu
        print(f"  ratio bake {label} / by hand: wall {wall:.2f}x, cpu {cpu:.2f}x")
    extra = step_times(warm, EXTRA_STEPS)
    print(
        f"  the bake's own extra steps (warm, median): {sum(extra.values()):.2f} s: "
        + ", ".join(f"{step} {seconds:.2f}" for step, seconds in extra.items())
    )
    install = step_times(warm + cold, ("create_volume", "install"))
    print(
        f"  create_volume {install.get('create_volume', 0):.2f} s, install (all bakes) "
        f"{install.get('install', 0):.2f} s"
    )


def volumes(bench: Bench, base_raw: Path, runs: int) -> None:
    print("volumes: create_volume and snapshot steps, by the base's disk size")
    for size_gib in (2, 32):
        raw = bench.root / f"base-{size_gib}g.raw"
        subprocess.run(
            ["cp", "--reflink=auto", "--sparse=always", str(base_raw), str(raw)], check=True
        )
        with raw.open("r+b") as file:
            file.truncate(size_gib * 2**30)
        name = f"bench-{size_gib}g"
        bench.aminate("base", "import", name, str(raw))
        raw.unlink()
        bakes = [bench.bake(name) for _ in range(runs)]
        times = step_times(bakes, ("create_volume", "snapshot"))
        print(
            f"  {size_gib:>2} GiB: create_volume {times['create_volume']:.3f} s, "
            f"snapshot {times['snapshot']:.3f} s (median of {runs})"
        )


def four_at_once(argv: Sequence[str], env: dict[str, str]) -> tuple[float, list[str]]:
    """The wall time of four copies of a command started together, and their outputs."""
    started = time.monotonic()
    processes = [
        subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    outputs = []
    for process in processes:
        stdout, stderr = process.communicate()
        if process.returncode != 0:
            raise SystemExit(f"a concurrent run of {argv[0]} failed:\n{stderr}")
        outputs.append(stdout)
    return time.monotonic() - started, outputs


#: Pure CPU work of about the size of a bake's: how four processes on this machine's CPUs
#: scale, the floor for four bakes that are mostly CPU.
CPU_REFERENCE = [sys.executable, "-c", "sum(i * i for i in range(25_000_000))"]


def concurrent(bench: Bench, runs: int) -> None:
    bench.bake("bench-base")
    alone: list[Run] = []
    four: list[float] = []
    together: list[Run] = []
    reference_one: list[float] = []
    reference_four: list[float] = []
    for _ in range(runs):  # alternating, so that the machine's drift falls on both alike
        alone.append(bench.bake("bench-base"))
        wall, outputs = four_at_once(
            [*AMINATE, "-b", "bench-base", "--output", "json", str(bench.deb)], bench.env
        )
        four.append(wall)
        together.extend(Run(0.0, 0.0, json.loads(stdout)) for stdout in outputs)
        reference_one.append(timed(CPU_REFERENCE, bench.env)[0].wall_s)
        reference_four.append(four_at_once(CPU_REFERENCE, bench.env)[0])
    one = median([r.wall_s for r in alone])
    print(
        f"concurrent: one bake {one:.2f} s, four at once {median(four):.2f} s: "
        f"{median(four) / one:.2f}x (median of {runs}, {os.cpu_count()} CPUs)"
    )
    reference = median(reference_four) / median(reference_one)
    print(
        f"  pure CPU work for reference: one {median(reference_one):.2f} s, four at once "
        f"{median(reference_four):.2f} s: {reference:.2f}x"
    )
    steps = ("create_volume", "install", "hygiene", "scan", "sbom", "unmount", "snapshot")
    by_step = zip(
        step_times(alone, steps).items(), step_times(together, steps).values(), strict=True
    )
    print("  steps alone / in four: " + ", ".join(f"{n} {a:.2f}/{b:.2f}" for (n, a), b in by_step))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument(
        "--mode", choices=["compare", "volumes", "concurrent", "all"], default="all"
    )
    parser.add_argument("--store", choices=["xfs", "here"], default="xfs")
    parser.add_argument("--base-raw", type=Path, help="import this raw disk as the base")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: bakes need loop devices and mounts")
    with scratch(args.store) as root:
        bench = Bench(root)
        base_raw = bench.base("bench-base", args.base_raw.resolve() if args.base_raw else None)
        filesystem = subprocess.run(
            ["findmnt", "-n", "-o", "FSTYPE", "--target", str(root)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        print(f"store on {filesystem} ({root}); {os.cpu_count()} CPUs; {args.runs} runs each")
        if args.mode in ("compare", "all"):
            compare(bench, base_raw, args.runs)
        if args.mode in ("volumes", "all"):
            volumes(bench, base_raw, args.runs)
        if args.mode in ("concurrent", "all"):
            concurrent(bench, args.runs)


if __name__ == "__main__":
    main()
