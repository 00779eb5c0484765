"""Configuration: files, environments, ``AMINATOR_*`` variables and flags, in that order.

Every layer is redirected to the test's own files: /etc by patching ``SYSTEM_CONFIG``, ~ by
pointing ``HOME`` at a temporary directory (with ``XDG_CONFIG_HOME`` unset), ``--config`` and
``AMINATOR_CONFIG`` at other temporary files. Each layer is checked twice: through ``resolve``
with the built-in plugins' declarations, and through ``aminate`` in-process, where the user
sees it (``config show --output json``, the bake's request and settings, ``bake --help``).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from aminator_ng.commands import cli, setting_options
from aminator_ng.commands import config as config_module
from aminator_ng.commands.config import (
    ENVIRONMENT_SETTINGS,
    GLOBAL_SETTINGS,
    EffectiveConfig,
    Flags,
    engine_settings,
    read_config_files,
    resolve,
)
from aminator_ng.contract import settings as settings_module
from aminator_ng.contract.hookspecs import hookimpl
from aminator_ng.contract.plugins import load_plugins
from aminator_ng.contract.request import BAKE_SETTINGS
from aminator_ng.contract.settings import Declarations, EngineSettings, Setting
from aminator_ng.errors import ConfigError
from aminator_ng.pipeline.bake import Bake, BakeResult
from tests.unit.cli_runs import Aminate, Outcome, assert_request_error

REPO = Path(__file__).resolve().parents[2]
CONFIGURATION_DOC = REPO / "docs" / "configuration.md"


@dataclass
class Layers:
    """The test's own files for every layer, and its own store and log directory."""

    root: Path
    home: Path  # $HOME
    system: Path  # stands for /etc/aminator-ng/config.toml
    user: Path  # ~/.config/aminator-ng/config.toml
    explicit: Path  # the file of --config
    variable: Path  # the file of AMINATOR_CONFIG
    store: Path
    logs: Path

    def write(self, path: Path, text: str) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path

    def environ(self, **variables: str) -> dict[str, str]:
        return {"HOME": str(self.home), **variables}


@pytest.fixture
def layers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Layers:
    home = tmp_path / "home"
    home.mkdir()
    found = Layers(
        root=tmp_path,
        home=home,
        system=tmp_path / "etc" / "aminator-ng" / "config.toml",
        user=home / ".config" / "aminator-ng" / "config.toml",
        explicit=tmp_path / "explicit.toml",
        variable=tmp_path / "variable.toml",
        store=tmp_path / "store",
        logs=tmp_path / "logs",
    )
    monkeypatch.setattr(config_module, "SYSTEM_CONFIG", found.system)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    monkeypatch.chdir(tmp_path)
    return found


@pytest.fixture(scope="module")
def declarations() -> Declarations:
    """The built-in plugins' declared settings (debian, tagging; local declares none)."""
    return load_plugins(environ={}).setting_declarations()


def effective(
    layers: Layers,
    declarations: Declarations,
    *,
    flags: Flags | None = None,
    explicit: Path | None = None,
    variables: Mapping[str, str] | None = None,
    **more_variables: str,
) -> EffectiveConfig:
    """What ``resolve`` makes of the layers, as the CLI calls it, with these variables set."""
    environ = layers.environ(**(variables or {}), **more_variables)
    files = read_config_files(explicit, environ)
    return resolve(files, declarations, flags or Flags(), environ)


def sourced(config: EffectiveConfig, section: str, key: str) -> tuple[Any, str]:
    entry = config.values[section][key]
    return entry.value, entry.source


@pytest.fixture
def aminate(
    layers: Layers, capsys: pytest.CaptureFixture[str], restore_root_logging: None
) -> Aminate:
    def invoke(*argv: str) -> Outcome:
        capsys.readouterr()
        with pytest.raises(SystemExit) as exited:
            cli.main(list(argv))
        out, err = capsys.readouterr()
        return Outcome(exited.value.code, out, err)

    return invoke


def shown(outcome: Outcome) -> dict[str, tuple[Any, str]]:
    """``config show --output json``'s rows: key -> (value, source)."""
    assert outcome.code == 0, outcome.stderr
    return {row["key"]: (row["value"], row["source"]) for row in outcome.json()["settings"]}


def show(aminate: Aminate, *argv: str) -> dict[str, tuple[Any, str]]:
    return shown(aminate(*argv, "config", "show", "--output", "json"))


@dataclass
class BakeSeen:
    """What ``aminate bake`` handed to the bake, which stopped before acquiring anything."""

    runner: Bake | None = None


STOPPED = "stopped by the test before anything is acquired"


@pytest.fixture
def bake_seen(monkeypatch: pytest.MonkeyPatch) -> BakeSeen:
    seen = BakeSeen()

    class StoppedBake(Bake):
        def run(self) -> BakeResult:
            seen.runner = self
            raise ConfigError(STOPPED)

        def plan(self) -> dict[str, object]:  # --dry-run
            seen.runner = self
            raise ConfigError(STOPPED)

    monkeypatch.setattr(cli, "Bake", StoppedBake)
    return seen


def bake_until_stopped(aminate: Aminate, seen: BakeSeen, *argv: str) -> Bake:
    outcome = aminate("bake", *argv, "./hello.deb")
    assert_request_error(outcome, STOPPED)
    assert seen.runner is not None
    return seen.runner


# Each layer overrides the one below it

LAYERS = ("system", "user", "explicit", "environment", "variable", "flag")


def stack_layers(
    layers: Layers, top: int, table: str, key: str, variable: str
) -> tuple[list[str], dict[str, str], str, str]:
    """Set ``[table] key`` to ``LAYER-value`` in every layer up to LAYERS[top] (below the flag).

    The environment is defined in the system file, the lowest, to show that a chosen
    environment beats every file wherever it is defined. Returns the global options to
    pass, the variables to set, and the winning value and source."""
    texts: dict[Path, str] = {layers.system: "", layers.user: "", layers.explicit: ""}
    argv: list[str] = []
    variables: dict[str, str] = {}
    for layer in LAYERS[: top + 1]:
        if layer in ("system", "user", "explicit"):
            path = getattr(layers, layer)
            texts[path] += f'[{table}]\n{key} = "{layer}-value"\n'
        elif layer == "environment":
            section = (
                "environments.stacked" if table == "global" else f"environments.stacked.{table}"
            )
            texts[layers.system] += f'[{section}]\n{key} = "{layer}-value"\n'
            argv += ["-e", "stacked"]
        elif layer == "variable":
            variables[variable] = "variable-value"
    for path, text in texts.items():
        if text:
            layers.write(path, text)
    if top >= LAYERS.index("explicit"):
        argv += ["--config", str(layers.explicit)]
    winner = LAYERS[top]
    source = {
        "system": str(layers.system),
        "user": str(layers.user),
        "explicit": str(layers.explicit),
        "environment": f"{layers.system} [environments.stacked]",
        "variable": variable,
    }[winner]
    return argv, variables, f"{winner}-value", source


@pytest.mark.parametrize("top", range(LAYERS.index("variable") + 1), ids=LAYERS[:-1])
def test_each_layer_overrides_the_one_below_for_a_global_key(
    layers: Layers,
    aminate: Aminate,
    monkeypatch: pytest.MonkeyPatch,
    declarations: Declarations,
    top: int,
) -> None:
    # [global] cloud: config show never constructs the backend, so any name will do.
    argv, variables, value, source = stack_layers(layers, top, "global", "cloud", "AMINATOR_CLOUD")
    for name, text in variables.items():
        monkeypatch.setenv(name, text)
    assert show(aminate, *argv)["global.cloud"] == (value, source)

    explicit = layers.explicit if "--config" in argv else None
    flags = Flags(global_={"environment": "stacked"} if "-e" in argv else {})
    config = effective(layers, declarations, flags=flags, explicit=explicit, variables=variables)
    assert sourced(config, "global", "cloud") == (value, source)


