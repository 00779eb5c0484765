"""The ``aminate`` command line: dispatch, JSON output and exit codes (DESIGN.md's CLI contract).

``main`` runs in-process against a store and log directory of the test's own. Nothing here gets
as far as a loop device: the bakes stop at the root check, the tool check or the package check.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from aminator_local.store import Store
from aminator_ng import __version__
from aminator_ng.contract.model import ManifestEntry
from aminator_ng.contract.plugins import load_plugins
from aminator_ng.host import run as run_module
from tests.unit.cli_runs import Aminate, Workspace, assert_request_error


@pytest.fixture
def not_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)


def tool_dir(tmp_path: Path, without: tuple[str, ...] = ()) -> Path:
    """A search path holding every tool the engine knows, except ``without``: the host's own
    where it has them (symlinks), a stub that always fails where it does not."""
    directory = tmp_path / "tools"
    directory.mkdir()
    for tool in load_plugins(environ={}).host_packages({"ID": "debian"}).tools:
        if tool in without:
            continue
        found = shutil.which(tool, path=run_module.SEARCH_PATH)
        if found is not None:
            (directory / tool).symlink_to(found)
        else:
            stub = directory / tool
            stub.write_text("#!/bin/sh\nexit 99\n")
            stub.chmod(0o755)
    return directory


@pytest.fixture
def root_with_tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As if run by root on a host with every tool, whoever runs the test."""
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(run_module, "SEARCH_PATH", str(tool_dir(tmp_path)))


def add_image(home: Path, tmp_path: Path, name: str, tags: dict[str, str]) -> str:
    store = Store(home)
    disk = tmp_path / f"{name}.raw"
    disk.write_bytes(b"\0" * 4096)
    snapshot_id = store.add_snapshot_from(disk, None)
    return store.register_image(
        name=name,
        snapshot_id=snapshot_id,
        description=f"{name} for tests",
        tags=tags,
        manifest=[ManifestEntry("hello", "1.0-1", "all", "hello", "1.0-1")],
        base_image_id=None,
    )


# --version and --help


def test_version_exits_0(aminate: Aminate) -> None:
    outcome = aminate("--version")
    assert outcome.code == 0
    assert __version__ in outcome.stdout
    assert outcome.stderr == ""


@pytest.mark.parametrize("argv", [("--help",), ("bake", "--help"), ("images", "--help")])
def test_help_exits_0(aminate: Aminate, argv: tuple[str, ...]) -> None:
    outcome = aminate(*argv)
    assert outcome.code == 0
    assert outcome.stdout.startswith("Usage: aminate")


def test_bake_help_lists_the_bake_options(aminate: Aminate) -> None:
    outcome = aminate("bake", "--help")
    assert outcome.code == 0
    for option in ("-b, --base-ami", "-B, --base-ami-id", "--tag", "--output", "PACKAGE..."):
        assert option in outcome.stdout


# images: the same listing however the global options are placed


@pytest.mark.parametrize(
    "argv",
    [
        ("images", "--output", "json"),
        ("--output", "json", "images"),
        ("images", "list", "--output", "json"),
        ("--output=json", "images"),
        ("-q", "--output", "json", "images", "list"),
    ],
)
def test_images_json_is_a_list_wherever_output_is_given(
    aminate: Aminate, argv: tuple[str, ...]
) -> None:
    outcome = aminate(*argv)
    assert outcome.code == 0, outcome.stderr
    assert outcome.json() == []  # stdout holds the JSON and nothing else


def test_images_text_on_an_empty_store(aminate: Aminate) -> None:
    outcome = aminate("images")
    assert outcome.code == 0
    assert outcome.stdout.strip() == "no images"


