"""Repositories for one bake (``--repo``, ``--repo-key``) and pinned versions (``NAME=VERSION``):
real bakes that install from them, and images that keep no trace of them."""

from __future__ import annotations

import functools
import hashlib
import http.server
import os
import shutil
import stat
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path

import pytest

from tests.integration.conftest import BASE_NAME, Result, Workspace, dpkg_status, mounted_image
from tests.integration.debs import build_deb

pytestmark = pytest.mark.privileged

#: Kind, content or link target, mode, owner and group of one entry of a tree.
FileState = tuple[str, str | bytes, int, int, int]
#: What a repository touches for the bake, and must find again exactly as in the base.
APT_TREES = ("etc/apt", "var/lib/apt/lists")


def assert_request_error(result: Result, *needles: str) -> None:
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("aminate: error:")]
    assert len(errors) == 1, result.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]
    assert "Traceback" not in result.stderr


def deb_into(directory: Path, scratch: Path, name: str, version: str, **control: str) -> Path:
    """A package built in a tree of its own (one per version) and moved into ``directory``."""
    tree = scratch / f"{name}-{version}"
    tree.mkdir(parents=True)
    deb = build_deb(tree, name, version, files={f"/usr/share/{name}/version": version}, **control)
    return Path(shutil.move(deb, directory / deb.name))