def test_the_cloud_flag_overrides_every_layer(
    layers: Layers, aminate: Aminate, monkeypatch: pytest.MonkeyPatch, declarations: Declarations
) -> None:
    argv, variables, _, _ = stack_layers(
        layers, LAYERS.index("variable"), "global", "cloud", "AMINATOR_CLOUD"
    )
    monkeypatch.setenv("AMINATOR_CLOUD", variables["AMINATOR_CLOUD"])
    assert show(aminate, *argv, "--cloud", "flag-value")["global.cloud"] == (
        "flag-value",
        "--cloud",
    )

    flags = Flags(global_={"environment": "stacked", "cloud": "flag-value"})
    config = effective(
        layers, declarations, flags=flags, explicit=layers.explicit, variables=variables
    )
    assert sourced(config, "global", "cloud") == ("flag-value", "--cloud")


def test_defaults_when_no_layer_sets_anything(
    layers: Layers, aminate: Aminate, declarations: Declarations
) -> None:
    rows = show(aminate)
    assert rows["global.cloud"] == ("local", "default")
    assert rows["global.home"] == ("/var/lib/aminator-ng", "default")
    assert rows["global.log_dir"] == ("/var/log/aminator-ng", "default")
    assert rows["bake.suffix"] == (None, "default")
    assert rows["bake.preserve_on_error"] == (False, "default")
    assert rows["environment.finalizers"] == (None, "default")
    assert rows["plugins.debian.install_recommends"] == (True, "default")
    assert rows["plugins.tagging.creator"] == (None, "default")
    assert not any(key.startswith("bake.tags.") for key in rows)

    data = aminate("config", "show", "--output", "json").json()
    assert data["files"] == []
    assert data["environment"] is None

    config = effective(layers, declarations)
    assert config.files == ()
    assert config.environment is None
    assert sourced(config, "bake", "tags") == ({}, "merged")


@pytest.mark.parametrize("top", range(LAYERS.index("variable") + 1), ids=LAYERS[:-1])
def test_each_layer_overrides_the_one_below_for_a_bake_key(
    layers: Layers,
    aminate: Aminate,
    monkeypatch: pytest.MonkeyPatch,
    declarations: Declarations,
    top: int,
) -> None:
    argv, variables, value, source = stack_layers(
        layers, top, "bake", "suffix", "AMINATOR_BAKE_SUFFIX"
    )
    for name, text in variables.items():
        monkeypatch.setenv(name, text)
    assert show(aminate, *argv)["bake.suffix"] == (value, source)

    explicit = layers.explicit if "--config" in argv else None
    flags = Flags(global_={"environment": "stacked"} if "-e" in argv else {})
    config = effective(layers, declarations, flags=flags, explicit=explicit, variables=variables)
    assert sourced(config, "bake", "suffix") == (value, source)


def test_the_suffix_flag_overrides_every_layer(
    layers: Layers,
    aminate: Aminate,
    monkeypatch: pytest.MonkeyPatch,
    declarations: Declarations,
    bake_seen: BakeSeen,
) -> None:
    argv, variables, _, _ = stack_layers(
        layers, LAYERS.index("variable"), "bake", "suffix", "AMINATOR_BAKE_SUFFIX"
    )
    monkeypatch.setenv("AMINATOR_BAKE_SUFFIX", variables["AMINATOR_BAKE_SUFFIX"])
    monkeypatch.setenv("AMINATOR_HOME", str(layers.store))
    monkeypatch.setenv("AMINATOR_LOG_DIR", str(layers.logs))

    runner = bake_until_stopped(aminate, bake_seen, *argv, "-b", "base", "-s", "flag-value")
    assert runner.request.suffix == "flag-value"

    without_flag = bake_until_stopped(aminate, bake_seen, *argv, "-b", "base")
    assert without_flag.request.suffix == "variable-value"

    flags = Flags(global_={"environment": "stacked"}, bake={"suffix": "flag-value"})
    config = effective(
        layers, declarations, flags=flags, explicit=layers.explicit, variables=variables
    )
    assert sourced(config, "bake", "suffix") == ("flag-value", "--suffix")


def test_keys_may_be_written_with_hyphens_or_underscores(
    layers: Layers, aminate: Aminate, declarations: Declarations
) -> None:
    layers.write(
        layers.system,
        f'[global]\nlog-dir = "{layers.logs}"\n[bake]\npreserve-on-error = true\nbase-ami = "b"\n'
        "[plugins.debian]\ninstall-recommends = false\n",
    )
    rows = show(aminate)
    assert rows["global.log_dir"] == (str(layers.logs), str(layers.system))
    assert rows["bake.preserve_on_error"] == (True, str(layers.system))
    assert rows["bake.base_ami"] == ("b", str(layers.system))
    assert rows["plugins.debian.install_recommends"] == (False, str(layers.system))

    config = effective(layers, declarations)
    assert sourced(config, "global", "log_dir") == (layers.logs, str(layers.system))


# Tags merge key by key


def write_tag_layers(layers: Layers) -> None:
    """Tag ``a`` is set in the system file only, ``b`` up to the user file, ``c`` up to the
    explicit file, ``d`` up to the environment, ``e`` up to AMINATOR_BAKE_TAGS and ``f`` in
    every layer, --tag included; each layer writes its own name as the value."""
    layers.write(
        layers.system,
        '[bake.tags]\na = "system"\nb = "system"\nc = "system"\nd = "system"\ne = "system"\n'
        'f = "system"\n'
        '[environments.tagged.bake]\ntags = { d = "environment", e = "environment", '
        'f = "environment" }\n',
    )
    layers.write(
        layers.user,
        '[bake]\ntags = { b = "user", c = "user", d = "user", e = "user", f = "user" }\n',
    )
    layers.write(
        layers.explicit,
        '[bake]\ntags = { c = "explicit", d = "explicit", e = "explicit", f = "explicit" }\n',
    )


TAG_VARIABLE = "e=variable,f=variable"


def expected_tags(layers: Layers) -> dict[str, tuple[str, str]]:
    return {
        "a": ("system", str(layers.system)),
        "b": ("user", str(layers.user)),
        "c": ("explicit", str(layers.explicit)),
        "d": ("environment", f"{layers.system} [environments.tagged]"),
        "e": ("variable", "AMINATOR_BAKE_TAGS"),
    }


def test_tags_merge_key_by_key_across_every_layer(
    layers: Layers, declarations: Declarations
) -> None:
    write_tag_layers(layers)
    flags = Flags(global_={"environment": "tagged"}, bake={"tags": {"f": "flag"}})
    config = effective(
        layers, declarations, flags=flags, explicit=layers.explicit, AMINATOR_BAKE_TAGS=TAG_VARIABLE
    )
    merged = {key: (s.value, s.source) for key, s in config.tags.items()}
    assert merged.pop("f")[0] == "flag"  # its source: see the xfail test below
    assert merged == expected_tags(layers)
    assert config.section("bake")["tags"] == {
        **{key: value for key, (value, _) in expected_tags(layers).items()},
        "f": "flag",
    }


def test_a_tag_flag_is_named_as_the_option_it_came_from(
    layers: Layers, declarations: Declarations
) -> None:
    config = effective(layers, declarations, flags=Flags(bake={"tags": {"f": "flag"}}))
    assert config.tags["f"].source == "--tag"