def test_images_lists_and_shows_registered_images(
    aminate: Aminate, workspace: Workspace, tmp_path: Path
) -> None:
    first = add_image(workspace.home, tmp_path, "first-image", {"appversion": "hello-1.0-1"})
    second = add_image(workspace.home, tmp_path, "second-image", {})

    listed = aminate("images", "--output", "json").json()
    assert [i["image_id"] for i in listed] == [first, second]
    assert listed[0]["name"] == "first-image"
    assert listed[0]["tags"] == {"appversion": "hello-1.0-1"}
    assert listed[0]["created"].endswith("Z")

    shown = aminate("--output", "json", "images", "show", first)
    assert shown.code == 0
    assert shown.json()["image_id"] == first
    assert shown.json()["manifest"][0]["name"] == "hello"

    text = aminate("images")
    assert "first-image" in text.stdout and "second-image" in text.stdout


def test_images_show_of_an_unknown_id_is_a_request_error(aminate: Aminate) -> None:
    assert_request_error(aminate("images", "show", "img-000000000000"), "img-000000000000")


# usage errors: exit 2, one line, no traceback


@pytest.mark.parametrize(
    "argv",
    [
        ("--no-such-option",),
        ("images", "--no-such-option"),
        ("-b", "base", "--no-such-option", "./hello.deb"),
    ],
)
def test_unknown_option_is_a_usage_error(aminate: Aminate, argv: tuple[str, ...]) -> None:
    outcome = aminate(*argv)
    assert_request_error(outcome, "--no-such-option")
    assert outcome.stdout == ""


def test_unknown_option_with_json_prints_a_failure_object(aminate: Aminate) -> None:
    outcome = aminate("--output", "json", "--no-such-option")
    assert_request_error(outcome, "--no-such-option")
    data = outcome.json()
    assert data["exit_code"] == 2
    assert "--no-such-option" in data["error"]["message"]
    assert data["bake_id"] is None


def test_base_without_package_is_a_usage_error(aminate: Aminate) -> None:
    assert_request_error(aminate("-b", "x"), "PACKAGE")


def test_package_without_base_is_a_usage_error(aminate: Aminate) -> None:
    assert_request_error(aminate("./hello.deb"), "base")


def test_two_bases_are_a_usage_error(aminate: Aminate) -> None:
    assert_request_error(aminate("-b", "x", "-B", "img-1", "./hello.deb"), "-B")


def test_bad_tag_is_a_request_error(aminate: Aminate) -> None:
    assert_request_error(aminate("-b", "x", "--tag", "no-equals-sign", "./h.deb"), "--tag")


def test_unknown_cloud_is_a_request_error(aminate: Aminate) -> None:
    assert_request_error(aminate("--cloud", "no-such-cloud", "images"), "no-such-cloud")