@pytest.fixture(scope="module")
def repo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory of .debs: ``app`` needs ``leaf`` (here) and jq (Debian); two ``multi``."""
    scratch = tmp_path_factory.mktemp("repo-build")
    repo = tmp_path_factory.mktemp("repo")
    deb_into(repo, scratch, "app", "3.1-2", depends="leaf, jq")
    deb_into(repo, scratch, "leaf", "1.0-1")
    deb_into(repo, scratch, "multi", "1.0-1")
    deb_into(repo, scratch, "multi", "2.0-1")
    return repo


def tree_state(root: Path) -> dict[str, FileState]:
    """Every entry under ``root``, and ``root`` itself."""
    state: dict[str, FileState] = {}
    for path in [root, *sorted(root.rglob("*"))]:
        info = path.lstat()
        relative = str(path.relative_to(root))
        owner = (stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid)
        if stat.S_ISLNK(info.st_mode):
            state[relative] = ("symlink", os.readlink(path), *owner)
        elif stat.S_ISDIR(info.st_mode):
            state[relative] = ("dir", b"", *owner)
        else:
            state[relative] = ("file", path.read_bytes(), *owner)
    return state


def apt_state(root: Path) -> dict[str, dict[str, FileState]]:
    return {tree: tree_state(root / tree) for tree in APT_TREES}


def export(workspace: Workspace, image_id: str) -> Path:
    raw = workspace.scratch / f"{image_id}.raw"
    result = workspace.aminate("export", image_id, str(raw))
    assert result.returncode == 0, result.stderr
    return raw


def installed_version(root: Path, package: str) -> str:
    return subprocess.run(
        ["dpkg-query", "--admindir", str(root / "var/lib/dpkg"), "-W", "-f=${Version}", package],
        capture_output=True,
        text=True,
        check=True,
    ).stdout


BaseState = dict[str, dict[str, FileState]]


def assert_no_trace_of_repositories(root: Path, base: BaseState) -> None:
    assert not (root / "var/cache/aminator-ng").exists()
    # Sources, keyrings and package lists exactly as in the base: same entries, bytes, owners.
    assert apt_state(root) == base
    assert list((root / "var/cache/apt/archives").glob("*.deb")) == []


@pytest.fixture
def base_apt(workspace: Workspace, base_raw: Path) -> BaseState:
    with mounted_image(base_raw, workspace.scratch / "base") as base_root:
        return apt_state(base_root)


def test_a_directory_repository_installs_a_package_and_leaves_no_trace(
    workspace: Workspace, repo_dir: Path, base_apt: BaseState
) -> None:
    before = tree_state(repo_dir)
    result = workspace.aminate("-b", BASE_NAME, "--repo", str(repo_dir), "--output", "json", "app")
    assert result.returncode == 0, result.stderr

    baked = result.json()
    assert baked["packages"] == [
        {"name": "app", "epoch": "", "version": "3.1", "release": "2", "arch": "all"}
    ]
    assert baked["name"].startswith("app-3.1-2-all-")
    manifest = {entry["name"]: entry["version"] for entry in baked["manifest"]}
    assert manifest["leaf"] == "1.0-1"
    assert "jq" in manifest
    # The host directory is read, never written: the index lives in the image, then goes.
    assert tree_state(repo_dir) == before
    log = Path(baked["log_path"]).read_text()
    assert "deb [trusted=yes] file:/run/aminator-ng/repos/0 ./" in log

    with mounted_image(export(workspace, baked["image_id"]), workspace.scratch / "baked") as root:
        for package in ("app", "leaf", "jq"):
            assert dpkg_status(root, package) == "ii", package
        assert (root / "usr/share/app/version").read_text() == "3.1-2"
        assert_no_trace_of_repositories(root, base_apt)


def test_a_pinned_version_is_installed_exactly(workspace: Workspace, repo_dir: Path) -> None:
    pinned = workspace.aminate(
        "-b", BASE_NAME, "--repo", str(repo_dir), "--output", "json", "multi=1.0-1"
    )
    assert pinned.returncode == 0, pinned.stderr
    newest = workspace.aminate(
        "-b", BASE_NAME, "--repo", str(repo_dir), "--output", "json", "multi"
    )
    assert newest.returncode == 0, newest.stderr

    assert pinned.json()["packages"][0] == {
        "name": "multi",
        "epoch": "",
        "version": "1.0",
        "release": "1",
        "arch": "all",
    }
    assert pinned.json()["name"].startswith("multi-1.0-1-all-")
    assert newest.json()["packages"][0]["version"] == "2.0"
    for baked, version in ((pinned.json(), "1.0-1"), (newest.json(), "2.0-1")):
        raw = export(workspace, baked["image_id"])
        with mounted_image(raw, workspace.scratch / f"mnt-{version}") as root:
            assert installed_version(root, "multi") == version
            assert (root / "usr/share/multi/version").read_text() == version


def test_a_pinned_version_that_does_not_exist(workspace: Workspace, repo_dir: Path) -> None:
    result = workspace.aminate(
        "-b", BASE_NAME, "--repo", str(repo_dir), "--output", "json", "multi=9.9-9"
    )
    assert_request_error(result, "multi", "9.9-9")
    assert result.json()["error"]["step"] == "install"
    assert workspace.baked_images() == []


@pytest.mark.parametrize(
    ("spec", "needle", "step"),
    [
        # A directory is the engine's to check, before anything is acquired.
        ("/no/such/repository", "/no/such/repository", "read_packages"),
        # The rest are apt's to read, once the image's provisioner is known (the unit tests
        # of the Debian plugin's parse_repository have every case).
        ("deb [trusted] http://deb.example.org/debian bookworm main", "trusted", "detect_distro"),
        ("https://deb.example.org/debian", "not a bare URL", "detect_distro"),
    ],
)
def test_a_bad_repository_is_refused_before_the_install_and_nothing_is_left(
    workspace: Workspace, spec: str, needle: str, step: str
) -> None:
    result = workspace.aminate("-b", BASE_NAME, "--repo", spec, "--output", "json", "jq")
    assert_request_error(result, needle)
    assert result.json()["error"]["step"] == step
    assert workspace.baked_images() == []
    workspace.assert_nothing_left()


def test_a_bad_package_spec_is_refused(workspace: Workspace) -> None:
    result = workspace.aminate("-b", BASE_NAME, "jq=not a version")
    assert_request_error(result, "jq=not a version")
    result = workspace.aminate("-b", BASE_NAME, "jq=")
    assert_request_error(result, "'jq='")


def test_a_repository_key_needs_a_source_line(workspace: Workspace, repo_dir: Path) -> None:
    missing = workspace.aminate(
        "-b", BASE_NAME, "--repo", "deb http://x.example.org/ ./", "--repo-key", "/no/key.asc", "jq"
    )
    assert_request_error(missing, "/no/key.asc")
    key = workspace.scratch / "key.gpg"
    key.write_bytes(b"\x98\x33\x04")
    unsigned = workspace.aminate(
        "-b", BASE_NAME, "--repo", str(repo_dir), "--repo-key", str(key), "app"
    )
    assert_request_error(unsigned, "--repo-key")


# A signed repository, served over HTTP on the loopback interface (the chroot shares the host's
# network): a flat repository with an InRelease file signed by a key made for the test.


@dataclass(frozen=True)
class SignedRepo:
    #: The source line, ``deb http://127.0.0.1:PORT/ ./``.
    line: str
    #: The key that signs it, armored; a key that does not, binary.
    key: Path
    other_key: Path


@pytest.fixture(scope="module")
def signed_repo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SignedRepo]:
    if shutil.which("gpg") is None:
        pytest.skip("gpg is not installed (apt-get install gnupg)")
    root = tmp_path_factory.mktemp("signed")
    gnupg = root / "gnupg"
    gnupg.mkdir(mode=0o700)
    served = root / "served"
    served.mkdir()
    deb_into(served, root / "build", "signed-app", "1.0-1")

    def gpg(*args: str, output: Path | None = None) -> None:
        try:
            completed = subprocess.run(
                ["gpg", "--batch", "--quiet", "--homedir", str(gnupg), *args],
                capture_output=True,
                check=True,
            )
        finally:
            # gpg starts an agent for the home that outlives it: end it after every command.
            subprocess.run(
                ["gpgconf", "--homedir", str(gnupg), "--kill", "all"],
                capture_output=True,
                check=False,
            )
        if output is not None:
            output.write_bytes(completed.stdout)

    gpg(
        "--passphrase", "", "--quick-gen-key", "repo <repo@example.org>", "ed25519", "sign", "never"
    )
    gpg(
        "--passphrase",
        "",
        "--quick-gen-key",
        "other <other@example.org>",
        "ed25519",
        "sign",
        "never",
    )
    gpg("--armor", "--export", "repo@example.org", output=root / "repo.asc")
    gpg("--export", "other@example.org", output=root / "other.gpg")

    packages = subprocess.run(
        ["dpkg-scanpackages", "--multiversion", "."],
        cwd=served,
        capture_output=True,
        check=True,
    ).stdout
    (served / "Packages").write_bytes(packages)
    (served / "Release").write_text(
        "Origin: aminator-ng tests\n"
        f"Date: {format_datetime(datetime.now(UTC), usegmt=True)}\n"
        "SHA256:\n"
        f" {hashlib.sha256(packages).hexdigest()} {len(packages)} Packages\n"
    )
    gpg(
        "--local-user",
        "repo@example.org",
        "--clearsign",
        "--output",
        str(served / "InRelease"),
        str(served / "Release"),
    )

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Quiet, directory=str(served))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        yield SignedRepo(f"deb http://127.0.0.1:{port}/ ./", root / "repo.asc", root / "other.gpg")
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def loopback_env() -> dict[str, str]:
    """A bake host's proxy must not be asked for the test's own server."""
    return {"no_proxy": "127.0.0.1", "NO_PROXY": "127.0.0.1"}


def test_a_signed_source_line_installs_and_leaves_no_trace(
    workspace: Workspace,
    signed_repo: SignedRepo,
    base_apt: BaseState,
    loopback_env: dict[str, str],
) -> None:
    result = workspace.aminate(
        "-b",
        BASE_NAME,
        "--repo",
        signed_repo.line,
        "--repo-key",
        str(signed_repo.key),
        "--repo-key",
        str(signed_repo.other_key),
        "--output",
        "json",
        "signed-app",
        env=loopback_env,
    )
    assert result.returncode == 0, result.stderr
    baked = result.json()
    log = Path(baked["log_path"]).read_text()
    keys = "/etc/apt/keyrings/aminator-ng-0.asc,/etc/apt/keyrings/aminator-ng-1.gpg"
    # Both keys are placed (the armored one as .asc), and the line is signed by both.
    assert f"deb [signed-by={keys}] {signed_repo.line.removeprefix('deb ')}" in log
    with mounted_image(export(workspace, baked["image_id"]), workspace.scratch / "baked") as root:
        assert dpkg_status(root, "signed-app") == "ii"
        assert_no_trace_of_repositories(root, base_apt)


def test_a_source_line_with_the_wrong_key_is_refused(
    workspace: Workspace, signed_repo: SignedRepo, loopback_env: dict[str, str]
) -> None:
    result = workspace.aminate(
        "-b",
        BASE_NAME,
        "--repo",
        signed_repo.line,
        "--repo-key",
        str(signed_repo.other_key),
        "--output",
        "json",
        "signed-app",
        env=loopback_env,
    )
    assert_request_error(result, "NO_PUBKEY")
    assert result.json()["error"]["step"] == "install"
    assert workspace.baked_images() == []
