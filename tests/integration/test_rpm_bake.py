"""Real bakes of RPMs on the synthetic RPM-managed root (see tests/integration/rpms.py): dnf in
the chroot, a dependency from the image's signed repository, scriptlets, no service started."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.hoststate import processes_rooted_under
from tests.integration import rpms
from tests.integration.conftest import Result, Workspace, assert_sbom_describes, mounted_image

pytestmark = pytest.mark.privileged


def bake(space: Workspace, *args: str) -> Result:
    return space.aminate("-b", rpms.BASE_NAME, "--output", "json", *args)


def export(space: Workspace, image_id: str) -> Path:
    raw = space.scratch / f"{image_id}.raw"
    result = space.aminate("export", image_id, str(raw))
    assert result.returncode == 0, result.stderr
    return raw


@pytest.fixture
def base_state(rpm_base_raw: Path, rpm_space: Workspace) -> dict[str, Any]:
    with mounted_image(rpm_base_raw, rpm_space.scratch / "base") as root:
        return rpms.image_state(root)


def test_an_rpm_bake_pulls_its_dependency_runs_post_and_starts_no_service(
    rpm_space: Workspace, rpm_files: dict[str, Path], base_state: dict[str, Any]
) -> None:
    result = bake(rpm_space, str(rpm_files["greeter"]))
    assert result.returncode == 0, result.stderr
    baked = result.json()
    assert baked["name"].startswith("greeter-1.0-1-noarch-")
    tags = baked["tags"]
    assert tags["appversion"] == "greeter-1.0-1"
    assert tags["gpgcheck"] == "on"
    assert baked["packages"] == [
        {"name": "greeter", "epoch": "", "version": "1.0", "release": "1", "arch": "noarch"}
    ]
    manifest = {entry["name"]: entry for entry in baked["manifest"]}
    assert manifest["greeter"] == {
        "name": "greeter",
        "version": "1.0-1",
        "arch": "noarch",
        "source_name": "greeter",
        "source_version": "1.0-1",
    }
    # The newest version from the image's own repository, signature checked.
    assert manifest["greeting-lib"]["version"] == "1.1-1"
    assert "sh-provider" in manifest and "gpg-pubkey" not in manifest
    assert tags["package_count"] == str(len(baked["manifest"]))
    assert_sbom_describes(rpm_space, baked, "synthel-9")
    assert not processes_rooted_under(str(rpm_space.home))

    with mounted_image(export(rpm_space, baked["image_id"]), rpm_space.scratch / "baked") as root:
        assert rpms.rpm_query(root, "greeter", "greeting-lib") == sorted(
            ["greeter-1.0-1.noarch", "greeting-lib-1.1-1.noarch"]
        )
        assert (root / "usr/share/greeter/README").read_text() == "greeter 1.0-1\n"
        # %post ran inside the image: it read the image's os-release, not the host's.
        assert (root / "var/lib/greeter/post-ran").read_text() == rpms.OS_RELEASE
        # systemctl enable reached the image's own systemctl, without --now.
        assert (root / rpms.ENABLED_DIR.lstrip("/") / "greeterd.service").exists()
        assert rpms.image_state(root) == base_state
    assert not Path("/var/lib/greeter").exists()


def test_a_pin_without_a_release_installs_that_version(rpm_space: Workspace) -> None:
    result = bake(rpm_space, "greeting-lib=1.0")
    assert result.returncode == 0, result.stderr
    baked = result.json()
    assert baked["packages"][0]["version"] == "1.0"
    assert baked["name"].startswith("greeting-lib-1.0-1-noarch-")
    versions = {entry["name"]: entry["version"] for entry in baked["manifest"]}
    assert versions["greeting-lib"] == "1.0-1"


@pytest.mark.parametrize(
    ("args", "exit_code", "message"),
    [
        (["foreign_arch"], 2, "armthing-1.0-1.aarch64 does not have a compatible architecture"),
        (["corrupt"], 2, "not a valid .rpm package"),
        (["unresolvable"], 2, "nothing provides no-such-capability needed by needy"),
        (["failing"], 1, "installing package broken-1.0-1.noarch failed: its %post scriptlet"),
        (["no-such-package"], 2, "package not found in the image's repositories: no-such-package"),
        (
            ["greeting-lib=9.9"],
            2,
            "package not found in the image's repositories: greeting-lib=9.9",
        ),
        (
            ["--repo", "file:///srv/missing", "greeting-lib"],
            2,
            "repository cannot be used: aminator-ng-0",
        ),
        (
            ["--repo", "deb http://deb.example.org/ ./", "greeting-lib"],
            2,
            "dnf cannot use an apt source line",
        ),
    ],
)
def test_bad_rpm_input_fails_clearly_and_leaves_nothing(
    rpm_space: Workspace,
    rpm_files: dict[str, Path],
    args: list[str],
    exit_code: int,
    message: str,
) -> None:
    argv = [str(rpm_files[arg]) if arg in rpm_files else arg for arg in args]
    result = rpm_space.aminate("-b", rpms.BASE_NAME, *argv)
    assert result.returncode == exit_code, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("aminate: error:")]
    assert len(errors) == 1 and message in errors[0], result.stderr
    assert rpm_space.baked_images() == []


def test_an_unsigned_repository_is_refused_unless_checking_is_turned_off(
    rpm_space: Workspace, base_state: dict[str, Any]
) -> None:
    refused = bake(rpm_space, "--repo", "file:///srv/unsigned", "extra-tool")
    assert refused.returncode == 2, refused.stderr
    assert "extra-tool-2.0-1.noarch failed its signature check" in refused.stderr
    assert "--no-gpgcheck" in refused.json()["error"]["hint"]

    result = bake(rpm_space, "--repo", "file:///srv/unsigned", "--no-gpgcheck", "extra-tool")
    assert result.returncode == 0, result.stderr
    baked = result.json()
    assert baked["tags"]["gpgcheck"] == "off"
    with mounted_image(export(rpm_space, baked["image_id"]), rpm_space.scratch / "baked") as root:
        assert rpms.rpm_query(root, "extra-tool") == ["extra-tool-2.0-1.noarch"]
        assert rpms.image_state(root) == base_state


def test_a_signed_repository_with_its_key_leaves_no_trace(
    rpm_space: Workspace, rpm_keys: dict[str, rpms.SigningKey], base_state: dict[str, Any]
) -> None:
    key = str(rpm_keys["vendor"].public)
    result = bake(rpm_space, "--repo", "file:///srv/vendor", "--repo-key", key, "extra-tool")
    assert result.returncode == 0, result.stderr
    assert result.json()["tags"]["gpgcheck"] == "on"
    with mounted_image(
        export(rpm_space, result.json()["image_id"]), rpm_space.scratch / "baked"
    ) as root:
        assert rpms.rpm_query(root, "extra-tool") == ["extra-tool-2.0-1.noarch"]
        # The vendor key was imported for the bake only.
        assert rpms.image_state(root) == base_state


def test_a_directory_repository_is_indexed_for_the_bake_only(
    rpm_space: Workspace, rpm_files: dict[str, Path], base_state: dict[str, Any]
) -> None:
    directory = rpm_space.scratch / "rpms"
    directory.mkdir()
    for name in ("greeter", "extra"):
        (directory / rpm_files[name].name).write_bytes(rpm_files[name].read_bytes())
    result = bake(rpm_space, "--repo", str(directory), "extra-tool", "greeter")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in directory.iterdir()) == sorted(
        rpm_files[name].name for name in ("greeter", "extra")
    )
    with mounted_image(
        export(rpm_space, result.json()["image_id"]), rpm_space.scratch / "baked"
    ) as root:
        assert rpms.rpm_query(root, "extra-tool", "greeter") == sorted(
            ["extra-tool-2.0-1.noarch", "greeter-1.0-1.noarch"]
        )
        assert not (root / "var/cache/aminator-ng").exists()
        state = rpms.image_state(root)
        assert state == base_state


def test_a_yum_only_base_is_refused(
    rpm_space: Workspace, rpm_base_raw: Path, rpm_files: dict[str, Path]
) -> None:
    raw = rpm_space.scratch / "yum-only.raw"
    subprocess.run(["cp", "--sparse=always", str(rpm_base_raw), str(raw)], check=True)
    with mounted_image(raw, rpm_space.scratch / "edit", read_only=False) as root:
        for dnf in ("dnf", "dnf-3"):
            (root / "usr/bin" / dnf).unlink(missing_ok=True)
        (root / "usr/bin/yum").write_text("#!/bin/sh\nexit 1\n")
        (root / "usr/bin/yum").chmod(0o755)
    imported = rpm_space.aminate("base", "import", "yum-only", str(raw))
    assert imported.returncode == 0, imported.stderr
    result = rpm_space.aminate("-b", "yum-only", str(rpm_files["greeter"]))
    assert result.returncode == 2, result.stderr
    assert "installs with yum only" in result.stderr
    assert "Amazon Linux 2023" in result.stderr
