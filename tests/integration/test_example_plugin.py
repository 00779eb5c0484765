"""The example distro plugin of examples/acme-distro, installed as a third party installs it (its
own distribution, found through its entry point), baking a distribution no built-in knows."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from tests.integration.conftest import (
    BASE_NAME,
    REPO,
    Workspace,
    assert_one_error_line,
    mounted_image,
)

pytestmark = pytest.mark.privileged

EXAMPLE = REPO / "examples" / "acme-distro"
ACME_BASE = "acme-1"
ACME_OS_RELEASE = 'NAME="Acme Linux"\nID=acme\nVERSION_ID=1\nPRETTY_NAME="Acme Linux 1"\n'
GREETING = b"Hello from Acme Linux\n\x00\xff binary tail\n"
#: Does not exist on the host; the Acme base has /opt/acme -> /srv/acme, an absolute symlink.
HOST_SRV_ACME = Path("/srv/acme")
HOOKS = [
    "aminator_detect_distro",
    "aminator_package_file_suffixes",
    "aminator_prepare_chroot",
    "aminator_provisioner",
    "aminator_read_package_file",
    "aminator_settings",
]


def install_example(work: Path, entry_point_name: str = "acme") -> dict[str, str]:
    """The example installed with pip into a directory of its own (never into the shared
    environment) under ``entry_point_name``, and the environment under which ``aminate`` finds
    it. It is built from a copy, so that the build leaves nothing in examples/."""
    source = work / "source"
    shutil.copytree(
        EXAMPLE, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__")
    )
    setup = source / "setup.cfg"
    setup.write_text(
        setup.read_text().replace(
            "    acme = aminator_acme.plugin", f"    {entry_point_name} = aminator_acme.plugin"
        )
    )
    site = work / "site"
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps"]
    installed = subprocess.run(
        [*pip, "--target", str(site), str(source)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert installed.returncode == 0, installed.stderr
    paths = [str(site), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {"PYTHONPATH": os.pathsep.join(paths)}


@pytest.fixture(scope="module")
def with_acme(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The environment under which ``aminate`` finds the example plugin, installed as ``acme``."""
    return install_example(tmp_path_factory.mktemp("acme-plugin"))


def make_acme_linux(root: Path) -> None:
    """Turn a Debian root into "Acme Linux": an os-release no built-in plugin recognises, and an
    absolute symlink a package writes through."""
    for name in ("etc/os-release", "usr/lib/os-release"):
        (root / name).unlink()
    (root / "usr/lib/os-release").write_text(ACME_OS_RELEASE)
    (root / "etc/os-release").symlink_to("../usr/lib/os-release")
    (root / "srv/acme").mkdir(parents=True)
    (root / "opt/acme").symlink_to("/srv/acme")


@pytest.fixture
def acme_base(workspace: Workspace, modified_base: Callable[[Callable[[Path], None]], Path]) -> str:
    raw = modified_base(make_acme_linux)
    imported = workspace.aminate("base", "import", ACME_BASE, str(raw))
    assert imported.returncode == 0, imported.stderr
    return ACME_BASE


def build_acme_package(
    directory: Path,
    name: str,
    files: Mapping[str, bytes],
    *,
    version: str = "1.0",
    release: str = "1",
    arch: str = "noarch",
    postinst: str | None = None,
) -> Path:
    """An .acme.tar package: .ACME-META (and .ACME-POSTINST) at its top, then the payload."""
    path = directory / f"{name}_{version}-{release}_{arch}.acme.tar"
    meta = f"name={name}\nversion={version}\nrelease={release}\narch={arch}\n"
    members = {".ACME-META": meta.encode(), **files}
    if postinst is not None:
        members[".ACME-POSTINST"] = postinst.encode()
    with tarfile.open(path, "w") as tar:
        for member_name, content in members.items():
            info = tarfile.TarInfo(member_name)
            info.size = len(content)
            info.mode = 0o644
            info.mtime = 1_700_000_000
            tar.addfile(info, io.BytesIO(content))
    return path