def test_tags_merge_key_by_key_in_config_show(
    layers: Layers, aminate: Aminate, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_tag_layers(layers)
    monkeypatch.setenv("AMINATOR_BAKE_TAGS", TAG_VARIABLE)
    rows = show(aminate, "--config", str(layers.explicit), "-e", "tagged")
    tags = {key.removeprefix("bake.tags."): row for key, row in rows.items() if "tags" in key}
    assert tags == {**expected_tags(layers), "f": ("variable", "AMINATOR_BAKE_TAGS")}


def test_tag_flags_override_only_their_own_keys_in_the_bake(
    layers: Layers, aminate: Aminate, monkeypatch: pytest.MonkeyPatch, bake_seen: BakeSeen
) -> None:
    write_tag_layers(layers)
    monkeypatch.setenv("AMINATOR_BAKE_TAGS", TAG_VARIABLE)
    monkeypatch.setenv("AMINATOR_HOME", str(layers.store))
    monkeypatch.setenv("AMINATOR_LOG_DIR", str(layers.logs))
    runner = bake_until_stopped(
        aminate,
        bake_seen,
        "--config",
        str(layers.explicit),
        "-e",
        "tagged",
        "-b",
        "base",
        "--tag",
        "f=flag",
        "--tag",
        "g=only-a-flag",
    )
    assert dict(runner.request.tags) == {
        "a": "system",
        "b": "user",
        "c": "explicit",
        "d": "environment",
        "e": "variable",
        "f": "flag",
        "g": "only-a-flag",
    }


def test_tag_values_that_are_numbers_or_booleans_become_text(
    layers: Layers, declarations: Declarations
) -> None:
    layers.write(layers.system, "[bake.tags]\ncount = 3\nratio = 1.5\nlive = true\n")
    config = effective(layers, declarations)
    assert config.section("bake")["tags"] == {"count": "3", "ratio": "1.5", "live": "true"}


# Plugin settings


def test_a_plugin_setting_from_each_layer(
    layers: Layers, aminate: Aminate, monkeypatch: pytest.MonkeyPatch, declarations: Declarations
) -> None:
    source = str(layers.system)
    layers.write(layers.system, "[plugins.debian]\ninstall_recommends = false\n")
    assert show(aminate)["plugins.debian.install_recommends"] == (False, source)
    config = effective(layers, declarations)
    assert sourced(config, "plugins.debian", "install_recommends") == (False, source)
    assert engine_settings(config).plugin("debian") == {"install_recommends": False}

    monkeypatch.setenv("AMINATOR_DEBIAN_INSTALL_RECOMMENDS", "yes")
    rows = show(aminate)
    assert rows["plugins.debian.install_recommends"] == (True, "AMINATOR_DEBIAN_INSTALL_RECOMMENDS")
    config = effective(layers, declarations, AMINATOR_DEBIAN_INSTALL_RECOMMENDS="yes")
    assert sourced(config, "plugins.debian", "install_recommends") == (
        True,
        "AMINATOR_DEBIAN_INSTALL_RECOMMENDS",
    )

    flags = Flags(plugins={"debian": {"install_recommends": False}})
    config = effective(layers, declarations, flags=flags, AMINATOR_DEBIAN_INSTALL_RECOMMENDS="yes")
    assert sourced(config, "plugins.debian", "install_recommends") == (
        False,
        "--no-install-recommends",
    )


@pytest.mark.parametrize(
    ("flag", "expected"), [("--no-install-recommends", False), ("--install-recommends", True)]
)
def test_a_plugin_flag_overrides_the_variable_and_the_files_in_the_bake(
    layers: Layers,
    aminate: Aminate,
    monkeypatch: pytest.MonkeyPatch,
    bake_seen: BakeSeen,
    flag: str,
    expected: bool,
) -> None:
    opposite = "false" if expected else "true"
    layers.write(
        layers.system,
        f'[global]\nhome = "{layers.store}"\nlog_dir = "{layers.logs}"\n'
        f"[plugins.debian]\ninstall_recommends = {opposite}\n",
    )
    monkeypatch.setenv("AMINATOR_DEBIAN_INSTALL_RECOMMENDS", opposite)
    runner = bake_until_stopped(aminate, bake_seen, "-b", "base", flag)
    assert runner.settings.plugin("debian")["install_recommends"] is expected
    assert runner.settings.home == layers.store

    # Without the flag, the variable decides.
    runner = bake_until_stopped(aminate, bake_seen, "-b", "base")
    assert runner.settings.plugin("debian")["install_recommends"] is (not expected)


def test_plugin_settings_of_an_environment(
    layers: Layers, aminate: Aminate, declarations: Declarations
) -> None:
    layers.write(
        layers.system,
        '[plugins.tagging]\ncreator = "system"\n'
        '[environments.prod.plugins.tagging]\ncreator = "prod"\n',
    )
    layers.write(layers.user, '[plugins.tagging]\ncreator = "user"\n')
    assert show(aminate)["plugins.tagging.creator"] == ("user", str(layers.user))
    assert show(aminate, "-e", "prod")["plugins.tagging.creator"] == (
        "prod",
        f"{layers.system} [environments.prod]",
    )
    config = effective(layers, declarations, flags=Flags(global_={"environment": "prod"}))
    assert engine_settings(config).plugin("tagging") == {"creator": "prod"}
    assert engine_settings(config).plugin("local") == {}


def test_engine_settings_carry_every_plugins_settings_with_defaults(
    layers: Layers, declarations: Declarations
) -> None:
    settings = engine_settings(effective(layers, declarations))
    assert settings.plugin("debian") == {"install_recommends": True}
    assert settings.plugin("tagging") == {"creator": None}
    assert settings.plugin("no-such-plugin") == {}


# Environments


def test_a_chosen_environment_overrides_files_but_not_variables_or_flags(
    layers: Layers, aminate: Aminate, monkeypatch: pytest.MonkeyPatch, declarations: Declarations
) -> None:
    layers.write(
        layers.system,
        '[environments.prod]\ncloud = "env-cloud"\n'
        '[environments.prod.bake]\nsuffix = "env"\nname = "env-{name}"\n',
    )
    layers.write(
        layers.explicit,
        '[global]\ncloud = "file-cloud"\n[bake]\nsuffix = "file"\nname = "file-{name}"\n',
    )
    in_env = f"{layers.system} [environments.prod]"
    rows = show(aminate, "--config", str(layers.explicit))
    assert rows["bake.suffix"] == ("file", str(layers.explicit))

    monkeypatch.setenv("AMINATOR_BAKE_SUFFIX", "variable")
    rows = show(aminate, "--config", str(layers.explicit), "-e", "prod", "--cloud", "flag-cloud")
    assert rows["bake.name"] == ("env-{name}", in_env)
    assert rows["bake.suffix"] == ("variable", "AMINATOR_BAKE_SUFFIX")
    assert rows["global.cloud"] == ("flag-cloud", "--cloud")
    assert rows["environment.cloud"] == ("env-cloud", in_env)

    monkeypatch.setenv("AMINATOR_CLOUD", "variable-cloud")
    rows = show(aminate, "--config", str(layers.explicit), "-e", "prod")
    assert rows["global.cloud"] == ("variable-cloud", "AMINATOR_CLOUD")

    config = effective(
        layers,
        declarations,
        flags=Flags(global_={"environment": "prod"}),
        explicit=layers.explicit,
    )
    assert sourced(config, "bake", "name") == ("env-{name}", in_env)
    assert sourced(config, "global", "cloud") == ("env-cloud", in_env)


def test_an_environment_defined_in_several_files_merges_them_in_order(
    layers: Layers, declarations: Declarations
) -> None:
    layers.write(
        layers.system,
        '[environments.prod]\nprovisioner = "debian"\nfinalizers = ["tagging"]\n'
        '[environments.prod.bake]\nsuffix = "system"\nname = "system"\n',
    )
    layers.write(layers.user, '[environments.prod.bake]\nsuffix = "user"\n')
    config = effective(layers, declarations, flags=Flags(global_={"environment": "prod"}))
    assert sourced(config, "bake", "suffix") == ("user", f"{layers.user} [environments.prod]")
    assert sourced(config, "bake", "name") == ("system", f"{layers.system} [environments.prod]")
    settings = engine_settings(config)
    assert settings.environment == "prod"
    assert settings.provisioner == "debian"
    assert settings.finalizers == ("tagging",)
    assert settings.distro is None


def test_the_global_environment_key_chooses_the_default_environment(
    layers: Layers, aminate: Aminate, monkeypatch: pytest.MonkeyPatch, declarations: Declarations
) -> None:
    layers.write(
        layers.system,
        '[global]\nenvironment = "dev"\n'
        '[environments.dev.bake]\nsuffix = "dev"\n'
        '[environments.ci.bake]\nsuffix = "ci"\n'
        '[environments.prod.bake]\nsuffix = "prod"\n',
    )
    outcome = aminate("config", "show", "--output", "json")
    assert outcome.json()["environment"] == "dev"
    assert shown(outcome)["bake.suffix"] == ("dev", f"{layers.system} [environments.dev]")
    assert shown(outcome)["global.environment"] == ("dev", str(layers.system))

    # AMINATOR_ENVIRONMENT beats the file; -e beats both.
    monkeypatch.setenv("AMINATOR_ENVIRONMENT", "ci")
    assert aminate("config", "show", "--output", "json").json()["environment"] == "ci"
    assert show(aminate)["bake.suffix"] == ("ci", f"{layers.system} [environments.ci]")
    assert aminate("-e", "prod", "config", "show", "--output", "json").json()["environment"] == (
        "prod"
    )

    assert effective(layers, declarations).environment == "dev"
    assert effective(layers, declarations, AMINATOR_ENVIRONMENT="ci").environment == "ci"
    flags = Flags(global_={"environment": "prod"})
    assert effective(layers, declarations, flags=flags, AMINATOR_ENVIRONMENT="ci").environment == (
        "prod"
    )


def test_an_environment_chooses_distro_provisioner_and_finalizers(
    layers: Layers, aminate: Aminate
) -> None:
    layers.write(
        layers.user,
        '[environments.prod]\ndistro = "debian"\nprovisioner = "debian"\n'
        'finalizers = ["tagging", "local"]\n',
    )
    rows = show(aminate, "--environment", "prod")
    source = f"{layers.user} [environments.prod]"
    assert rows["environment.distro"] == ("debian", source)
    assert rows["environment.provisioner"] == ("debian", source)
    assert rows["environment.finalizers"] == (["tagging", "local"], source)


@pytest.mark.parametrize(
    "argv",
    [("-e", "stage", "config", "show"), ("config", "show", "--environment", "stage")],
)
def test_an_unknown_environment_is_named_with_the_defined_ones(
    layers: Layers, aminate: Aminate, declarations: Declarations, argv: tuple[str, ...]
) -> None:
    layers.write(layers.system, "[environments.prod]\n")
    layers.write(layers.user, "[environments.dev]\n")
    outcome = aminate(*argv)
    assert_request_error(outcome, "unknown environment 'stage'", "-e")
    assert "hint: defined: dev, prod" in outcome.stderr
    assert str(layers.user) in outcome.stderr

    with pytest.raises(ConfigError) as raised:
        effective(layers, declarations, flags=Flags(global_={"environment": "stage"}))
    assert "stage" in raised.value.message
    assert raised.value.hint is not None and "defined: dev, prod" in raised.value.hint


def test_an_unknown_default_environment_names_the_file_that_chose_it(
    layers: Layers, aminate: Aminate, monkeypatch: pytest.MonkeyPatch
) -> None:
    layers.write(layers.system, '[global]\nenvironment = "gone"\n')
    outcome = aminate("config", "show")
    assert_request_error(outcome, "unknown environment 'gone'", str(layers.system))
    assert "defined: none" in outcome.stderr

    monkeypatch.setenv("AMINATOR_ENVIRONMENT", "also-gone")
    assert_request_error(aminate("images"), "also-gone", "AMINATOR_ENVIRONMENT")


@pytest.mark.parametrize(
    ("key", "value"),
    [("distro", '"rpm"'), ("provisioner", '"rpm"'), ("finalizers", '["tagging", "gce"]')],
)
def test_an_environment_naming_a_plugin_that_is_not_loaded_fails_at_startup(
    layers: Layers,
    aminate: Aminate,
    declarations: Declarations,
    key: str,
    value: str,
) -> None:
    layers.write(layers.system, f"[environments.prod]\n{key} = {value}\n")
    missing = "gce" if key == "finalizers" else "rpm"
    for argv in (("config", "show"), ("images",)):
        outcome = aminate("-e", "prod", *argv)
        assert_request_error(outcome, f"environment prod: {key}", missing, "not loaded")
        assert "aminate plugins" in outcome.stderr

    # Not chosen, the environment is harmless.
    assert aminate("config", "show").code == 0

    hooks = load_plugins(environ={})
    config = effective(layers, declarations, flags=Flags(global_={"environment": "prod"}))
    with pytest.raises(ConfigError, match=missing):
        hooks.check_environment(engine_settings(config))


def test_an_environment_naming_a_disabled_plugin_fails_at_startup(
    layers: Layers, aminate: Aminate, monkeypatch: pytest.MonkeyPatch
) -> None:
    layers.write(layers.system, '[environments.prod]\nfinalizers = ["tagging"]\n')
    assert aminate("-e", "prod", "config", "show").code == 0
    monkeypatch.setenv("AMINATOR_DISABLE_PLUGINS", "tagging")
    assert_request_error(aminate("-e", "prod", "config", "show"), "not loaded", "tagging")


def test_an_environment_chooses_the_cloud_of_every_command(
    layers: Layers, aminate: Aminate
) -> None:
    layers.write(layers.system, '[environments.elsewhere]\ncloud = "no-such-cloud"\n')
    assert_request_error(aminate("-e", "elsewhere", "images"), "unknown cloud backend")


# Which files are read


def test_config_beats_aminator_config(
    layers: Layers, aminate: Aminate, monkeypatch: pytest.MonkeyPatch, declarations: Declarations
) -> None:
    layers.write(layers.explicit, '[bake]\nsuffix = "explicit"\n')
    layers.write(layers.variable, '[bake]\nsuffix = "variable-file"\nname = "only-here"\n')
    monkeypatch.setenv("AMINATOR_CONFIG", str(layers.variable))

    outcome = aminate("config", "show", "--output", "json")
    assert outcome.json()["files"] == [str(layers.variable)]
    assert shown(outcome)["bake.suffix"] == ("variable-file", str(layers.variable))

    outcome = aminate("--config", str(layers.explicit), "config", "show", "--output", "json")
    assert outcome.json()["files"] == [str(layers.explicit)]  # AMINATOR_CONFIG's is not read
    assert shown(outcome)["bake.suffix"] == ("explicit", str(layers.explicit))
    assert shown(outcome)["bake.name"] == (None, "default")

    environ = layers.environ(AMINATOR_CONFIG=str(layers.variable))
    assert [f.path for f in read_config_files(layers.explicit, environ)] == [layers.explicit]
    assert [f.path for f in read_config_files(None, environ)] == [layers.variable]


def test_files_are_read_system_user_explicit(layers: Layers, aminate: Aminate) -> None:
    for path in (layers.system, layers.user, layers.explicit):
        layers.write(path, "")
    outcome = aminate("config", "show", "--config", str(layers.explicit), "--output", "json")
    assert outcome.json()["files"] == [str(layers.system), str(layers.user), str(layers.explicit)]


def test_the_user_file_follows_xdg_config_home(
    layers: Layers, aminate: Aminate, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = layers.root / "xdg" / "aminator-ng" / "config.toml"
    layers.write(elsewhere, '[bake]\nsuffix = "xdg"\n')
    layers.write(layers.user, '[bake]\nsuffix = "home"\n')
    assert show(aminate)["bake.suffix"] == ("home", str(layers.user))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(layers.root / "xdg"))
    assert show(aminate)["bake.suffix"] == ("xdg", str(elsewhere))


@pytest.mark.parametrize("how", ["flag", "variable"])
def test_a_missing_explicit_config_file_is_a_request_error(
    layers: Layers, aminate: Aminate, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    missing = layers.root / "missing.toml"
    if how == "flag":
        outcome = aminate("--config", str(missing), "config", "show")
    else:
        monkeypatch.setenv("AMINATOR_CONFIG", str(missing))
        outcome = aminate("config", "show")
    assert_request_error(outcome, "config file not found", str(missing))


def test_missing_system_and_user_files_are_skipped(layers: Layers, aminate: Aminate) -> None:
    layers.user.parent.mkdir(parents=True)  # the directory, but no file
    assert aminate("config", "show").code == 0


# Mistakes in files: exit 2, naming the file, the table and the key


@pytest.mark.parametrize("which", ["system", "user", "explicit", "variable"])
def test_invalid_toml_names_the_file(
    layers: Layers, aminate: Aminate, monkeypatch: pytest.MonkeyPatch, which: str
) -> None:
    for path in (layers.system, layers.user, layers.explicit, layers.variable):
        layers.write(path, '[bake]\nsuffix = "fine"\n')
    broken = layers.write(getattr(layers, which), "[bake\nsuffix = 1\n")
    if which == "variable":
        monkeypatch.setenv("AMINATOR_CONFIG", str(layers.variable))
        outcome = aminate("config", "show")
    else:
        outcome = aminate("--config", str(layers.explicit), "config", "show")
    assert_request_error(outcome, f"{broken}: not valid TOML", "line 1")


def test_an_unknown_top_level_table_is_named(layers: Layers, aminate: Aminate) -> None:
    layers.write(layers.user, '[bake]\nsuffix = "x"\n[globl]\ncloud = "local"\n')
    outcome = aminate("config", "show")
    assert_request_error(outcome, str(layers.user), "unknown table [globl]")
    assert "[global], [bake], [environments.NAME] and [plugins.NAME]" in outcome.stderr


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ('[bake]\nsufix = "x"\n', "[bake] sufix"),
        ('[global]\nhome_dir = "/x"\n', "[global] home_dir"),
        ('[environments.prod]\ndistros = "debian"\n', "[environments.prod] distros"),
        ('[environments.prod.bake]\nbase = "x"\n', "[environments.prod.bake] base"),
    ],
)
def test_an_unknown_key_names_the_file_and_the_key(
    layers: Layers, aminate: Aminate, declarations: Declarations, text: str, where: str
) -> None:
    layers.write(layers.system, text)
    outcome = aminate("config", "show")
    line = assert_request_error(outcome, f"{layers.system}: {where}", "unknown setting")
    assert "hint: known here:" in outcome.stderr, line

    with pytest.raises(ConfigError, match=re.escape(where)):
        effective(layers, declarations)


