"""Settings from every layer, each value with the place it came from.

Layers, lowest first: the defaults; /etc/aminator-ng/config.toml;
~/.config/aminator-ng/config.toml; the file of ``--config`` (or ``AMINATOR_CONFIG``); the
environment chosen with ``-e``; ``AMINATOR_*`` variables; flags. A file has up to four kinds
of table: ``[global]`` (the global options), ``[bake]`` (bake's options by their long names),
``[environments.NAME]`` and ``[plugins.NAME]`` (a plugin's own settings, as the plugin
declares them). docs/configuration.md is the reference.
"""

from __future__ import annotations

import logging
import os
import tomllib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aminator_ng.contract.request import BAKE_SETTINGS
from aminator_ng.contract.settings import (
    DEFAULT_CLOUD,
    DEFAULT_FAMILY_TAG,
    DEFAULT_HOME,
    DEFAULT_LOG_DIR,
    Declarations,
    EngineSettings,
    Flag,
    Setting,
    made_from,
    normalise_key,
    variable_name,
)
from aminator_ng.errors import ConfigError

log = logging.getLogger(__name__)

SYSTEM_CONFIG = Path("/etc/aminator-ng/config.toml")
CONFIG_VARIABLE = "AMINATOR_CONFIG"
TOP_LEVEL_TABLES = ("global", "bake", "environments", "plugins")

#: The ``[global]`` table: the global options, and where the engine keeps its files.
GLOBAL_SETTINGS = (
    Setting(
        "cloud",
        str,
        DEFAULT_CLOUD,
        "The cloud backend: local or ec2 (built in), or a plugin's.",
        flags=(Flag(("--cloud",), metavar="NAME"),),
    ),
    Setting(
        "environment",
        str,
        None,
        "The environment of the config files to use.",
        flags=(Flag(("-e", "--environment"), metavar="NAME"),),
    ),
    Setting("home", Path, DEFAULT_HOME, "The local store, work directories and mount points."),
    Setting("log_dir", Path, DEFAULT_LOG_DIR, "Where each bake writes <bake_id>.log."),
    Setting(
        "cache_dir",
        Path,
        None,
        "The package cache bakes share (default: the cache directory under home).",
    ),
    Setting(
        "family_tag",
        str,
        DEFAULT_FAMILY_TAG,
        "The tag whose value names an image's family, for retention (images prune, --keep); "
        "bakes set it to PACKAGE/BASE_FAMILY unless a tag of that name is given.",
    ),
)
#: What an ``[environments.NAME]`` table chooses, besides its own bake and plugins tables.
ENVIRONMENT_SETTINGS = (
    Setting("cloud", str, None, "the cloud backend"),
    Setting("distro", str, None, "pin the distro plugin (by plugin name) instead of detection"),
    Setting("provisioner", str, None, "the plugin (by name) whose provisioner installs packages"),
    Setting("finalizers", list, None, "the plugins (by name) that name, tag and publish images"),
)


# Reading files


@dataclass(frozen=True)
class ConfigFile:
    path: Path
    data: Mapping[str, Any]


def user_config_path(environ: Mapping[str, str] = os.environ) -> Path:
    config_home = environ.get("XDG_CONFIG_HOME") or str(
        Path(environ.get("HOME") or Path.home()) / ".config"
    )
    return Path(config_home) / "aminator-ng" / "config.toml"


def config_paths(explicit: Path | None, environ: Mapping[str, str]) -> list[tuple[Path, bool]]:
    """The files to read, lowest layer first, each with whether it must exist."""
    paths = [(SYSTEM_CONFIG, False), (user_config_path(environ), False)]
    chosen = explicit or (Path(environ[CONFIG_VARIABLE]) if environ.get(CONFIG_VARIABLE) else None)
    if chosen is not None:
        paths.append((chosen, True))
    return paths


