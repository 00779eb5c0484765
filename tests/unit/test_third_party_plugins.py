"""Third-party plugins found through their distributions' entry points, as ``aminate`` finds
them: a broken one is reported by name and distribution, and the rest still work."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


def install_distribution(site: Path, distribution: str, module: str, source: str) -> None:
    """A minimal installed distribution: a module and a dist-info with one entry point."""
    (site / f"{module}.py").write_text(source)
    info = site / f"{distribution.replace('-', '_')}-1.2.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {distribution}\nVersion: 1.2.3\n")
    (info / "entry_points.txt").write_text(f"[aminator_ng]\n{module.split('_')[0]} = {module}\n")


@pytest.fixture
def site(tmp_path: Path) -> Path:
    site = tmp_path / "site"
    site.mkdir()
    install_distribution(
        site, "aminator-broken", "broken_plugin", "raise RuntimeError('boom at import')\n"
    )
    install_distribution(
        site,
        "aminator-typo",
        "typo_plugin",
        "from aminator_ng.api import hookimpl\n\n"
        "@hookimpl\ndef aminator_image_nmae(facts):\n    return 'never'\n",
    )
    install_distribution(
        site,
        "aminator-extra-tags",
        "extra_plugin",
        "from aminator_ng.api import hookimpl\n\n"
        "@hookimpl\ndef aminator_image_tags(facts):\n    return {'owner': 'extra'}\n",
    )
    return site


def aminate(site: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AMINATOR_")}
    env.update(
        PYTHONPATH=os.pathsep.join([str(site), str(Path.cwd())]),
        AMINATOR_HOME=str(tmp_path / "home"),
        AMINATOR_LOG_DIR=str(tmp_path / "log"),
        XDG_CONFIG_HOME=str(tmp_path / "config"),
    )
    if "AMINATOR_TRACE_PLUGINS" in os.environ:
        env["AMINATOR_TRACE_PLUGINS"] = os.environ["AMINATOR_TRACE_PLUGINS"]
    return subprocess.run(
        [sys.executable, "-m", "aminator_ng", *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def test_plugins_that_fail_to_load_are_listed_and_the_rest_load(site: Path, tmp_path: Path) -> None:
    listed = aminate(site, tmp_path, "plugins", "--output", "json")
    assert listed.returncode == 0, listed.stderr
    data = json.loads(listed.stdout)
    failed = {f["name"]: f for f in data["failed"]}
    assert failed["broken"]["distribution"] == "aminator-broken"
    assert failed["broken"]["error"] == "RuntimeError: boom at import"
    assert failed["typo"]["distribution"] == "aminator-typo"
    assert "aminator_image_nmae" in failed["typo"]["error"]
    loaded = {p["name"]: p for p in data["plugins"]}
    assert {"local", "debian", "tagging"} <= set(loaded)
    assert loaded["extra"] == {
        "name": "extra",
        "distribution": "aminator-extra-tags",
        "version": "1.2.3",
        "builtin": False,
        "hooks": ["aminator_image_tags"],
    }
    # Built-ins first, then other distributions' plugins.
    assert [p["builtin"] for p in data["plugins"]] == sorted(
        (p["builtin"] for p in data["plugins"]), reverse=True
    )
    # One warning line per broken plugin, naming it and its distribution; no traceback.
    assert "plugin broken from aminator-broken failed to load: boom at import" in listed.stderr
    assert "Traceback" not in listed.stderr


def test_aminate_still_works_with_a_broken_plugin_installed(site: Path, tmp_path: Path) -> None:
    images = aminate(site, tmp_path, "images", "--output", "json")
    assert images.returncode == 0, images.stderr
    assert json.loads(images.stdout) == []
    text = aminate(site, tmp_path, "plugins")
    assert text.returncode == 0
    assert "broken (aminator-broken): FAILED TO LOAD: RuntimeError: boom at import" in text.stdout
