"""Real bakes on the local backend: loop devices, mounts, chroot and apt, as root."""

from __future__ import annotations

import json
import os
import signal
import stat
import time
from pathlib import Path

import pytest

from tests.hoststate import processes_rooted_under
from tests.integration.conftest import (
    BASE_NAME,
    Workspace,
    assert_one_error_line,
    assert_sbom_describes,
    dpkg_status,
    mounted_image,
    wait_for_postinst,
)

pytestmark = pytest.mark.privileged

SUCCESS_KEYS = {
    "bake_id",
    "image_id",
    "name",
    "cloud",
    "images",
    "base_image_id",
    "base_image_name",
    "tags",
    "packages",
    "manifest",
    "hygiene",
    "scan",
    "sbom_path",
    "package_cache",
    "steps",
    "duration_s",
    "log_path",
}
FAILURE_KEYS = {"error", "exit_code", "bake_id", "log_path", "preserved", "images"}


def file_state(path: Path) -> tuple[str, str | bytes, int]:
    if not path.is_symlink() and not path.exists():
        return ("absent", b"", 0)
    info = path.lstat()
    if stat.S_ISLNK(info.st_mode):
        return ("symlink", os.readlink(path), 0)
    return ("file", path.read_bytes(), stat.S_IMODE(info.st_mode))


def export(workspace: Workspace, image_id: str) -> Path:
    raw = workspace.scratch / f"{image_id}.raw"
    result = workspace.aminate("export", image_id, str(raw))
    assert result.returncode == 0, result.stderr
    return raw


def test_bake_installs_the_package_and_its_dependency(
    workspace: Workspace, debs: dict[str, Path], base_raw: Path
) -> None:
    result = workspace.aminate("-b", BASE_NAME, str(debs["hello"]))
    assert result.returncode == 0, result.stderr

    baked = workspace.baked_images()
    assert len(baked) == 1
    image = baked[0]
    assert image["name"].startswith("hello-1.0-1-all-")
    assert image["image_id"] in result.stdout

    with mounted_image(base_raw, workspace.scratch / "base") as base_root:
        base_resolv = file_state(base_root / "etc/resolv.conf")
        # The bake host's resolver and name stay out of the base image.
        assert base_resolv[0] == "absent"
        assert (base_root / "etc/hostname").read_text() == "localhost\n"
    with mounted_image(export(workspace, image["image_id"]), workspace.scratch / "baked") as root:
        assert dpkg_status(root, "hello") == "ii"
        assert dpkg_status(root, "jq") == "ii"
        assert (root / "usr/bin/hello").is_file()
        assert file_state(root / "etc/resolv.conf") == base_resolv
        assert not (root / "usr/sbin/policy-rc.d").exists()
        assert not (root / "var/cache/aminator-ng").exists()
        assert not list((root / "var/lib/apt/lists").glob("*_Packages"))
        assert not list((root / "var/cache/apt/archives").glob("*.deb"))


def test_json_success_object(workspace: Workspace, debs: dict[str, Path]) -> None:
    result = workspace.aminate(
        "-b", BASE_NAME, "--output", "json", str(debs["hello"]), "--tag", "team=web"
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)  # stdout holds only the JSON object
    assert data.keys() >= SUCCESS_KEYS
    assert data["cloud"] == "local"
    assert data["images"] == {"local": data["image_id"]}
    assert data["base_image_name"] == BASE_NAME
    assert data["packages"] == [
        {"name": "hello", "epoch": "", "version": "1.0", "release": "1", "arch": "all"}
    ]
    manifest = {entry["name"]: entry for entry in data["manifest"]}
    assert manifest["hello"]["version"] == "1.0-1"
    assert manifest["jq"]["source_name"] == "jq"
    assert manifest["libjq1"]["source_name"] == "jq"
    tags = data["tags"]
    assert tags["appversion"] == "hello-1.0-1"
    assert tags["base_image_id"] == data["base_image_id"]
    assert tags["bake_id"] == data["bake_id"]
    assert tags["team"] == "web"
    assert tags["package_count"] == str(len(data["manifest"]))
    assert tags["hygiene"] == "ok"
    assert {entry["rule"] for entry in data["hygiene"]} == {
        "ssh_host_keys",
        "machine_id",
        "snakeoil",
        "random_seed",
        "logs",
        "tmp",
        "host_file_copies",
    }
    assert data["scan"]["files"] > 0 and not [f for f in data["scan"]["findings"] if f["fails"]]
    assert_sbom_describes(workspace, data, "debian-12")
    step_names = [step["name"] for step in data["steps"]]
    for required in (
        "resolve_base",
        "create_volume",
        "attach",
        "mount",
        "chroot_setup",
        "install",
        "chroot_teardown",
        "unmount",
        "detach",
        "snapshot",
        "register",
    ):
        assert required in step_names
    assert Path(data["log_path"]).is_file()
    shown = workspace.aminate("images", "show", data["image_id"], "--output", "json").json()
    assert shown["tags"] == tags
    assert len(shown["manifest"]) == len(data["manifest"])


