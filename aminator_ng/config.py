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
import re
import tomllib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

from aminator_ng.errors import ConfigError

log = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_HOME = Path("/var/lib/aminator-ng")
DEFAULT_LOG_DIR = Path("/var/log/aminator-ng")
DEFAULT_CLOUD = "local"
SYSTEM_CONFIG = Path("/etc/aminator-ng/config.toml")
CONFIG_VARIABLE = "AMINATOR_CONFIG"
TOP_LEVEL_TABLES = ("global", "bake", "environments", "plugins")
_SETTING_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
_TYPE_LABELS: dict[type, str] = {
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "true or false",
    Path: "a path",
    list: "a list of strings",
    dict: "a table of strings",
}


def normalise_key(key: str) -> str:
    """Keys may be written with hyphens (like the long options) or underscores."""
    return key.replace("-", "_")


@dataclass(frozen=True)
class Flag:
    """A command-line form of a setting. A setting with two (``-b`` and ``-B``) takes one of
    them at a time; each may have help of its own."""

    names: tuple[str, ...]
    help: str = ""
    metavar: str | None = None

    @property
    def long_name(self) -> str:
        return next((name for name in self.names if name.startswith("--")), self.names[0])


@dataclass(frozen=True)
class Setting:
    """One setting: of the engine's ``[global]`` or ``[bake]`` tables, or of a plugin's own
    ``[plugins.NAME]`` table, as the plugin declares it with ``aminator_settings``."""

    name: str
    #: str, int, float, bool, Path, list (of strings) or dict (of strings).
    type: type = str
    default: Any = None
    help: str = ""
    #: Also a flag of ``aminate bake`` (``--name-with-hyphens``; a bool gets ``--no-...`` too).
    flag: bool = False
    choices: tuple[str, ...] = ()
    #: The flags, where they are not just ``--name-with-hyphens`` (implies ``flag``).
    flags: tuple[Flag, ...] = ()
    #: The least value of an int setting.
    minimum: int | None = None
    #: Whether a bool flag has its ``--no-...`` form; without it, the flag only turns it on.
    negatable: bool = True
    #: What a list's items are made into: str, or Path.
    item: Callable[[Any], Any] = str
    #: The attribute of the dataclass that carries it (``declared``), where not ``name``.
    attribute: str = ""

    def __post_init__(self) -> None:
        if not _SETTING_NAME.match(self.name):
            raise ValueError(f"setting name {self.name!r} is not lower_snake_case")
        if self.type not in _TYPE_LABELS:
            raise ValueError(f"setting {self.name}: unsupported type {self.type!r}")

    @property
    def option(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def command_line(self) -> tuple[Flag, ...]:
        """Its flags: those declared, else ``--name-with-hyphens`` for ``flag=True``."""
        return self.flags or ((Flag((self.option,)),) if self.flag else ())

    def flag_source(self, value: Any) -> str:
        """How ``config show`` names a value given as a flag: ``--suffix``, ``--no-gpgcheck``,
        ``-b/-B`` for a setting with two flags."""
        flags = self.command_line
        if len(flags) > 1:
            return "/".join(flag.names[0] for flag in flags)
        option = flags[0].long_name if flags else self.option
        if self.type is bool and value is False and self.negatable:
            return f"--no-{option[2:]}"
        return option

    def check(self, value: Any, where: str) -> Any:
        """A value from a TOML file (or a flag), checked and converted; ``where`` names it."""
        expected = _TYPE_LABELS[self.type]
        converted: Any
        if self.type is bool:
            ok = isinstance(value, bool)
            converted = value
        elif self.type is int:
            ok = isinstance(value, int) and not isinstance(value, bool)
            converted = value
            if ok and self.minimum is not None and value < self.minimum:
                raise ConfigError(
                    f"{where}: {value} is less than {self.minimum}", hint=self.help or None
                )
        elif self.type is float:
            ok = isinstance(value, int | float) and not isinstance(value, bool)
            converted = float(value) if ok else value
        elif self.type is Path:
            ok = isinstance(value, str | Path) and str(value) != ""
            converted = Path(value) if ok else value
        elif self.type is list:
            ok = isinstance(value, list | tuple) and all(isinstance(v, str | Path) for v in value)
            converted = tuple(self.item(v) for v in value) if ok else value
        elif self.type is dict:
            ok = isinstance(value, Mapping) and all(
                isinstance(v, str | int | float | bool) for v in value.values()
            )
            converted = {str(k): _scalar_text(v) for k, v in value.items()} if ok else value
        else:
            ok = isinstance(value, str)
            converted = value
        if not ok:
            raise ConfigError(
                f"{where}: expected {expected}, got {value!r}", hint=self.help or None
            )
        if self.choices and converted not in self.choices:
            raise ConfigError(
                f"{where}: {converted!r} is not one of {', '.join(self.choices)}",
                hint=self.help or None,
            )
        return converted

    def parse(self, text: str, where: str) -> Any:
        """A value from an environment variable."""
        value: Any
        try:
            if self.type is bool:
                lowered = text.strip().lower()
                if lowered not in _TRUE | _FALSE:
                    raise ValueError(text)
                value = lowered in _TRUE
            elif self.type is int:
                value = int(text)
            elif self.type is float:
                value = float(text)
            elif self.type is list:
                value = [item.strip() for item in text.split(",") if item.strip()]
            elif self.type is dict:
                value = dict(parse_tag(item) for item in text.split(",") if item.strip())
            else:
                value = text
        except (ValueError, ConfigError) as exc:
            raise ConfigError(
                f"{where}: expected {_TYPE_LABELS[self.type]}, got {text!r}",
                hint=self.help or None,
            ) from exc
        return self.check(value, where)


def _scalar_text(value: str | int | float | bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


#: The ``[global]`` table: the global options, and where the engine keeps its files.
GLOBAL_SETTINGS = (
    Setting("cloud", str, DEFAULT_CLOUD, "the cloud backend (--cloud)"),
    Setting("environment", str, None, "the environment to use when -e is not given"),
    Setting("home", Path, DEFAULT_HOME, "the local store, work directories and mount points"),
    Setting("log_dir", Path, DEFAULT_LOG_DIR, "where each bake writes <bake_id>.log"),
    Setting(
        "cache_dir",
        Path,
        None,
        "the package cache bakes share (default: the cache directory under home)",
    ),
)
SETTING_METADATA = "aminator_ng.setting"


def declared(type_: type, default: Any, help: str, *, key: str = "", **options: Any) -> Any:
    """A dataclass field that is also a setting (named ``key``, else as the field): its one
    declaration, which ``settings_of`` reads. ``options`` are ``Setting``'s. A path's default
    may be written as a string, a list's as a list: the field holds a Path, a tuple."""
    if type_ is Path and isinstance(default, str):
        default = Path(default)
    elif type_ is list and isinstance(default, list):
        default = tuple(default)
    metadata = {SETTING_METADATA: (key, type_, default, help, options)}
    if isinstance(default, dict):
        return field(default_factory=lambda: dict(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def settings_of(cls: type) -> tuple[Setting, ...]:
    """The settings a dataclass declares with ``declared``, in the order of its fields."""
    found = []
    for item in fields(cls):
        if SETTING_METADATA in item.metadata:
            key, type_, default, help, options = item.metadata[SETTING_METADATA]
            found.append(
                Setting(key or item.name, type_, default, help, attribute=item.name, **options)
            )
    return tuple(found)


def made_from(kind: type[T], values: Mapping[str, Any]) -> T:
    """An instance of a dataclass of settings (``declared``), from the values by setting name;
    a setting without a value keeps its default."""
    given = {s.attribute: values[s.name] for s in settings_of(kind) if s.name in values}
    return kind(**given)


@dataclass(frozen=True)
class BakeRequest:
    """One bake, as the operator asked for it: the base image, the packages, and the value of
    each ``[bake]`` setting, which is declared here (and nowhere else)."""

    base: str
    packages: tuple[str, ...]
    name_template: str | None = declared(
        str,
        None,
        "Image name template; fields {name} {version} {release} {arch} {suffix} ...",
        key="name",
        flags=(Flag(("-n", "--name"), metavar="TEMPLATE"),),
    )
    suffix: str | None = declared(
        str,
        None,
        "Name suffix (default: UTC time and bake id).",
        flags=(Flag(("-s", "--suffix"), metavar="TEXT"),),
    )
    tags: Mapping[str, str] = declared(
        dict,
        {},
        "Add a tag (repeatable); tags merge key by key over every layer.",
        flags=(Flag(("--tag",), metavar="KEY=VALUE"),),
    )
    preserve_on_error: bool = declared(
        bool,
        False,
        "Keep what a failed bake acquired, and print how to release it.",
        flag=True,
        negatable=False,
    )
    #: ``--repo`` specs as given: host directories of package files, or repositories as the
    #: bake's provisioner reads them.
    repositories: tuple[str, ...] = declared(
        list,
        (),
        "Add a repository for this bake only: a directory of package files, or a repository "
        "as the image's package manager takes one, a source line or a URL (repeatable).",
        key="repo",
        flags=(Flag(("--repo",), metavar="SPEC"),),
    )
    repository_keys: tuple[Path, ...] = declared(
        list,
        (),
        "A key file (OpenPGP, armored or binary) that signs the --repo source lines (repeatable).",
        key="repo_key",
        item=Path,
        flags=(Flag(("--repo-key",), metavar="FILE"),),
    )
    scan_allow: tuple[str, ...] = declared(
        list,
        (),
        "An image path (or shell pattern) where the secret scan accepts a secret (repeatable).",
        flags=(Flag(("--scan-allow",), metavar="PATH"),),
    )
    scan_host_traces: bool = declared(
        bool,
        True,
        "Fail when changed files hold the bake host's hostname, addresses or nameservers "
        "(on by default).",
        flag=True,
    )
    package_cache: bool = declared(
        bool,
        True,
        "Use the package lists and downloaded packages other bakes left in the package cache "
        "(on by default).",
        flag=True,
    )
    index_max_age: int = declared(
        int,
        3600,
        "How old the cached package lists may be before they are fetched again "
        "(default 3600; 0: every bake fetches them).",
        minimum=0,
        flags=(Flag(("--index-max-age",), metavar="SECONDS"),),
    )
    refresh: bool = declared(
        bool,
        False,
        "Fetch the package lists even when the cached ones are fresh.",
        flag=True,
        negatable=False,
    )
    install_timeout: int = declared(
        int,
        3600,
        "How long the install may take, in seconds, before the bake ends it (exit 1).",
        minimum=1,
        flags=(Flag(("--install-timeout",), metavar="SECONDS"),),
    )

    @classmethod
    def from_settings(
        cls, base: str, packages: Sequence[str], values: Mapping[str, Any]
    ) -> BakeRequest:
        """The request for ``packages`` on ``base``, with the ``[bake]`` settings' values (by
        setting name)."""
        return cls(base, tuple(packages), **{s.attribute: values[s.name] for s in settings_of(cls)})


#: The ``[bake]`` table: bake's options by their long names; all but ``base_ami`` are declared
#: where a bake carries them, in ``BakeRequest``.
BASE_AMI = Setting(
    "base_ami",
    str,
    None,
    "The base image: an id, or a name (the newest image with it).",
    flags=(
        Flag(("-b", "--base-ami", "--base-ami-name"), metavar="NAME_OR_ID"),
        Flag(("-B", "--base-ami-id"), "Base image id.", "ID"),
    ),
)
BAKE_SETTINGS = (BASE_AMI, *settings_of(BakeRequest))
#: What an ``[environments.NAME]`` table chooses, besides its own bake and plugins tables.
ENVIRONMENT_SETTINGS = (
    Setting("cloud", str, None, "the cloud backend"),
    Setting("distro", str, None, "pin the distro plugin (by plugin name) instead of detection"),
    Setting("provisioner", str, None, "the plugin (by name) whose provisioner installs packages"),
    Setting("finalizers", list, None, "the plugins (by name) that name, tag and publish images"),
)


def parse_tag(text: str) -> tuple[str, str]:
    """``KEY=VALUE`` from ``--tag``."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"bad --tag {text!r}", hint="write tags as KEY=VALUE")
    return key.strip(), value


def variable_name(*parts: str) -> str:
    """The ``AMINATOR_*`` variable of a setting: ``AMINATOR_BAKE_SUFFIX``, ``AMINATOR_HOME``."""
    return "_".join(["AMINATOR", *(re.sub(r"[^A-Za-z0-9]", "_", p).upper() for p in parts)])


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


@dataclass(frozen=True)
class Declarations:
    """What may be set: the engine's tables, and each loaded plugin's settings."""

    plugins: Mapping[str, Sequence[Setting]]
    #: Plugins that are loaded, with or without settings.
    loaded: frozenset[str] = frozenset()
    #: The dataclass each plugin declared its settings with, by the name it was loaded under.
    types: Mapping[str, type] = field(default_factory=dict)

    def plugin_setting(self, plugin: str, key: str, where: str) -> Setting:
        for setting in self.plugins.get(plugin, ()):
            if setting.name == key:
                return setting
        known = ", ".join(s.name for s in self.plugins.get(plugin, ())) or "none"
        raise ConfigError(
            f"{where}: plugin {plugin} has no setting {key!r}", hint=f"its settings: {known}"
        )


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


@dataclass(frozen=True)
class EngineSettings:
    """Settings every command shares, from every layer."""

    #: Where the local store, work directories and mount points live.
    home: Path = DEFAULT_HOME
    #: Where each bake writes ``<bake_id>.log``.
    log_dir: Path = DEFAULT_LOG_DIR
    #: The cloud backend: "local" (the embedded default) or a plugin's backend.
    cloud: str = DEFAULT_CLOUD
    output: str = "text"
    debug: bool = False
    quiet: bool = False
    #: The environment chosen with ``-e`` (or in a config file), if any.
    environment: str | None = None
    #: Pins of the environment: plugin names, or None where detection or every plugin decides.
    distro: str | None = None
    provisioner: str | None = None
    finalizers: tuple[str, ...] | None = None
    #: Each plugin's settings, defaults included, by plugin name.
    plugin_settings: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    #: The settings of each plugin that declared them as a dataclass: an instance, by class.
    typed: Mapping[type, Any] = field(default_factory=dict)
    #: Where the package cache is; None: ``cache`` under home.
    package_cache_dir: Path | None = None

    @property
    def cache_dir(self) -> Path:
        """The package cache bakes share."""
        return self.package_cache_dir or self.home / "cache"

    @property
    def work_dir(self) -> Path:
        """Per-bake scratch space and mount points."""
        return self.home / "work"

    def plugin(self, name: str) -> Mapping[str, Any]:
        """A plugin's settings (``[plugins.NAME]``); empty when it declares none."""
        return self.plugin_settings.get(name, {})

    def of(self, kind: type[T]) -> T:
        """A plugin's own settings, as the dataclass it declared them with: resolved from the
        table of whatever name the plugin was loaded under; the defaults when no loaded plugin
        declared ``kind``."""
        found = self.typed.get(kind)
        return found if isinstance(found, kind) else kind()


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
