"""Loading plugins: the built-ins as entry points, disabling, and in-process plugins overriding."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path

import pluggy
import pytest

from aminator_ng.contract.hookspecs import hookimpl
from aminator_ng.contract.model import BakeFacts, Distro, Image, ManifestEntry, PackageInfo
from aminator_ng.contract.plugins import load_plugins
from aminator_ng.contract.settings import EngineSettings
from aminator_ng.errors import ConfigError

BUILTINS = {"local", "debian", "tagging"}


def normalised(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def make_facts() -> BakeFacts:
    return BakeFacts(
        bake_id="0123456789abcdef",
        started=datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC),
        base=Image("img-0123456789ab", "debian-12", datetime(2026, 1, 1, tzinfo=UTC), "snap-1"),
        packages=(PackageInfo("hello", "1.0", "1", "all"),),
        manifest=(ManifestEntry("hello", "1.0-1", "all", "hello", "1.0-1"),),
        distro=Distro("debian", "debian", "12", "Debian GNU/Linux 12 (bookworm)", "deb"),
        name_template=None,
        suffix=None,
        extra_tags={},
        engine_version="0.0.0",
    )


class MyFinalizer:
    """A third party's finalizer, registered in-process."""

    @hookimpl
    def aminator_image_name(self, facts: BakeFacts) -> str | None:
        return f"mine-{facts.packages[0].name}"

    @hookimpl
    def aminator_image_tags(self, facts: BakeFacts) -> Mapping[str, str] | None:
        return {"creator": "my-team", "cost_center": "42"}


class Abstaining:
    @hookimpl
    def aminator_image_name(self, facts: BakeFacts) -> str | None:
        return None


class Misspelt:
    @hookimpl
    def aminator_image_nmae(self, facts: BakeFacts) -> str | None:
        return "never"


def test_builtins_load_from_the_aminator_ng_distribution() -> None:
    hooks = load_plugins(environ={})
    infos = {info.name: info for info in hooks.loaded.infos}
    assert set(infos) >= BUILTINS
    for name in BUILTINS:
        assert normalised(infos[name].distribution) == "aminator-ng"
        assert infos[name].builtin
        assert infos[name].hooks
    assert hooks.loaded.failures == []
    assert hooks.loaded.disabled == []
    assert "aminator_cloud_backend" in infos["local"].hooks
    assert "aminator_image_name" in infos["tagging"].hooks


def test_builtins_answer(tmp_path: Path) -> None:
    hooks = load_plugins(environ={})
    assert hooks.cloud_backend("local", EngineSettings(home=tmp_path)).name == "local"
    assert hooks.image_name(make_facts()) == "hello-1.0-1-all-20260304050607-0123"
    assert hooks.detect_distro({"ID": "ubuntu"}, tmp_path, EngineSettings()) is not None
    assert hooks.detect_distro({"ID": "arch"}, tmp_path, EngineSettings()) is None
    (tmp_path / "usr/bin").mkdir(parents=True)
    (tmp_path / "usr/bin/dnf").write_text("#!/bin/sh\n")
    fedora = hooks.detect_distro({"ID": "fedora"}, tmp_path, EngineSettings())
    assert fedora is not None and fedora.family == "redhat"


def test_an_unknown_cloud_is_a_config_error(tmp_path: Path) -> None:
    hooks = load_plugins(environ={})
    with pytest.raises(ConfigError, match="no-such-cloud") as raised:
        hooks.cloud_backend("no-such-cloud", EngineSettings(home=tmp_path))
    assert raised.value.exit_code == 2


def test_a_disabled_plugin_is_left_out_and_listed(make_deb: Callable[..., Path]) -> None:
    deb = make_deb("hello", "1.0-1")
    assert load_plugins(environ={}).read_package_file(deb) is not None

    hooks = load_plugins(environ={"AMINATOR_DISABLE_PLUGINS": "debian"})
    names = {info.name for info in hooks.loaded.infos}
    assert "debian" not in names
    assert names >= {"local", "tagging"}
    assert hooks.loaded.disabled == ["debian"]
    assert hooks.read_package_file(deb) is None
    assert hooks.detect_distro({"ID": "debian"}, deb.parent, EngineSettings()) is None


def test_several_plugins_can_be_disabled() -> None:
    hooks = load_plugins(environ={"AMINATOR_DISABLE_PLUGINS": " debian , tagging "})
    assert sorted(hooks.loaded.disabled) == ["debian", "tagging"]
    assert hooks.image_name(make_facts()) is None


def test_an_extra_plugin_names_the_image_first() -> None:
    hooks = load_plugins(extra=[("mine", MyFinalizer())], environ={})
    assert hooks.image_name(make_facts()) == "mine-hello"
    assert "mine" in {info.name for info in hooks.loaded.infos}


def test_an_extra_plugin_that_abstains_leaves_the_name_to_the_builtin() -> None:
    hooks = load_plugins(extra=[("quiet", Abstaining())], environ={})
    assert hooks.image_name(make_facts()) == "hello-1.0-1-all-20260304050607-0123"


def test_a_later_plugins_tags_override_the_builtins() -> None:
    builtin = load_plugins(environ={}).image_tags(make_facts())
    merged = load_plugins(extra=[("mine", MyFinalizer())], environ={}).image_tags(make_facts())
    assert builtin["creator"] != "my-team"
    assert merged["creator"] == "my-team"
    assert merged["cost_center"] == "42"
    # Every other built-in tag is still there.
    assert {k: v for k, v in merged.items() if k not in ("creator", "cost_center")} == {
        k: v for k, v in builtin.items() if k != "creator"
    }


def test_a_misspelt_hook_fails_loudly() -> None:
    with pytest.raises(pluggy.PluginValidationError, match="aminator_image_nmae"):
        load_plugins(extra=[("typo", Misspelt())], environ={})