def test_an_unknown_bake_key_hints_at_the_known_ones(layers: Layers, aminate: Aminate) -> None:
    layers.write(layers.system, '[bake]\nsufix = "x"\n')
    outcome = aminate("config", "show")
    assert "hint: known here: base_ami, name, suffix, tags, preserve_on_error" in outcome.stderr


@pytest.mark.parametrize(
    ("text", "where", "expected"),
    [
        ("[bake]\nsuffix = 5\n", "[bake] suffix", "a string"),
        ('[bake]\npreserve_on_error = "yes"\n', "[bake] preserve_on_error", "true or false"),
        ('[bake]\ntags = "team=web"\n', "[bake] tags", "a table of strings"),
        ("[bake.tags]\nlist = [1]\n", "[bake] tags", "a table of strings"),
        ('[global]\nhome = ""\n', "[global] home", "a path"),
        (
            '[environments.prod]\nfinalizers = "tagging"\n',
            "[environments.prod] finalizers",
            "a list",
        ),
        ("[environments.prod.bake]\nsuffix = 1\n", "[environments.prod.bake] suffix", "a string"),
        (
            "[environments.prod.plugins.tagging]\ncreator = 1\n",
            "[environments.prod.plugins.tagging] creator",
            "a string",
        ),
        (
            '[plugins.debian]\ninstall_recommends = "no"\n',
            "[plugins.debian] install_recommends",
            "true or false",
        ),
    ],
)
def test_a_wrong_type_names_the_file_the_table_and_the_key(
    layers: Layers,
    aminate: Aminate,
    declarations: Declarations,
    text: str,
    where: str,
    expected: str,
) -> None:
    layers.write(layers.explicit, text)
    outcome = aminate("--config", str(layers.explicit), "config", "show")
    assert_request_error(outcome, f"{layers.explicit}: {where}", f"expected {expected}")

    with pytest.raises(ConfigError, match=re.escape(where)):
        effective(layers, declarations, explicit=layers.explicit)