def test_aminate_plugins_lists_the_example(tmp_path: Path, with_acme: dict[str, str]) -> None:
    workspace = Workspace(tmp_path)
    listed = workspace.aminate("plugins", "--output", "json", env=with_acme)
    assert listed.returncode == 0, listed.stderr
    data = listed.json()
    assert data["failed"] == []
    plugins = {plugin["name"]: plugin for plugin in data["plugins"]}
    assert plugins["acme"] == {
        "name": "acme",
        "distribution": "aminator-acme",
        "version": "0.1.0",
        "builtin": False,
        "hooks": HOOKS,
    }
    assert {"debian", "local", "tagging"} <= set(plugins)
    # Without the directory on PYTHONPATH, the shared environment does not have it.
    without = workspace.aminate("plugins", "--output", "json").json()
    assert "acme" not in {plugin["name"] for plugin in without["plugins"]}

    # Its declared setting is a bake flag, a [plugins.acme] key and an AMINATOR_ACME_ variable.
    helped = workspace.aminate("bake", "--help", env=with_acme)
    assert helped.returncode == 0, helped.stderr
    assert "--motd" in helped.stdout
    config = workspace.config_home / "aminator-ng" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text('[plugins.acme]\nmotd = "from the file"\n')
    shown = workspace.aminate("config", "show", "--output", "json", env=with_acme).json()
    settings = {row["key"]: row for row in shown["settings"]}
    assert settings["plugins.acme.motd"]["value"] == "from the file"
    assert settings["plugins.acme.motd"]["source"] == str(config)
    shown = workspace.aminate(
        "config", "show", "--output", "json", env={**with_acme, "AMINATOR_ACME_MOTD": "from env"}
    ).json()
    settings = {row["key"]: row for row in shown["settings"]}
    assert settings["plugins.acme.motd"] == {
        "key": "plugins.acme.motd",
        "value": "from env",
        "source": "AMINATOR_ACME_MOTD",
    }
    workspace.assert_nothing_left()


def test_bake_with_the_example_plugin(
    workspace: Workspace, acme_base: str, with_acme: dict[str, str], tmp_path: Path
) -> None:
    assert not HOST_SRV_ACME.exists(), "this test needs a host without /srv/acme"
    package = build_acme_package(
        tmp_path,
        "acme-hello",
        {
            "usr/share/acme-hello/greeting": GREETING,
            "opt/acme/hello.conf": b"greeting=/usr/share/acme-hello/greeting\n",
        },
        postinst=("test -f /etc/acme/baking\necho configured > /usr/share/acme-hello/configured\n"),
    )
    baked = workspace.aminate(
        "-b", acme_base, "--output", "json", "--motd", "baked by acme", str(package),
        env=with_acme,
    )  # fmt: skip
    assert baked.returncode == 0, baked.stderr
    result = baked.json()
    assert result["packages"] == [
        {"name": "acme-hello", "epoch": "", "version": "1.0", "release": "1", "arch": "noarch"}
    ]
    assert result["manifest"] == [
        {
            "name": "acme-hello",
            "version": "1.0-1",
            "arch": "noarch",
            "source_name": "acme-hello",
            "source_version": "1.0-1",
        }
    ]
    assert result["name"].startswith("acme-hello-1.0-1-noarch-")
    assert result["base_image_name"] == acme_base
    stored = {image["image_id"]: image for image in workspace.images()}
    assert stored[result["image_id"]]["name"] == result["name"]

    raw = workspace.scratch / "acme.raw"
    exported = workspace.aminate("export", result["image_id"], str(raw))
    assert exported.returncode == 0, exported.stderr
    with mounted_image(raw, workspace.scratch / "mnt") as root:
        assert (root / "usr/share/acme-hello/greeting").read_bytes() == GREETING
        # The post-install script ran inside the image, while the bake marker was there.
        assert (root / "usr/share/acme-hello/configured").read_text() == "configured\n"
        assert (root / "etc/motd").read_text() == "baked by acme\n"
        assert (root / "var/lib/acme/installed").read_text() == "acme-hello 1.0 1 noarch\n"
        # Undone at chroot teardown: the marker, and the directory the plugin made for it.
        assert not (root / "etc/acme/baking").exists()
        assert not (root / "etc/acme").exists()
        assert not (root / "var/cache/acme").exists()
        # Written through the image's absolute symlink /opt/acme -> /srv/acme: into the image.
        assert (root / "srv/acme/hello.conf").is_file()
    assert not HOST_SRV_ACME.exists()


