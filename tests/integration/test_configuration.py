"""Configuration reaching real bakes: config files, environments, plugin settings and flags, and
plugins disabled by the operator."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.conftest import BASE_NAME, Workspace, dpkg_status, mounted_image
from tests.integration.debs import build_deb

pytestmark = pytest.mark.privileged


def write_user_config(workspace: Workspace, text: str) -> Path:
    path = workspace.config_home / "aminator-ng" / "config.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_config_file_tags_environment_and_plugin_settings_reach_the_image(
    workspace: Workspace, debs: dict[str, Path]
) -> None:
    user_config = write_user_config(
        workspace,
        """
[bake]
tags = { team = "payments", cost_center = "42" }

[environments.release]
bake = { suffix = "rc1", tags = { stage = "release" } }
plugins.tagging.creator = "bakery@ci"
""",
    )
    result = workspace.aminate(
        "-e", "release", "-b", BASE_NAME, "--tag", "cost_center=7", "--output", "json",
        str(debs["hello"]),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    baked = result.json()
    assert baked["name"] == "hello-1.0-1-all-rc1"
    tags = baked["tags"]
    assert tags["team"] == "payments"  # the user's file
    assert tags["stage"] == "release"  # the environment
    assert tags["cost_center"] == "7"  # the flag beats the file
    assert tags["creator"] == "bakery@ci"  # a plugin's own setting, from the environment
    # What the registry holds, not only what the bake printed.
    stored = {image["image_id"]: image for image in workspace.baked_images()}
    assert stored[baked["image_id"]]["tags"] == tags

    shown = workspace.aminate("-e", "release", "config", "show", "--output", "json").json()
    sources = {row["key"]: row["source"] for row in shown["settings"]}
    assert sources["bake.tags.team"] == str(user_config)
    assert sources["bake.suffix"] == f"{user_config} [environments.release]"
    assert sources["plugins.tagging.creator"] == f"{user_config} [environments.release]"


def test_no_install_recommends_is_the_debian_plugins_flag(
    workspace: Workspace, tmp_path: Path
) -> None:
    deb = build_deb(tmp_path, "suggester", recommends="jq")
    lean = workspace.aminate(
        "-b", BASE_NAME, "--no-install-recommends", "-s", "lean", "--output", "json", str(deb)
    )
    assert lean.returncode == 0, lean.stderr
    full = workspace.aminate("-b", BASE_NAME, "-s", "full", "--output", "json", str(deb))
    assert full.returncode == 0, full.stderr
    lean_packages = {entry["name"] for entry in lean.json()["manifest"]}
    full_packages = {entry["name"] for entry in full.json()["manifest"]}
    assert "suggester" in lean_packages and "jq" not in lean_packages
    assert "jq" in full_packages
    raw = workspace.scratch / "lean.raw"
    assert workspace.aminate("export", lean.json()["image_id"], str(raw)).returncode == 0
    with mounted_image(raw, workspace.scratch / "m") as root:
        assert dpkg_status(root, "suggester") == "ii"
        assert dpkg_status(root, "jq") != "ii"


def test_disabling_the_debian_plugin_makes_a_debian_bake_a_request_error(
    workspace: Workspace, debs: dict[str, Path]
) -> None:
    disabled = {"AMINATOR_DISABLE_PLUGINS": "debian"}
    listed = workspace.aminate("plugins", "--output", "json", env=disabled).json()
    assert "debian" in listed["disabled"]
    assert "debian" not in {plugin["name"] for plugin in listed["plugins"]}
    # Without the plugin there is nothing to read a .deb, so bake a package by name.
    result = workspace.aminate("-b", BASE_NAME, "--output", "json", "jq", env=disabled)
    assert result.returncode == 2, result.stderr
    error = result.json()["error"]
    assert error["step"] == "detect_distro"
    assert "Debian GNU/Linux 12" in error["message"]
    assert "Traceback" not in result.stderr
    assert workspace.baked_images() == []


def test_an_environment_pinning_a_plugin_that_is_not_loaded_fails_before_acquiring(
    workspace: Workspace, debs: dict[str, Path]
) -> None:
    write_user_config(workspace, '[environments.alien]\ndistro = "suse"\n')
    result = workspace.aminate("-e", "alien", "-b", BASE_NAME, str(debs["hello"]))
    assert result.returncode == 2, result.stderr
    assert "suse" in result.stderr and "not loaded" in result.stderr
    assert "create_volume" not in result.stderr
    assert workspace.baked_images() == []  # the workspace checks nothing was acquired


def test_an_environment_pinning_the_debian_plugin_bakes(
    workspace: Workspace, debs: dict[str, Path]
) -> None:
    write_user_config(
        workspace,
        '[environments.pinned]\ndistro = "debian"\nprovisioner = "debian"\n'
        'finalizers = ["tagging"]\n',
    )
    result = workspace.aminate(
        "-e", "pinned", "-b", BASE_NAME, "--output", "json", str(debs["hello"])
    )
    assert result.returncode == 0, result.stderr
    assert result.json()["name"].startswith("hello-1.0-1-all-")