@pytest.mark.parametrize("text", ["bake = 5\n", "[environments]\nprod = 5\n", "plugins = 1\n"])
def test_a_table_that_is_not_a_table_is_named(layers: Layers, aminate: Aminate, text: str) -> None:
    layers.write(layers.system, text)
    assert_request_error(aminate("config", "show"), str(layers.system), "expected a table")


def test_a_mistake_in_an_environment_not_chosen_is_found(layers: Layers, aminate: Aminate) -> None:
    layers.write(layers.system, '[environments.unused.bake]\nsufix = "x"\n')
    assert_request_error(
        aminate("config", "show"), f"{layers.system}: [environments.unused.bake] sufix"
    )


@pytest.mark.parametrize(
    ("table", "where"),
    [
        ("[plugins.debian]", "[plugins.debian]"),
        ("[environments.prod.plugins.debian]", "[environments.prod.plugins.debian]"),
    ],
)
def test_an_undeclared_plugin_key_names_the_file_and_key_and_lists_the_known_keys(
    layers: Layers, aminate: Aminate, declarations: Declarations, table: str, where: str
) -> None:
    layers.write(layers.user, f"{table}\ninstall_recommend = false\n")
    outcome = aminate("config", "show")
    assert_request_error(
        outcome, f"{layers.user}: {where} install_recommend", "plugin debian has no setting"
    )
    assert "hint: its settings: install_recommends" in outcome.stderr

    with pytest.raises(ConfigError) as raised:
        effective(layers, declarations)
    assert raised.value.hint == "its settings: install_recommends"


def test_a_key_for_a_loaded_plugin_without_settings_is_an_error(
    layers: Layers, aminate: Aminate
) -> None:
    layers.write(layers.system, '[plugins.local]\nroot = "/x"\n')
    outcome = aminate("config", "show")
    assert_request_error(outcome, f"{layers.system}: [plugins.local] root")
    assert "hint: its settings: none" in outcome.stderr


