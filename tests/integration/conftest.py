"""Fixtures of the privileged integration tests: a real mmdebstrap base built once per test
session, a store of its own for every test, real package files, and a check that a test leaves
no loop device, mount, process, volume or half-registered image behind."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
from packageurl import PackageURL

from aminator_ng.host.blockdev import find_root_filesystem, loop_device, partition_nodes
from aminator_ng.host.mount import mounted
from aminator_ng.pipeline.bake import BAKE_PIPELINE
from tests.ec2moto import MotoEc2, moto_ec2, policy_actions
from tests.hookrecord import HOOK_RECORD_VARIABLE
from tests.hoststate import held_under, processes_rooted_under, release_everything_under
from tests.integration import rpms
from tests.integration.debs import build_deb

REPO = Path(__file__).resolve().parents[2]
BASE_NAME = "debian-12"
BASE_SIZE = "1G"
#: Every step of a bake, in order, as the fault matrices inject failures into them.
#: The steps of a successful bake, in order, as the bake declares them.
BAKE_STEPS = BAKE_PIPELINE.step_names


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


class Workspace:
    """One test's own AMINATOR_HOME and log directory, and the CLI run against them."""

    #: The package cache every workspace's bakes share (set for the session): apt's lists are
    #: fetched once per set of sources, as on a bake host.
    shared_cache: Path | None = None

    def __init__(self, root: Path, base_name: str = BASE_NAME) -> None:
        self.base_name = base_name
        self.home = root / "home"
        self.log_dir = root / "log"
        self.scratch = root / "scratch"
        self.config_home = root / "config"
        for directory in (self.home, self.log_dir, self.scratch, self.config_home):
            directory.mkdir(parents=True, exist_ok=True)

    @property
    def env(self) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("AMINATOR_", "AWS_")) or k == HOOK_RECORD_VARIABLE
        }
        # The operator's own settings (~/.config/aminator-ng, AWS_*) must not reach a test.
        env.update(
            AMINATOR_HOME=str(self.home),
            AMINATOR_LOG_DIR=str(self.log_dir),
            XDG_CONFIG_HOME=str(self.config_home),
        )
        if Workspace.shared_cache is not None:
            env["AMINATOR_CACHE_DIR"] = str(Workspace.shared_cache)
        return env

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "aminator_ng", *args]

    def aminate(
        self,
        *args: str,
        env: dict[str, str] | None = None,
        timeout: float = 600,
        hostname: str | None = None,
    ) -> Result:
        """The CLI's result; with ``hostname``, on a bake host of that name (a UTS namespace of
        its own around the command)."""
        command = self.command(*args)
        if hostname is not None:
            command = ["unshare", "--uts", "sh", "-c", 'hostname "$0" && exec "$@"', hostname]
            command += self.command(*args)
        completed = subprocess.run(
            command,
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        return Result(completed.returncode, completed.stdout, completed.stderr)

    def start(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        return subprocess.Popen(
            self.command(*args),
            env={**self.env, **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
        )

    def images(self) -> list[dict[str, Any]]:
        result = self.aminate("images", "--output", "json")
        assert result.returncode == 0, result.stderr
        images: list[dict[str, Any]] = json.loads(result.stdout)
        return images

    def baked_images(self) -> list[dict[str, Any]]:
        return [image for image in self.images() if image["name"] != self.base_name]

    def _rows(self, query: str) -> list[tuple[Any, ...]]:
        database = self.home / "store.sqlite3"
        if not database.exists():
            return []
        with contextlib.closing(sqlite3.connect(database)) as db:
            return db.execute(query).fetchall()

    def leftovers(self) -> dict[str, list[str]]:
        """What a bake may not leave behind in this workspace once it has ended."""
        root = str(self.home.parent)
        snapshots_in_use = {row[0] for row in self._rows("SELECT snapshot_id FROM images")}
        return {
            "held on the host": held_under(root),
            "volume files": sorted(p.name for p in (self.home / "volumes").glob("*")),
            "volume rows": [row[0] for row in self._rows("SELECT id FROM volumes")],
            "orphan snapshots": [
                row[0]
                for row in self._rows("SELECT id FROM snapshots")
                if row[0] not in snapshots_in_use
            ],
            "orphan snapshot files": sorted(
                p.name
                for p in (self.home / "snapshots").glob("*")
                if p.stem not in snapshots_in_use
            ),
            "work dirs": sorted(p.name for p in (self.home / "work").glob("*")),
            "bake records": sorted(p.name for p in (self.home / "bakes").glob("*")),
        }

    def assert_nothing_left(self) -> None:
        left = {kind: items for kind, items in self.leftovers().items() if items}
        assert not left, f"left behind: {left}"


def assert_one_error_line(result: Result, exit_code: int, *needles: str) -> str:
    """The failure was told on one ``aminate: error:`` line holding every needle, with the
    right exit code and no traceback; returns the line."""
    assert result.returncode == exit_code, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("aminate: error:")]
    assert len(errors) == 1, result.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]
    assert "Traceback" not in result.stderr
    return errors[0]


def wait_for_postinst(workspace: Workspace, process: subprocess.Popen[str]) -> None:
    """Until a package script of the bake ``process`` runs inside the image."""
    deadline = time.monotonic() + 120
    while not processes_rooted_under(str(workspace.home)):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the postinst never started"
        time.sleep(0.2)


def assert_sbom_describes(workspace: Workspace, baked: dict[str, Any], distro: str) -> None:
    """The baked image's SBOM as ``aminate images sbom`` prints it: valid CycloneDX 1.6, one
    component per manifest row in the manifest's order, each with its row's package URL
    (``distro``: the os-release ID and VERSION_ID, ``debian-12``), as the tags summarise it."""
    shown = workspace.aminate("images", "sbom", baked["image_id"])
    assert shown.returncode == 0, shown.stderr
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(shown.stdout) is None
    components = json.loads(shown.stdout)["components"]
    rows = baked["manifest"]
    assert len(components) == len(rows)
    purl_type = "deb" if distro.startswith(("debian", "ubuntu")) else "rpm"
    for component, row in zip(components, rows, strict=True):
        purl = PackageURL.from_string(component["purl"])
        version = row["version"]
        if purl_type == "rpm" and ":" in version:
            epoch, version = version.split(":", 1)
            assert purl.qualifiers["epoch"] == epoch
        assert (purl.type, purl.namespace, purl.name, purl.version) == (
            purl_type,
            distro.split("-")[0],
            row["name"],
            version,
        )
        assert purl.qualifiers["arch"] == row["arch"]
        assert purl.qualifiers["distro"] == distro
    assert baked["tags"]["sbom_components"] == str(len(rows))
    assert baked["tags"]["sbom_sha256"] == hashlib.sha256(shown.stdout.encode()).hexdigest()
    assert baked["sbom_path"]


@contextlib.contextmanager
def mounted_image(raw: Path, mount_point: Path, *, read_only: bool = True) -> Iterator[Path]:
    """A raw disk image's root filesystem mounted, with the engine's own context managers."""
    mount_point.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        device = stack.enter_context(loop_device(raw, read_only=read_only))
        parts = stack.enter_context(partition_nodes(device))
        root_fs = find_root_filesystem(device, parts)
        options = ["ro"] if read_only else []
        if root_fs.fstype == "xfs":
            options.append("nouuid")  # a copy of an image mounted beside it has its uuid
        stack.enter_context(
            mounted(root_fs.device, mount_point, fstype=root_fs.fstype, options=options)
        )
        yield mount_point


def dpkg_status(root: Path, package: str) -> str:
    result = subprocess.run(
        [
            "dpkg-query",
            "--admindir",
            str(root / "var/lib/dpkg"),
            "-W",
            "-f",
            "${db:Status-Abbrev}",
            package,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    return result.stdout.strip()


@pytest.fixture(scope="session", autouse=True)
def shared_package_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    cache = tmp_path_factory.mktemp("package-cache")
    Workspace.shared_cache = cache
    yield cache
    Workspace.shared_cache = None
    shutil.rmtree(cache, ignore_errors=True)


@pytest.fixture
def moto(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[MotoEc2]:
    """A moto server with this process's bake host as its instance."""
    with moto_ec2(monkeypatch, tmp_path / "ec2") as server:
        server.instance_id = server.host_instance(monkeypatch)
        yield server
        # Everything the engine asked of AWS is allowed by the documented policy.
        assert server.actions() <= policy_actions()


@pytest.fixture(scope="session")
def base_raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real bookworm minbase, built once per test session with ``aminate base create``."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    workspace = Workspace(tmp_path_factory.mktemp("base"))
    created = workspace.aminate(
        "base", "create", BASE_NAME, "--suite", "bookworm", "--size", BASE_SIZE, "--output", "json"
    )
    assert created.returncode == 0, created.stderr
    raw = workspace.scratch / "base.raw"
    exported = workspace.aminate("export", created.json()["image_id"], str(raw))
    assert exported.returncode == 0, exported.stderr
    workspace.assert_nothing_left()
    shutil.rmtree(workspace.home)
    return raw


def store_holding(root: Path, base_name: str, raw: Path) -> Iterator[Workspace]:
    """A store of a test's own holding one base image; on teardown, nothing may be left."""
    space = Workspace(root, base_name=base_name)
    imported = space.aminate("base", "import", base_name, str(raw))
    assert imported.returncode == 0, imported.stderr
    try:
        yield space
        space.assert_nothing_left()
    finally:
        release_everything_under(str(root))


@pytest.fixture
def workspace(tmp_path: Path, base_raw: Path) -> Iterator[Workspace]:
    """A store of the test's own holding the Debian base."""
    yield from store_holding(tmp_path, BASE_NAME, base_raw)


@pytest.fixture(scope="session")
def rpm_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The test RPMs, unsigned; the ones the synthetic root's repository serves are signed there."""
    out = tmp_path_factory.mktemp("rpms")
    corrupt = out / "corrupt-1.0-1.noarch.rpm"
    corrupt.write_bytes(rpms.RPM_LEAD + os.urandom(200))
    return {
        "sh_provider": rpms.build_rpm(out, "sh-provider", provides=["/bin/sh"], files=False),
        "lib_1.0": rpms.build_rpm(out, "greeting-lib", "1.0"),
        "lib_1.1": rpms.build_rpm(out, "greeting-lib", "1.1"),
        "greeter": rpms.build_rpm(
            out, "greeter", requires=["greeting-lib"], post=rpms.GREETER_POST
        ),
        "failing": rpms.build_rpm(
            out, "broken", post="echo 'broken: refusing to configure' >&2\nexit 3"
        ),
        "unresolvable": rpms.build_rpm(out, "needy", requires=["no-such-capability"]),
        "foreign_arch": rpms.build_rpm(out, "armthing", arch="aarch64"),
        "extra": rpms.build_rpm(out, "extra-tool", "2.0"),
        "corrupt": corrupt,
    }


@pytest.fixture(scope="session")
def rpm_keys(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, rpms.SigningKey]]:
    out = tmp_path_factory.mktemp("gnupg")
    keys = {
        "image": rpms.SigningKey(out / "image", "image-packages@example.org"),
        "vendor": rpms.SigningKey(out / "vendor", "vendor-packages@example.org"),
    }
    yield keys
    for key in keys.values():
        key.close()


@pytest.fixture(scope="session")
def rpm_base_raw(
    tmp_path_factory: pytest.TempPathFactory,
    rpm_files: dict[str, Path],
    rpm_keys: dict[str, rpms.SigningKey],
) -> Path:
    """The synthetic RPM-managed root as a whole-disk ext4 image, built once per session."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    out = tmp_path_factory.mktemp("rpm-base")
    tree = out / "tree"
    rpms.build_synthetic_root(
        tree,
        rpm_files["sh_provider"],
        rpm_keys["image"],
        served=[rpm_files["lib_1.0"], rpm_files["lib_1.1"]],
        unconfigured={
            "unsigned": ([rpm_files["extra"]], None),
            "vendor": ([rpm_files["extra"]], rpm_keys["vendor"]),
        },
    )
    raw = rpms.make_raw(tree, out / "base.raw")
    shutil.rmtree(tree)
    return raw


@pytest.fixture
def rpm_space(tmp_path: Path, rpm_base_raw: Path) -> Iterator[Workspace]:
    """A store of the test's own holding the synthetic RPM base."""
    yield from store_holding(tmp_path, rpms.BASE_NAME, rpm_base_raw)


@pytest.fixture(scope="session")
def debs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("debs")
    hello = out / "hello_1.0-1_all.deb"
    subprocess.run(
        ["dpkg-deb", "--root-owner-group", "--build", str(REPO / "examples/hello"), str(hello)],
        check=True,
        capture_output=True,
    )
    not_a_package = out / "notes.deb"
    not_a_package.write_text("this is not a Debian package\n")
    return {
        "hello": hello,
        "daemon": build_deb(
            out,
            "forker",
            # Double fork into a new session: invisible to policy-rc.d.
            postinst="setsid sh -c 'sleep 1000 &' </dev/null >/dev/null 2>&1",
        ),
        "failing": build_deb(
            out, "broken", postinst="echo 'broken: refusing to configure' >&2\nexit 3"
        ),
        "slow": build_deb(out, "slowpoke", postinst="sleep 300"),
        "not_a_package": not_a_package,
    }


@pytest.fixture
def modified_base(base_raw: Path, tmp_path: Path) -> Callable[[Callable[[Path], None]], Path]:
    """A copy of the base raw disk, changed by a function given its mounted root."""

    def make(edit: Callable[[Path], None]) -> Path:
        raw = tmp_path / "modified.raw"
        subprocess.run(["cp", "--sparse=always", str(base_raw), str(raw)], check=True)
        with mounted_image(raw, tmp_path / "edit", read_only=False) as root:
            edit(root)
        return raw

    return make