def test_package_by_name_names_the_image(workspace: Workspace) -> None:
    result = workspace.aminate("-b", BASE_NAME, "--output", "json", "tree")
    assert result.returncode == 0, result.stderr
    data = result.json()
    first = data["packages"][0]
    assert first["name"] == "tree"
    assert first["version"] and first["release"]
    assert data["name"].startswith(f"tree-{first['version']}-{first['release']}-")


def test_daemon_started_by_postinst_is_ended(workspace: Workspace, debs: dict[str, Path]) -> None:
    result = workspace.aminate("-b", BASE_NAME, str(debs["daemon"]))
    assert result.returncode == 0, result.stderr
    # It ended with the install: the last process of the install's PID namespace.
    assert not processes_rooted_under(str(workspace.home))
    assert len(workspace.baked_images()) == 1


def test_a_hung_postinst_is_ended_at_the_install_timeout(
    workspace: Workspace, debs: dict[str, Path]
) -> None:
    result = workspace.aminate(
        "-b", BASE_NAME, "--install-timeout", "3", "--output", "json", str(debs["slow"])
    )
    assert result.returncode == 1, result.stderr
    error = result.json()["error"]
    assert error["step"] == "install"
    assert error["message"].startswith("install: the install took longer than 3 s:")
    assert "--install-timeout" in error["hint"]
    assert_one_error_line(result, 1, "took longer than 3 s")
    # The postinst's sleep went with the install's namespaces.
    assert not processes_rooted_under(str(workspace.home))
    assert workspace.baked_images() == []
    workspace.assert_nothing_left()


def test_failing_postinst_exits_1_with_the_failure_object(
    workspace: Workspace, debs: dict[str, Path]
) -> None:
    result = workspace.aminate("-b", BASE_NAME, "--output", "json", str(debs["failing"]))
    assert result.returncode == 1
    data = json.loads(result.stdout)
    assert data.keys() >= FAILURE_KEYS
    assert data["exit_code"] == 1
    assert data["error"]["step"] == "install"
    assert "broken" in data["error"]["message"]
    assert "post-installation script" in data["error"]["message"]
    assert data["preserved"] == []
    bake_log = Path(data["log_path"]).read_text()
    assert f"bake {data['bake_id']} failed: install:" in bake_log
    assert "post-installation script" in bake_log
    assert "py_serializable" not in bake_log  # the SBOM library's chatter stays out
    assert "Traceback" not in result.stderr
    assert workspace.baked_images() == []


@pytest.mark.parametrize(
    ("signum", "exit_code"),
    [(signal.SIGTERM, 143), (signal.SIGINT, 130), (signal.SIGHUP, 129)],
    ids=["SIGTERM", "SIGINT", "SIGHUP"],
)
def test_signal_during_postinst_releases_everything(
    workspace: Workspace, debs: dict[str, Path], signum: signal.Signals, exit_code: int
) -> None:
    process = workspace.start("-b", BASE_NAME, str(debs["slow"]))
    wait_for_postinst(workspace, process)
    time.sleep(0.5)
    signalled = time.monotonic()
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=30)
    assert time.monotonic() - signalled < 30
    assert process.returncode == exit_code, stderr
    assert signal.Signals(signum).name in stderr
    assert "Aborted" not in stderr
    assert "Traceback" not in stderr
    assert workspace.baked_images() == []


def test_four_concurrent_bakes_make_four_images(
    workspace: Workspace, debs: dict[str, Path]
) -> None:
    processes = [
        workspace.start("-b", BASE_NAME, "--output", "json", str(debs["hello"])) for _ in range(4)
    ]
    outputs = [process.communicate(timeout=600) for process in processes]
    for process, (_, stderr) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, stderr
    ids = {json.loads(stdout)["image_id"] for stdout, _ in outputs}
    names = {json.loads(stdout)["name"] for stdout, _ in outputs}
    assert len(ids) == 4 and len(names) == 4
    assert {image["image_id"] for image in workspace.baked_images()} == ids


def test_preserve_on_error_keeps_the_volume_and_says_how_to_release(
    workspace: Workspace, debs: dict[str, Path], tmp_path: Path
) -> None:
    result = workspace.aminate(
        "-b", BASE_NAME, "--preserve-on-error", "--output", "json", str(debs["failing"])
    )
    assert result.returncode == 1
    preserved = result.json()["preserved"]
    # The mount and the loop device went with the bake's namespace; the volume stays.
    assert [entry["kind"] for entry in preserved] == ["volume"]
    assert not workspace.leftovers()["held on the host"]
    [volume] = (workspace.home / "volumes").glob("*.raw")
    with mounted_image(volume, tmp_path / "inspect") as root:
        # Inspectable as it failed: the package half-configured, the chroot's changes undone.
        assert dpkg_status(root, "broken") == "iF"
        assert not (root / "usr/sbin/policy-rc.d").exists()
    assert "release in this order with" in result.stderr
    for entry in preserved:
        assert os.system(entry["release"]) == 0, entry["release"]
    left = workspace.leftovers()
    assert not left["held on the host"] and not left["volume files"]
    assert workspace.baked_images() == []
    # Released by hand, the store still records the preserved bake; cleanup forgets it and
    # tolerates what is released already.
    cleaned = workspace.aminate("cleanup", "--preserved", "--output", "json")
    assert cleaned.returncode == 0, cleaned.stderr