@pytest.mark.parametrize(
    "text",
    [
        '[plugins.gce]\nregion = "eu-west-1"\n',
        '[environments.prod.plugins.gce]\nregion = "eu-west-1"\n',
    ],
)
def test_a_table_for_a_plugin_that_is_not_loaded_is_warned_about_and_ignored(
    layers: Layers,
    aminate: Aminate,
    declarations: Declarations,
    caplog: pytest.LogCaptureFixture,
    text: str,
) -> None:
    layers.write(layers.system, text)
    # resolve first: aminate replaces the root logger's handlers, caplog's among them.
    with caplog.at_level(logging.WARNING, logger="aminator_ng.commands.config"):
        config = effective(layers, declarations)
    assert "plugins.gce" not in config.values
    assert "no plugin gce is loaded" in caplog.text

    outcome = aminate("config", "show", "--output", "json")
    assert outcome.code == 0, outcome.stderr
    assert f"{layers.system}: [" in outcome.stderr
    assert "no plugin gce is loaded; its settings are ignored" in outcome.stderr
    assert not any(key.startswith("plugins.gce") for key in shown(outcome))


def test_a_disabled_plugins_table_is_ignored(
    layers: Layers, aminate: Aminate, monkeypatch: pytest.MonkeyPatch
) -> None:
    layers.write(layers.system, "[plugins.debian]\ninstall_recommends = false\n")
    monkeypatch.setenv("AMINATOR_DISABLE_PLUGINS", "debian")
    outcome = aminate("config", "show", "--output", "json")
    assert "no plugin debian is loaded" in outcome.stderr
    assert "plugins.debian.install_recommends" not in shown(outcome)

    disabled = load_plugins(environ={"AMINATOR_DISABLE_PLUGINS": "debian"})
    config = effective(layers, disabled.setting_declarations())
    assert "plugins.debian" not in config.values


@pytest.mark.parametrize(
    ("text", "variables", "source"),
    [
        ('[global]\nhome = "relative/home"\n', {}, None),
        ('[global]\nlog_dir = "~/logs"\n', {}, None),
        ("", {"AMINATOR_HOME": "relative"}, "AMINATOR_HOME"),
        ("", {"AMINATOR_LOG_DIR": "logs"}, "AMINATOR_LOG_DIR"),
    ],
)
def test_a_relative_home_or_log_dir_is_a_request_error(
    layers: Layers,
    aminate: Aminate,
    monkeypatch: pytest.MonkeyPatch,
    declarations: Declarations,
    text: str,
    variables: dict[str, str],
    source: str | None,
) -> None:
    """ "~" is not expanded: it makes a relative path too."""
    layers.write(layers.system, text)
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    outcome = aminate("config", "show")
    assert_request_error(outcome, "must be an absolute path", f"(from {source or layers.system})")

    with pytest.raises(ConfigError, match="absolute"):
        effective(layers, declarations, variables=variables)


def test_an_absolute_home_from_a_variable_overrides_a_relative_one_in_a_file(
    layers: Layers, aminate: Aminate, monkeypatch: pytest.MonkeyPatch
) -> None:
    layers.write(layers.system, '[global]\nhome = "relative"\n')
    monkeypatch.setenv("AMINATOR_HOME", str(layers.store))
    assert show(aminate)["global.home"] == (str(layers.store), "AMINATOR_HOME")


# Values of variables


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1", True),
        ("true", True),
        ("Yes", True),
        (" on ", True),
        ("0", False),
        ("FALSE", False),
        ("no", False),
        ("off", False),
    ],
)
def test_bool_words_in_variables(
    layers: Layers, declarations: Declarations, text: str, expected: bool
) -> None:
    config = effective(layers, declarations, AMINATOR_BAKE_PRESERVE_ON_ERROR=text)
    assert sourced(config, "bake", "preserve_on_error") == (
        expected,
        "AMINATOR_BAKE_PRESERVE_ON_ERROR",
    )


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("AMINATOR_BAKE_PRESERVE_ON_ERROR", "maybe", "true or false"),
        ("AMINATOR_DEBIAN_INSTALL_RECOMMENDS", "2", "true or false"),
        ("AMINATOR_BAKE_TAGS", "no-equals-sign", "a table of strings"),
        ("AMINATOR_BAKE_TAGS", "=value", "a table of strings"),
    ],
)
def test_a_bad_variable_value_names_the_variable(
    layers: Layers,
    aminate: Aminate,
    monkeypatch: pytest.MonkeyPatch,
    declarations: Declarations,
    name: str,
    text: str,
    expected: str,
) -> None:
    monkeypatch.setenv(name, text)
    assert_request_error(aminate("config", "show"), name, f"expected {expected}", repr(text))
    with pytest.raises(ConfigError, match=name):
        effective(layers, declarations, variables={name: text})


def test_tag_variables_are_comma_separated_key_value_pairs(
    layers: Layers, declarations: Declarations
) -> None:
    config = effective(layers, declarations, AMINATOR_BAKE_TAGS="team=web, stage=ci,,empty=")
    assert config.section("bake")["tags"] == {"team": "web", "stage": "ci", "empty": ""}


def test_an_empty_variable_counts_as_not_set(layers: Layers, declarations: Declarations) -> None:
    layers.write(layers.system, '[bake]\nsuffix = "file"\n')
    config = effective(layers, declarations, AMINATOR_BAKE_SUFFIX="", AMINATOR_ENVIRONMENT="")
    assert sourced(config, "bake", "suffix") == ("file", str(layers.system))
    assert config.environment is None


def test_variable_values_of_every_type() -> None:
    assert Setting("n", int).parse("42", "AMINATOR_X_N") == 42
    assert Setting("r", float).parse("1.5", "AMINATOR_X_R") == 1.5
    assert Setting("p", Path).parse("/srv/x", "AMINATOR_X_P") == Path("/srv/x")
    assert Setting("l", list).parse(" a, b,,c ", "AMINATOR_X_L") == ("a", "b", "c")
    assert Setting("d", dict).parse("k=v,x=1=2", "AMINATOR_X_D") == {"k": "v", "x": "1=2"}
    assert Setting("c", str, choices=("fast", "slow")).parse("fast", "AMINATOR_X_C") == "fast"
    with pytest.raises(ConfigError, match="AMINATOR_X_N: expected an integer"):
        Setting("n", int).parse("many", "AMINATOR_X_N")
    with pytest.raises(ConfigError, match="not one of fast, slow"):
        Setting("c", str, choices=("fast", "slow")).parse("medium", "AMINATOR_X_C")


def test_setting_names_and_types_are_checked() -> None:
    with pytest.raises(ValueError, match="lower_snake_case"):
        Setting("Bad-Name")
    with pytest.raises(ValueError, match="unsupported type"):
        Setting("things", set)


# Plugins that declare settings and flags


class PluginWithSettings:
    """A third-party plugin that declares settings of every kind, some as bake flags."""

    @hookimpl
    def aminator_settings(self) -> Sequence[Setting]:
        return [
            Setting("retries", int, 3, "how often to retry", flag=True),
            Setting("regions", list, (), "where to copy the image", flag=True),
            Setting("speed", str, "slow", "how fast", choices=("fast", "slow")),
            Setting("quiet_copy", bool, False, "copy without logging"),
        ]


@pytest.fixture
def with_plugin(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[object], None]]:
    """Make ``aminate`` load an in-process plugin, named ``example``, after the built-ins."""

    def register(plugin: object) -> None:
        real = load_plugins
        monkeypatch.setattr(cli, "load_plugins", lambda: real(extra=[("example", plugin)]))

    yield register
    # ``main`` gives the (module-level) bake command the plugins' flags; take the example's away.
    cli.bake.params = [
        p
        for p in cli.bake.params
        if not (isinstance(p, setting_options.SettingOption) and p.plugin == "example")
    ]