def read_config_file(path: Path) -> ConfigFile:
    try:
        with path.open("rb") as file:
            data = tomllib.load(file)
    except FileNotFoundError as exc:
        raise ConfigError(f"config file not found: {path}") from exc
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    return ConfigFile(path, data)


def read_config_files(explicit: Path | None, environ: Mapping[str, str]) -> list[ConfigFile]:
    files = []
    for path, required in config_paths(explicit, environ):
        if required or path.is_file():
            files.append(read_config_file(path))
    return files


# Checking files against the declarations


def _setting(settings: Sequence[Setting], key: str, where: str) -> Setting:
    for setting in settings:
        if setting.name == key:
            return setting
    raise ConfigError(
        f"{where}: unknown setting {key!r}",
        hint="known here: " + ", ".join(s.name for s in settings),
    )


def _table(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: expected a table, got {value!r}")
    return value


@dataclass(frozen=True)
class Entry:
    """A value as one layer sets it."""

    section: str  # "global", "bake" or "plugins.NAME"
    key: str
    value: Any
    source: str


def _engine_entries(
    section: str, table: Any, settings: Sequence[Setting], where: str, source: str
) -> Iterator[Entry]:
    """``where`` names the table in errors: ``FILE: [bake]``."""
    for raw_key, value in _table(table, where).items():
        key = normalise_key(raw_key)
        setting = _setting(settings, key, f"{where} {raw_key}")
        yield Entry(section, key, setting.check(value, f"{where} {raw_key}"), source)


def _plugin_entries(
    plugins: Any,
    declarations: Declarations,
    path: Path,
    table_name: str,
    source: str,
    *,
    warn: bool = True,
) -> Iterator[Entry]:
    """``table_name`` is ``plugins`` or ``environments.NAME.plugins``."""
    for plugin, table in _table(plugins, f"{path}: [{table_name}]").items():
        where = f"{path}: [{table_name}.{plugin}]"
        table = _table(table, where)
        if plugin not in declarations.loaded:
            if warn:
                log.warning("%s: no plugin %s is loaded; its settings are ignored", where, plugin)
            continue
        for raw_key, value in table.items():
            key = normalise_key(raw_key)
            setting = declarations.plugin_setting(plugin, key, f"{where} {raw_key}")
            yield Entry(
                f"plugins.{plugin}", key, setting.check(value, f"{where} {raw_key}"), source
            )


def file_entries(file: ConfigFile, declarations: Declarations) -> list[Entry]:
    """Every setting a file makes outside its environments. The environments are checked too,
    so that a mistake in one is found whether or not it is chosen."""
    entries: list[Entry] = []
    source = str(file.path)
    for name, table in file.data.items():
        where = f"{file.path}: [{name}]"
        if name == "global":
            entries += _engine_entries("global", table, GLOBAL_SETTINGS, where, source)
        elif name == "bake":
            entries += _engine_entries("bake", table, BAKE_SETTINGS, where, source)
        elif name == "plugins":
            entries += _plugin_entries(table, declarations, file.path, "plugins", source)
        elif name == "environments":
            for env_name, env_table in _table(table, where).items():
                environment_entries(file, env_name, env_table, declarations)
        else:
            raise ConfigError(
                f"{file.path}: unknown table [{name}]",
                hint="the tables are [global], [bake], [environments.NAME] and [plugins.NAME]",
            )
    return entries


def environment_entries(
    file: ConfigFile, name: str, table: Any, declarations: Declarations, *, warn: bool = True
) -> list[Entry]:
    """What ``[environments.NAME]`` of a file sets: its choices (section "environment"), and its
    own ``bake`` and ``plugins`` tables."""
    table_name = f"environments.{name}"
    where = f"{file.path}: [{table_name}]"
    source = f"{file.path} [{table_name}]"
    entries: list[Entry] = []
    for raw_key, value in _table(table, where).items():
        key = normalise_key(raw_key)
        if key == "bake":
            bake_where = f"{file.path}: [{table_name}.bake]"
            entries += _engine_entries("bake", value, BAKE_SETTINGS, bake_where, source)
        elif key == "plugins":
            entries += _plugin_entries(
                value, declarations, file.path, f"{table_name}.plugins", source, warn=warn
            )
        else:
            setting = _setting(
                [*ENVIRONMENT_SETTINGS, Setting("bake", dict), Setting("plugins", dict)],
                key,
                f"{where} {raw_key}",
            )
            checked = setting.check(value, f"{where} {raw_key}")
            entries.append(Entry("environment", key, checked, source))
    return entries


def defined_environments(files: Iterable[ConfigFile]) -> dict[str, list[ConfigFile]]:
    found: dict[str, list[ConfigFile]] = {}
    for file in files:
        for name in _table(file.data.get("environments", {}), f"{file.path}: [environments]"):
            found.setdefault(name, []).append(file)
    return found


# Resolving


@dataclass(frozen=True)
class Sourced:
    value: Any
    source: str


@dataclass(frozen=True)
class Flags:
    """What the command line set; only options actually given."""

    global_: Mapping[str, Any] = field(default_factory=dict)
    bake: Mapping[str, Any] = field(default_factory=dict)
    plugins: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class EffectiveConfig:
    """Every setting's value and source, after all layers."""

    values: Mapping[str, Mapping[str, Sourced]]
    tags: Mapping[str, Sourced]
    environment: str | None
    files: tuple[Path, ...]

    def value(self, section: str, key: str) -> Any:
        return self.values[section][key].value

    def section(self, section: str) -> dict[str, Any]:
        return {key: sourced.value for key, sourced in self.values.get(section, {}).items()}

    def rows(self) -> list[tuple[str, Any, str]]:
        """(dotted key, value, source) for ``aminate config show``."""
        rows = []
        for section, entries in self.values.items():
            for key, sourced in entries.items():
                if section == "bake" and key == "tags":
                    continue
                rows.append((f"{section}.{key}", sourced.value, sourced.source))
        rows += [(f"bake.tags.{k}", s.value, s.source) for k, s in self.tags.items()]
        return rows


def resolve(
    files: Sequence[ConfigFile],
    declarations: Declarations,
    flags: Flags,
    environ: Mapping[str, str] = os.environ,
) -> EffectiveConfig:
    values: dict[str, dict[str, Sourced]] = {
        "global": _defaults(GLOBAL_SETTINGS),
        "bake": _defaults(BAKE_SETTINGS),
        "environment": _defaults(ENVIRONMENT_SETTINGS),
    }
    for plugin, settings in sorted(declarations.plugins.items()):
        values[f"plugins.{plugin}"] = _defaults(settings)
    tags: dict[str, Sourced] = {}

    def apply(entries: Iterable[Entry]) -> None:
        for entry in entries:
            if entry.section == "bake" and entry.key == "tags":
                tags.update({k: Sourced(v, entry.source) for k, v in entry.value.items()})
            else:
                values[entry.section][entry.key] = Sourced(entry.value, entry.source)

    # Files, lowest first; every file is checked whole, environments included.
    for file in files:
        apply(file_entries(file, declarations))

    chosen = _chosen_environment(files, flags, environ, values["global"]["environment"])
    environment: str | None = chosen.value if chosen is not None else None
    if environment is not None and chosen is not None:
        values["global"]["environment"] = chosen
        for file in defined_environments(files)[environment]:
            table = file.data["environments"][environment]
            # Checked (and warned about) with the whole file above.
            apply(environment_entries(file, environment, table, declarations, warn=False))
        if values["environment"]["cloud"].value is not None:
            values["global"]["cloud"] = values["environment"]["cloud"]

    apply(_variable_entries(declarations, environ))
    apply(_flag_entries(flags, declarations))
    for key in ("home", "log_dir"):
        path = values["global"][key]
        if not Path(path.value).is_absolute():
            raise ConfigError(
                f"{key} must be an absolute path, not {path.value} (from {path.source})"
            )
    values["bake"]["tags"] = Sourced({k: s.value for k, s in tags.items()}, "merged")
    return EffectiveConfig(values, tags, environment, tuple(f.path for f in files))


def _defaults(settings: Sequence[Setting]) -> dict[str, Sourced]:
    return {setting.name: Sourced(setting.default, "default") for setting in settings}


def _chosen_environment(
    files: Sequence[ConfigFile], flags: Flags, environ: Mapping[str, str], from_files: Sourced
) -> Sourced | None:
    if flags.global_.get("environment"):
        name, source = flags.global_["environment"], "-e"
    elif environ.get(variable_name("environment")):
        name, source = environ[variable_name("environment")], variable_name("environment")
    elif from_files.value:
        name, source = from_files.value, from_files.source
    else:
        return None
    defined = defined_environments(files)
    if name not in defined:
        read = ", ".join(str(f.path) for f in files) or "no config file"
        raise ConfigError(
            f"unknown environment {name!r} (from {source})",
            hint=f"defined: {', '.join(sorted(defined)) or 'none'}; files read: {read}",
        )
    return Sourced(str(name), source)


def _variable_entries(declarations: Declarations, environ: Mapping[str, str]) -> Iterator[Entry]:
    tables: list[tuple[str, tuple[str, ...], Sequence[Setting]]] = [
        ("global", (), GLOBAL_SETTINGS),
        ("bake", ("bake",), BAKE_SETTINGS),
    ]
    tables += [
        (f"plugins.{plugin}", (plugin,), settings)
        for plugin, settings in sorted(declarations.plugins.items())
    ]
    for section, prefix, settings in tables:
        for setting in settings:
            name = variable_name(*prefix, setting.name)
            if name == variable_name("environment") or environ.get(name, "") == "":
                continue
            yield Entry(section, setting.name, setting.parse(environ[name], name), name)


def _flag_entries(flags: Flags, declarations: Declarations) -> Iterator[Entry]:
    for key, value in flags.global_.items():
        if key != "environment":
            setting = _setting(GLOBAL_SETTINGS, key, "flag")
            yield Entry("global", key, setting.check(value, f"--{key}"), f"--{key}")
    for key, value in flags.bake.items():
        setting = _setting(BAKE_SETTINGS, key, "flag")
        option = setting.flag_source(value)
        yield Entry("bake", key, setting.check(value, option), option)
    for plugin, given in flags.plugins.items():
        for key, value in given.items():
            setting = declarations.plugin_setting(plugin, key, "flag")
            option = setting.flag_source(value)
            yield Entry(f"plugins.{plugin}", key, setting.check(value, option), option)


# What commands get


def engine_settings(
    effective: EffectiveConfig,
    *,
    output: str = "text",
    debug: bool = False,
    quiet: bool = False,
    declarations: Declarations | None = None,
) -> EngineSettings:
    chosen = effective.section("environment")
    typed: dict[type, Any] = {
        kind: made_from(kind, effective.section(f"plugins.{plugin}"))
        for plugin, kind in (declarations.types.items() if declarations else ())
    }
    return EngineSettings(
        home=Path(effective.value("global", "home")),
        log_dir=Path(effective.value("global", "log_dir")),
        package_cache_dir=(
            Path(effective.value("global", "cache_dir"))
            if effective.value("global", "cache_dir")
            else None
        ),
        cloud=effective.value("global", "cloud"),
        family_tag=effective.value("global", "family_tag"),
        output=output,
        debug=debug,
        quiet=quiet,
        environment=effective.environment,
        distro=chosen["distro"],
        provisioner=chosen["provisioner"],
        finalizers=chosen["finalizers"],
        plugin_settings={
            section.removeprefix("plugins."): effective.section(section)
            for section in effective.values
            if section.startswith("plugins.")
        },
        typed=typed,
    )