def test_the_example_installed_under_another_name_gets_its_settings_there(
    workspace: Workspace, acme_base: str, tmp_path: Path
) -> None:
    renamed = install_example(tmp_path / "renamed", "acmecorp")
    (workspace.config_home / "aminator-ng").mkdir(parents=True, exist_ok=True)
    (workspace.config_home / "aminator-ng" / "config.toml").write_text(
        '[plugins.acmecorp]\nmotd = "from [plugins.acmecorp]"\n'
    )
    listed = workspace.aminate("plugins", "--output", "json", env=renamed).json()
    assert "acmecorp" in {plugin["name"] for plugin in listed["plugins"]}
    package = build_acme_package(tmp_path, "acme-hello", {"usr/share/acme-hello/x": b"x"})
    baked = workspace.aminate("-b", acme_base, "--output", "json", str(package), env=renamed)
    assert baked.returncode == 0, baked.stderr
    raw = workspace.scratch / "renamed.raw"
    exported = workspace.aminate("export", baked.json()["image_id"], str(raw))
    assert exported.returncode == 0, exported.stderr
    with mounted_image(raw, workspace.scratch / "mnt") as root:
        assert (root / "etc/motd").read_text() == "from [plugins.acmecorp]\n"
    workspace.assert_nothing_left()


def test_without_the_plugin_no_distro_plugin_recognises_acme_linux(
    workspace: Workspace, acme_base: str, debs: dict[str, Path], tmp_path: Path
) -> None:
    result = workspace.aminate("-b", acme_base, str(debs["hello"]))
    assert_one_error_line(result, 2, "no distro plugin recognises", "Acme Linux")
    package = build_acme_package(tmp_path, "acme-hello", {"usr/share/acme-hello/x": b"x"})
    result = workspace.aminate("-b", acme_base, str(package))
    assert_one_error_line(result, 2, "not a package file", package.name)
    assert [i for i in workspace.baked_images() if i["name"] != acme_base] == []


def test_package_names_need_a_pool(
    workspace: Workspace, acme_base: str, with_acme: dict[str, str]
) -> None:
    result = workspace.aminate("-b", acme_base, "--output", "json", "acme-hello", env=with_acme)
    assert_one_error_line(result, 2, "package files, or names from a pool", "acme-hello")
    assert result.json()["error"]["step"] == "install"
    assert [i for i in workspace.baked_images() if i["name"] != acme_base] == []


def test_names_are_installed_from_a_pool_the_plugin_reads(
    workspace: Workspace, acme_base: str, with_acme: dict[str, str], tmp_path: Path
) -> None:
    pool = tmp_path / "pool"
    pool.mkdir()
    for version in ("1.0", "2.0"):
        build_acme_package(
            pool, "acme-hello", {"usr/share/acme-hello/v": version.encode()}, version=version
        )
    build_acme_package(pool, "acme-tools", {"usr/share/acme-tools/x": b"x"})
    baked = workspace.aminate(
        "-b", acme_base, "--output", "json", "--repo", str(pool), "acme-hello=2.0-1", "acme-tools",
        env=with_acme,
    )  # fmt: skip
    assert baked.returncode == 0, baked.stderr
    result = baked.json()
    assert [(p["name"], p["version"]) for p in result["packages"]] == [
        ("acme-hello", "2.0"),
        ("acme-tools", "1.0"),
    ]
    raw = workspace.scratch / "pooled.raw"
    assert workspace.aminate("export", result["image_id"], str(raw)).returncode == 0
    with mounted_image(raw, workspace.scratch / "mnt") as root:
        assert (root / "usr/share/acme-hello/v").read_text() == "2.0"
        assert (root / "var/lib/acme/installed").read_text() == (
            "acme-hello 2.0 1 noarch\nacme-tools 1.0 1 noarch\n"
        )

    two = workspace.aminate("-b", acme_base, "--repo", str(pool), "acme-hello", env=with_acme)
    assert_one_error_line(two, 2, "acme-hello", "more than once")
    workspace.assert_nothing_left()