def test_relative_home_is_a_request_error(
    aminate: Aminate, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AMINATOR_HOME", "relative/home")
    assert_request_error(aminate("images"), "AMINATOR_HOME", "absolute")


# bakes that stop before acquiring anything


def test_missing_package_file_json_failure_object(
    aminate: Aminate, workspace: Workspace, root_with_tools: None
) -> None:
    outcome = aminate("--output", "json", "-b", "nosuch", "./missing.deb")
    assert_request_error(outcome, "missing.deb")
    data = outcome.json()
    assert set(data) == {"error", "exit_code", "bake_id", "log_path", "preserved", "images"}
    assert set(data["error"]) == {"message", "hint", "step"}
    assert data["exit_code"] == 2
    assert data["error"]["step"] == "read_packages"
    assert "missing.deb" in data["error"]["message"]
    assert data["bake_id"]
    assert data["log_path"] == str(workspace.log_dir / f"{data['bake_id']}.log")
    assert Path(data["log_path"]).is_file()
    assert data["preserved"] == []


def test_missing_package_file_json_whoever_runs_it(aminate: Aminate) -> None:
    """Without patching: not root, a tool missing or the file missing, it is exit 2 and JSON."""
    outcome = aminate("--output", "json", "-b", "nosuch", "./missing.deb")
    assert outcome.code == 2
    data = outcome.json()
    assert set(data) == {"error", "exit_code", "bake_id", "log_path", "preserved", "images"}
    assert set(data["error"]) == {"message", "hint", "step"}
    assert data["exit_code"] == 2


def test_bake_as_non_root_is_a_host_error(aminate: Aminate, not_root: None) -> None:
    outcome = aminate("-b", "nosuch", "./missing.deb")
    assert_request_error(outcome, "root")
    assert "sudo" in outcome.stderr
    assert outcome.stdout == ""


@pytest.mark.parametrize(
    "argv",
    [
        ("--output", "json", "-b", "nosuch", "./x.deb"),
        ("-b", "nosuch", "--output", "json", "./x.deb"),
        ("bake", "-b", "nosuch", "--output", "json", "./x.deb"),
        ("bake", "--output=json", "-b", "nosuch", "./x.deb"),
    ],
)
def test_the_same_bake_however_global_options_are_placed(
    aminate: Aminate, not_root: None, argv: tuple[str, ...]
) -> None:
    outcome = aminate(*argv)
    assert_request_error(outcome, "root")
    data = outcome.json()
    assert data["exit_code"] == 2
    assert "root" in data["error"]["message"]


def test_a_package_named_like_a_command_after_b_is_baked(aminate: Aminate, not_root: None) -> None:
    # After -b the word "images" is a package to bake, not the images command.
    outcome = aminate("--output", "json", "-b", "nosuch", "images")
    assert_request_error(outcome, "root")
    assert isinstance(outcome.json(), dict)


def test_missing_tool_names_it_and_its_package(
    aminate: Aminate,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    make_deb: Callable[..., Path],
) -> None:
    deb = make_deb("hello", "1.0-1")
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(run_module, "SEARCH_PATH", str(tool_dir(tmp_path, without=("partx",))))

    outcome = aminate("-b", "nosuch", str(deb))
    assert_request_error(outcome, "partx")
    assert "util-linux" in outcome.stderr

    as_json = aminate("--output", "json", "-b", "nosuch", str(deb))
    assert_request_error(as_json, "partx")
    assert "apt-get install util-linux" in as_json.json()["error"]["hint"]

    assert aminate("images", "--output", "json").json() == []


def test_a_reader_that_goes_away_is_not_an_internal_error(workspace: Workspace) -> None:
    # `aminate plugins | head -1`: the pipe closes before aminate has written everything.
    script = (
        "import sys; from aminator_ng.commands.cli import main; "
        "sys.stdout = open(sys.stdout.fileno(), 'w', buffering=1, closefd=False); main(['plugins'])"
    )
    read_end, write_end = os.pipe()
    os.close(read_end)
    completed = subprocess.run(
        [sys.executable, "-c", script], stdout=write_end, stderr=subprocess.PIPE, text=True
    )
    os.close(write_end)
    assert completed.returncode == 1
    assert "internal error" not in completed.stderr
    assert "Traceback" not in completed.stderr
    assert "Exception ignored" not in completed.stderr


def test_images_rm_of_an_unknown_id_is_a_request_error(aminate: Aminate) -> None:
    assert_request_error(aminate("images", "rm", "img-000000000000"), "img-000000000000")


def test_the_cli_names_a_damaged_store_database_in_one_line(
    workspace: Workspace, aminate: Aminate, tmp_path: Path
) -> None:
    disk = tmp_path / "disk.raw"
    disk.write_bytes(b"\1" * 4096)
    store = Store(workspace.home)
    store.register_image(
        name="base",
        snapshot_id=store.add_snapshot_from(disk, None),
        description="",
        tags={},
        manifest=[],
        base_image_id=None,
    )
    database = workspace.home / "store.sqlite3"
    database.write_bytes(b"")
    listed = aminate("images")
    assert listed.code == 1 and listed.stdout == ""
    assert listed.error_lines == [
        f"aminate: error: the local store's database {database} is empty (0 bytes)"
    ]
    assert "store repair" in listed.stderr and "Traceback" not in listed.stderr
    checked = aminate("store", "check")
    assert checked.code == 1 and len(checked.error_lines) == 1
    repaired = aminate("store", "repair", "--output", "json")
    assert repaired.code == 0, repaired.stderr
    assert any(
        "registered again" in line or "again from" in line for line in repaired.json()["repaired"]
    )
    assert aminate("store", "check").code == 0
    assert [i["name"] for i in aminate("images", "--output", "json").json()] == ["base"]
