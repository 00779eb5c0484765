"""Bad input: exit 2, one clear line, no traceback, no new image, nothing left behind."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.conftest import BASE_NAME, Result, Workspace, mounted_image
from tests.integration.debs import build_deb

pytestmark = pytest.mark.privileged


def assert_request_error(result: Result, *needles: str) -> None:
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("aminate: error:")]
    assert len(errors) == 1, result.stderr
    for needle in needles:
        assert needle in errors[0]
    assert "Traceback" not in result.stderr


def test_base_that_does_not_exist(workspace: Workspace, debs: dict[str, Path]) -> None:
    result = workspace.aminate("-b", "no-such-base", str(debs["hello"]))
    assert_request_error(result, "no-such-base")
    assert workspace.baked_images() == []


def test_file_that_is_not_a_package(workspace: Workspace, debs: dict[str, Path]) -> None:
    result = workspace.aminate("-b", BASE_NAME, str(debs["not_a_package"]))
    assert_request_error(result, "notes.deb")
    assert workspace.baked_images() == []


def test_package_file_that_does_not_exist(workspace: Workspace) -> None:
    result = workspace.aminate("-b", BASE_NAME, "./missing_1.0_all.deb")
    assert_request_error(result, "missing_1.0_all.deb")


def test_package_name_the_repositories_do_not_have(workspace: Workspace) -> None:
    result = workspace.aminate("-b", BASE_NAME, "--output", "json", "no-such-package-anywhere")
    assert_request_error(result, "no-such-package-anywhere")
    assert result.json()["error"]["step"] == "install"
    assert workspace.baked_images() == []


def test_unmet_dependency(workspace: Workspace, tmp_path: Path) -> None:
    from tests.integration.debs import build_deb

    deb = build_deb(tmp_path, "needy", depends="no-such-dependency-anywhere")
    result = workspace.aminate("-b", BASE_NAME, str(deb))
    assert_request_error(result, "needy")
    assert workspace.baked_images() == []


def test_base_whose_distribution_no_plugin_recognises(
    workspace: Workspace,
    debs: dict[str, Path],
    modified_base: Callable[[Callable[[Path], None]], Path],
) -> None:
    def make_alien(root: Path) -> None:
        os_release = root / "etc/os-release"
        os_release.unlink()
        os_release.write_text('ID=plan9\nPRETTY_NAME="Plan 9 from Bell Labs"\n')
        (root / "usr/lib/os-release").unlink()

    alien = modified_base(make_alien)
    assert workspace.aminate("base", "import", "alien", str(alien)).returncode == 0
    result = workspace.aminate("-b", "alien", str(debs["hello"]))
    assert_request_error(result, "Plan 9 from Bell Labs")
    assert workspace.baked_images() == [i for i in workspace.baked_images() if i["name"] == "alien"]


@pytest.mark.parametrize("template", ["{name}-{nope}", "{name"])
def test_bad_name_template_fails_before_anything_is_acquired(
    workspace: Workspace, debs: dict[str, Path], template: str
) -> None:
    result = workspace.aminate(
        "-b", BASE_NAME, "-n", template, "--output", "json", str(debs["hello"])
    )
    assert_request_error(result, template)
    assert result.json()["error"]["step"] == "read_packages"
    assert "create_volume" not in result.stderr


def test_image_name_that_is_taken(workspace: Workspace, debs: dict[str, Path]) -> None:
    first = workspace.aminate("-b", BASE_NAME, "-n", "web-{version}", str(debs["hello"]))
    assert first.returncode == 0, first.stderr
    second = workspace.aminate("-b", BASE_NAME, "-n", "web-{version}", str(debs["hello"]))
    assert_request_error(second, "web-1.0")
    assert len(workspace.baked_images()) == 1


def test_import_of_a_file_without_a_disk_layout(workspace: Workspace, tmp_path: Path) -> None:
    junk = tmp_path / "junk.raw"
    junk.write_bytes(b"\0" * 1024 * 1024)
    result = workspace.aminate("base", "import", "junk", str(junk))
    assert_request_error(result, "junk.raw")
    assert [i["name"] for i in workspace.images()] == [BASE_NAME]


def test_resolv_conf_symlink_is_replaced_not_written_through(
    workspace: Workspace,
    debs: dict[str, Path],
    modified_base: Callable[[Callable[[Path], None]], Path],
) -> None:
    host_before = Path("/etc/resolv.conf").read_bytes()

    def resolved_style(root: Path) -> None:
        (root / "etc/resolv.conf").unlink(missing_ok=True)
        (root / "etc/resolv.conf").symlink_to("/run/systemd/resolve/stub-resolv.conf")

    base = modified_base(resolved_style)
    assert workspace.aminate("base", "import", "resolved", str(base)).returncode == 0
    result = workspace.aminate("-b", "resolved", "--output", "json", str(debs["hello"]))
    assert result.returncode == 0, result.stderr
    raw = workspace.scratch / "baked.raw"
    assert workspace.aminate("export", result.json()["image_id"], str(raw)).returncode == 0

    with mounted_image(raw, workspace.scratch / "m") as root:
        link = root / "etc/resolv.conf"
        assert link.is_symlink()
        assert str(link.readlink()) == "/run/systemd/resolve/stub-resolv.conf"
    assert Path("/etc/resolv.conf").read_bytes() == host_before


def test_resolv_conf_file_of_the_image_comes_back_byte_for_byte(
    workspace: Workspace,
    debs: dict[str, Path],
    modified_base: Callable[[Callable[[Path], None]], Path],
) -> None:
    own = b"# the image's own\nnameserver 192.0.2.53\noptions edns0\n"

    def own_resolver(root: Path) -> None:
        (root / "etc/resolv.conf").write_bytes(own)
        (root / "etc/resolv.conf").chmod(0o600)

    base = modified_base(own_resolver)
    assert workspace.aminate("base", "import", "own-resolver", str(base)).returncode == 0
    result = workspace.aminate("-b", "own-resolver", "--output", "json", str(debs["hello"]))
    assert result.returncode == 0, result.stderr
    raw = workspace.scratch / "baked.raw"
    assert workspace.aminate("export", result.json()["image_id"], str(raw)).returncode == 0

    with mounted_image(raw, workspace.scratch / "m") as root:
        resolv = root / "etc/resolv.conf"
        assert not resolv.is_symlink()
        assert resolv.read_bytes() == own
        assert resolv.stat().st_mode & 0o777 == 0o600


def test_resolv_conf_a_package_made_its_own_is_kept(workspace: Workspace, tmp_path: Path) -> None:
    """As systemd-resolved does: the package links resolv.conf to its stub; the image keeps
    the link, and nothing of the host's resolver."""
    resolver = build_deb(
        tmp_path,
        "stub-resolver",
        postinst="ln -sf ../run/systemd/resolve/stub-resolv.conf /etc/resolv.conf",
    )
    result = workspace.aminate("-b", BASE_NAME, "--output", "json", str(resolver))
    assert result.returncode == 0, result.stderr
    assert "keeping its version" in Path(result.json()["log_path"]).read_text()
    raw = workspace.scratch / "baked.raw"
    assert workspace.aminate("export", result.json()["image_id"], str(raw)).returncode == 0
    with mounted_image(raw, workspace.scratch / "m") as root:
        link = root / "etc/resolv.conf"
        assert link.is_symlink()
        assert str(link.readlink()) == "../run/systemd/resolve/stub-resolv.conf"