@pytest.mark.parametrize(
    ("repo", "step", "words"),
    [
        ("deb http://deb.example/ stable main", "detect_distro", "not an Acme repository"),
        ("acme-pool:srv/acme", "detect_distro", "an absolute path"),
        ("acme-pool:/srv/missing", "chroot_setup", "the image has no pool /srv/missing"),
        ("acme-pool:/srv/acme", "install", "in no Acme pool (/srv/acme)"),
    ],
)
def test_a_pool_spec_the_plugin_cannot_use_is_refused_naming_it(
    workspace: Workspace,
    acme_base: str,
    with_acme: dict[str, str],
    repo: str,
    step: str,
    words: str,
) -> None:
    result = workspace.aminate(
        "-b", acme_base, "--output", "json", "--repo", repo, "acme-hello", env=with_acme
    )
    assert_one_error_line(result, 2, words)
    assert result.json()["error"]["step"] == step
    assert [i for i in workspace.baked_images() if i["name"] != acme_base] == []
    workspace.assert_nothing_left()


@pytest.mark.parametrize("damage", ["garbage", "truncated", "no metadata"])
def test_damaged_package_file_is_refused_before_anything_is_acquired(
    workspace: Workspace, with_acme: dict[str, str], tmp_path: Path, damage: str
) -> None:
    good = build_acme_package(tmp_path, "acme-hello", {"usr/share/acme-hello/x": b"x" * 4096})
    bad = tmp_path / "bad" / good.name
    bad.parent.mkdir()
    if damage == "garbage":
        bad.write_bytes(b"this is not a tar archive\n" * 40)
    elif damage == "truncated":
        bad.write_bytes(good.read_bytes()[:2048])
    else:
        with tarfile.open(bad, "w") as tar:
            tar.add(good, arcname="usr/share/acme-hello/not-meta")
    result = workspace.aminate("-b", BASE_NAME, "--output", "json", str(bad), env=with_acme)
    assert_one_error_line(result, 2, "not a valid Acme package", str(bad))
    assert result.json()["error"]["step"] == "read_packages"
    assert workspace.baked_images() == []


def test_unsafe_member_is_refused_and_nothing_leaves_the_image(
    workspace: Workspace, acme_base: str, with_acme: dict[str, str], tmp_path: Path
) -> None:
    escape = Path("/tmp") / f"acme-escape-{tmp_path.name}"
    package = build_acme_package(
        tmp_path, "acme-evil", {"../" * 40 + escape.relative_to("/").as_posix(): b"escaped\n"}
    )
    result = workspace.aminate("-b", acme_base, "--output", "json", str(package), env=with_acme)
    assert_one_error_line(result, 2, "acme-evil", "unsafe member")
    assert not escape.exists()
    assert [i for i in workspace.baked_images() if i["name"] != acme_base] == []


def test_failing_post_install_script_fails_the_bake_naming_the_package(
    workspace: Workspace, acme_base: str, with_acme: dict[str, str], tmp_path: Path
) -> None:
    package = build_acme_package(
        tmp_path,
        "acme-broken",
        {"usr/share/acme-broken/x": b"x"},
        postinst="echo 'acme-broken: refusing to configure' >&2\nexit 3\n",
    )
    result = workspace.aminate("-b", acme_base, "--output", "json", str(package), env=with_acme)
    assert_one_error_line(result, 1, "acme-broken", "post-install script exited 3")
    failure = result.json()
    assert failure["error"]["step"] == "install"
    assert failure["exit_code"] == 1
    assert "refusing to configure" in Path(failure["log_path"]).read_text()
    assert [i for i in workspace.baked_images() if i["name"] != acme_base] == []