def test_a_third_party_plugins_settings_from_files_variables_and_flags(
    layers: Layers,
    aminate: Aminate,
    monkeypatch: pytest.MonkeyPatch,
    with_plugin: Callable[[object], None],
    bake_seen: BakeSeen,
) -> None:
    with_plugin(PluginWithSettings())
    layers.write(
        layers.system,
        f'[global]\nhome = "{layers.store}"\nlog_dir = "{layers.logs}"\n'
        '[plugins.example]\nretries = 5\nregions = ["eu-west-1"]\nspeed = "fast"\n',
    )
    monkeypatch.setenv("AMINATOR_EXAMPLE_QUIET_COPY", "on")
    rows = show(aminate)
    assert rows["plugins.example.retries"] == (5, str(layers.system))
    assert rows["plugins.example.regions"] == (["eu-west-1"], str(layers.system))
    assert rows["plugins.example.speed"] == ("fast", str(layers.system))
    assert rows["plugins.example.quiet_copy"] == (True, "AMINATOR_EXAMPLE_QUIET_COPY")

    runner = bake_until_stopped(
        aminate, bake_seen, "-b", "base", "--retries", "7", "--regions", "a", "--regions", "b"
    )
    assert runner.settings.plugin("example") == {
        "retries": 7,
        "regions": ("a", "b"),
        "speed": "fast",
        "quiet_copy": True,
    }


def test_a_plugin_setting_outside_its_choices_names_the_file(
    layers: Layers, aminate: Aminate, with_plugin: Callable[[object], None]
) -> None:
    with_plugin(PluginWithSettings())
    layers.write(layers.system, '[plugins.example]\nspeed = "medium"\n')
    outcome = aminate("config", "show")
    assert_request_error(outcome, f"{layers.system}: [plugins.example] speed", "not one of")


def test_bake_help_lists_the_flags_plugins_declare(
    aminate: Aminate, with_plugin: Callable[[object], None]
) -> None:
    outcome = aminate("bake", "--help")
    assert outcome.code == 0
    assert "--install-recommends / --no-install-recommends" in outcome.stdout
    assert "[plugins.debian] install_recommends" in outcome.stdout

    with_plugin(PluginWithSettings())
    outcome = aminate("bake", "--help")
    assert outcome.code == 0
    for flag in ("--retries INTEGER", "--regions TEXT", "--install-recommends"):
        assert flag in outcome.stdout
    # Settings declared without flag=True are config-only.
    assert "--speed" not in outcome.stdout
    assert "--quiet-copy" not in outcome.stdout


class PluginWithATakenFlag:
    @hookimpl
    def aminator_settings(self) -> Sequence[Setting]:
        return [Setting("suffix", str, None, "clashes with -s/--suffix", flag=True)]


def test_a_plugin_flag_that_is_taken_is_left_out_with_a_warning(
    aminate: Aminate, with_plugin: Callable[[object], None], caplog: pytest.LogCaptureFixture
) -> None:
    with_plugin(PluginWithATakenFlag())
    with caplog.at_level(logging.WARNING, logger="aminator_ng"):
        outcome = aminate("bake", "--help")
    assert outcome.code == 0
    assert "clashes with" not in outcome.stdout
    assert "bake option --suffix is taken" in caplog.text


class PluginWithAFlagNamedLikeABakeParameter:
    @hookimpl
    def aminator_settings(self) -> Sequence[Setting]:
        # "--base" is free (bake has --base-ami), but click names the option "base", like the
        # bake's own -b parameter.
        return [Setting("base", str, None, "a plugin's own base", flag=True)]


def test_bake_help_does_not_show_a_plugin_flags_internal_name(aminate: Aminate) -> None:
    outcome = aminate("bake", "--help")
    assert outcome.code == 0
    assert "setting_" not in outcome.stdout


def test_a_plugin_flag_named_like_a_bake_parameter_does_not_replace_it(
    layers: Layers, aminate: Aminate, with_plugin: Callable[[object], None], bake_seen: BakeSeen
) -> None:
    with_plugin(PluginWithAFlagNamedLikeABakeParameter())
    layers.write(layers.system, f'[global]\nhome = "{layers.store}"\nlog_dir = "{layers.logs}"\n')
    runner = bake_until_stopped(aminate, bake_seen, "-b", "debian-12", "--base", "plugin-value")
    assert runner.request.base == "debian-12"
    assert runner.settings.plugin("example") == {"base": "plugin-value"}


# config show


def test_config_show_text_names_files_environment_and_sources(
    layers: Layers, aminate: Aminate, monkeypatch: pytest.MonkeyPatch
) -> None:
    layers.write(
        layers.system,
        '[bake]\nsuffix = "nightly"\ntags = { team = "web" }\n[environments.prod]\n'
        'finalizers = ["tagging"]\n',
    )
    monkeypatch.setenv("AMINATOR_CLOUD", "local")
    outcome = aminate("-e", "prod", "config", "show")
    assert outcome.code == 0, outcome.stderr
    lines = outcome.stdout.splitlines()
    assert lines[0] == f"# files read: {layers.system}"
    assert lines[1] == "# environment: prod"
    rows = {line.split(" = ")[0]: line for line in lines[2:]}
    assert re.fullmatch(
        rf'bake\.suffix = "nightly" +# {re.escape(str(layers.system))}', rows["bake.suffix"]
    )
    assert re.fullmatch(r'global\.cloud = "local" +# AMINATOR_CLOUD', rows["global.cloud"])
    assert re.fullmatch(r"bake\.name = \(not set\) +# default", rows["bake.name"])
    assert re.fullmatch(
        rf'environment\.finalizers = \["tagging"\] +# {re.escape(str(layers.system))} '
        r"\[environments\.prod\]",
        rows["environment.finalizers"],
    )
    assert re.fullmatch(r'bake\.tags\.team = "web" +# .*', rows["bake.tags.team"])


def test_config_show_lists_every_declared_setting(
    layers: Layers, aminate: Aminate, declarations: Declarations
) -> None:
    rows = show(aminate)
    expected = {f"global.{s.name}" for s in GLOBAL_SETTINGS}
    expected |= {f"bake.{s.name}" for s in BAKE_SETTINGS if s.name != "tags"}
    expected |= {f"environment.{s.name}" for s in ENVIRONMENT_SETTINGS}
    for plugin, settings in declarations.plugins.items():
        expected |= {f"plugins.{plugin}.{s.name}" for s in settings}
    assert set(rows) == expected


def test_a_config_error_with_json_output_is_a_failure_object(
    layers: Layers, aminate: Aminate
) -> None:
    layers.write(layers.system, "[bake]\nsuffix = 5\n")
    outcome = aminate("config", "show", "--output", "json")
    assert_request_error(outcome, str(layers.system))
    data = outcome.json()
    assert data["exit_code"] == 2
    assert f"{layers.system}: [bake] suffix" in data["error"]["message"]
    assert data["error"]["hint"] == "Name suffix (default: UTC time and bake id)."


@dataclass(frozen=True)
class CopySettings:
    """A third-party plugin's settings, declared as a dataclass."""

    retries: int = settings_module.declared(int, 3, "how often to retry", minimum=0, flag=True)
    regions: tuple[str, ...] = settings_module.declared(list, [], "where to copy the image")
    target: Path = settings_module.declared(Path, "/srv/copies", "where copies go")


class PluginWithTypedSettings:
    @hookimpl
    def aminator_settings(self) -> type[CopySettings]:
        return CopySettings


@pytest.mark.parametrize("registered_as", ["copier", "copier_two"])
def test_a_plugin_gets_its_typed_settings_under_the_name_it_was_loaded_as(
    layers: Layers, registered_as: str
) -> None:
    hooks = load_plugins(environ={}, extra=[(registered_as, PluginWithTypedSettings())])
    declarations = hooks.setting_declarations()
    assert declarations.types[registered_as] is CopySettings
    layers.write(
        layers.system,
        f'[plugins.{registered_as}]\nretries = 5\nregions = ["eu-west-1"]\n',
    )
    variable = settings_module.variable_name(registered_as, "target")
    config = effective(layers, declarations, **{variable: "/srv/elsewhere"})
    own = engine_settings(config, declarations=declarations).of(CopySettings)
    assert own == CopySettings(5, ("eu-west-1",), Path("/srv/elsewhere"))
    # Without a loaded plugin that declared it: the defaults, as the plugin's own tests see.
    assert EngineSettings().of(CopySettings) == CopySettings(3, (), Path("/srv/copies"))
    assert EngineSettings().of(CopySettings).target == Path("/srv/copies")


def test_a_typed_setting_below_its_minimum_is_refused(layers: Layers) -> None:
    hooks = load_plugins(environ={}, extra=[("copier", PluginWithTypedSettings())])
    layers.write(layers.system, "[plugins.copier]\nretries = -1\n")
    with pytest.raises(ConfigError, match=r"\[plugins.copier\] retries: -1 is less than 0"):
        effective(layers, hooks.setting_declarations())


# One declaration per setting: the bake's flags, files and variables all come from it

#: A value to give each bake setting on the command line, and what the request then holds.
FLAG_VALUES: dict[str, tuple[list[str], Any]] = {
    "name": (["-n", "web-{version}"], "web-{version}"),
    "suffix": (["--suffix", "x1"], "x1"),
    "tags": (["--tag", "team=web", "--tag", "tier=1"], {"team": "web", "tier": "1"}),
    "preserve_on_error": (["--preserve-on-error"], True),
    "repo": (["--repo", "/srv/a", "--repo", "/srv/b"], ("/srv/a", "/srv/b")),
    "repo_key": (["--repo-key", "k.asc"], (Path("k.asc"),)),
    "scan_allow": (["--scan-allow", "/etc/app/*"], ("/etc/app/*",)),
    "scan_host_traces": (["--no-scan-host-traces"], False),
    "package_cache": (["--no-package-cache"], False),
    "index_max_age": (["--index-max-age", "0"], 0),
    "refresh": (["--refresh"], True),
    "install_timeout": (["--install-timeout", "60"], 60),
    "root_volume_size": (["--root-volume-size", "8"], 8),
    "keep": (["--keep", "3"], 3),
    "dry_run": (["--dry-run"], True),
}


def test_every_bake_setting_has_a_flag_value_to_try() -> None:
    assert set(FLAG_VALUES) == {s.name for s in BAKE_SETTINGS} - {"base_ami"}


@pytest.mark.parametrize("name", sorted(FLAG_VALUES))
def test_each_bake_flag_reaches_the_request_and_config_show_names_it(
    name: str, layers: Layers, aminate: Aminate, bake_seen: BakeSeen
) -> None:
    setting = next(s for s in BAKE_SETTINGS if s.name == name)
    argv, expected = FLAG_VALUES[name]
    runner = bake_until_stopped(aminate, bake_seen, "-b", "base", *argv)
    assert getattr(runner.request, setting.attribute) == expected
    assert runner.request.base == "base"
    default = bake_until_stopped(aminate, bake_seen, "-b", "base")
    assert getattr(default.request, setting.attribute) == (
        tuple(setting.default) if isinstance(setting.default, list) else setting.default
    )


def test_both_forms_of_the_base_flag_at_once_are_a_usage_error(aminate: Aminate) -> None:
    outcome = aminate("bake", "-b", "one", "-B", "img-2", "./hello.deb")
    assert outcome.code == 2
    assert "give either -b/--base-ami or -B/--base-ami-id, not both" in outcome.stderr


def test_a_setting_below_its_minimum_in_a_file_is_refused(layers: Layers, aminate: Aminate) -> None:
    layers.write(layers.system, "[bake]\nindex_max_age = -1\n")
    outcome = aminate("config", "show")
    assert_request_error(outcome, f"{layers.system}: [bake] index_max_age: -1 is less than 0")


def test_a_dataclass_field_declared_as_a_setting_gives_its_flags_and_key(
    layers: Layers, aminate: Aminate, monkeypatch: pytest.MonkeyPatch
) -> None:
    @dataclass(frozen=True)
    class Request:
        packages: tuple[str, ...]
        retries: int = settings_module.declared(
            int,
            3,
            "How often to retry.",
            minimum=1,
            flags=(settings_module.Flag(("-r", "--retries")),),
        )
        targets: tuple[Path, ...] = settings_module.declared(
            list, (), "Where to copy.", key="target", item=Path, flag=True
        )

    retries, targets = settings_module.settings_of(Request)
    assert (retries.name, retries.attribute, retries.default, retries.minimum) == (
        "retries",
        "retries",
        3,
        1,
    )
    assert (targets.name, targets.attribute, targets.option) == ("target", "targets", "--target")
    assert Request(("p",)).retries == 3
    assert targets.check(["/a", "b"], "x") == (Path("/a"), Path("b"))

    @click.command()
    @setting_options.setting_options([retries, targets])
    @click.pass_context
    def command(ctx: click.Context, **options: Any) -> None:
        click.echo(
            json.dumps(setting_options.settings_given(ctx)[None], default=str, sort_keys=True)
        )

    runner = CliRunner()
    done = runner.invoke(command, ["-r", "5", "--target", "/a", "--target", "/b"])
    assert done.exit_code == 0, done.output
    assert json.loads(done.output) == {"retries": 5, "target": ["/a", "/b"]}
    refused = runner.invoke(command, ["--retries", "0"])
    assert refused.exit_code == 2
    assert "0 is not in the range x>=1" in refused.output


# docs/configuration.md


def documented_example() -> str:
    text = CONFIGURATION_DOC.read_text()
    section = text.split("## A complete example", 1)[1]
    blocks = re.findall(r"^```toml\n(.*?)^```", section, re.MULTILINE | re.DOTALL)
    assert len(blocks) == 1, "docs/configuration.md: one ```toml block under 'A complete example'"
    return str(blocks[0])


@pytest.fixture
def documented_example_file(layers: Layers) -> Path:
    return layers.write(layers.explicit, documented_example())


def environments_of(text: str) -> list[str]:
    return sorted(set(re.findall(r"^\[environments\.(\w+)", text, re.MULTILINE)))


def test_the_documented_example_resolves(
    layers: Layers, declarations: Declarations, documented_example_file: Path
) -> None:
    environments = environments_of(documented_example())
    assert environments, "the example defines environments"
    for name in [None, *environments]:
        flags = Flags(global_={"environment": name} if name else {})
        config = effective(layers, declarations, flags=flags, explicit=documented_example_file)
        hooks = load_plugins(environ={})
        hooks.check_environment(engine_settings(config))
        assert config.environment == (name or config.value("global", "environment"))


def test_the_documented_example_through_config_show(
    layers: Layers, aminate: Aminate, documented_example_file: Path
) -> None:
    for name in environments_of(documented_example()):
        outcome = aminate("--config", str(documented_example_file), "-e", name, "config", "show")
        assert outcome.code == 0, outcome.stderr
        assert "Traceback" not in outcome.stderr
        assert "is loaded; its settings are ignored" not in outcome.stderr


def test_every_engine_and_builtin_setting_is_documented(declarations: Declarations) -> None:
    text = CONFIGURATION_DOC.read_text()
    names = {s.name for s in (*GLOBAL_SETTINGS, *BAKE_SETTINGS, *ENVIRONMENT_SETTINGS)}
    for settings in declarations.plugins.values():
        names |= {s.name for s in settings}
    undocumented = {name for name in names if f"`{name}`" not in text}
    assert undocumented == set()
    for plugin, settings in declarations.plugins.items():
        for setting in settings:
            variable = settings_module.variable_name(plugin, setting.name)
            assert variable in text, f"{variable} is not in docs/configuration.md"
