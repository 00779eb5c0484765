"""Settings as the engine and plugins declare them: their types, defaults, help and flags, and
the values every command shares.

A setting is declared once, as a ``Setting`` or as a dataclass field made with ``declared``;
the command-line options, ``config show``, the checks of files and variables and the docs'
settings reference all come from that declaration. docs/configuration.md is the reference.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

from aminator_ng.errors import ConfigError, RequestError

T = TypeVar("T")

DEFAULT_HOME = Path("/var/lib/aminator-ng")
DEFAULT_LOG_DIR = Path("/var/log/aminator-ng")
DEFAULT_CLOUD = "local"
DEFAULT_FAMILY_TAG = "family"
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


def parse_tag(text: str) -> tuple[str, str]:
    """``KEY=VALUE`` from ``--tag``."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"bad --tag {text!r}", hint="write tags as KEY=VALUE")
    return key.strip(), value


DURATION = re.compile(r"(\d+)([hdw])")
DURATION_UNITS = {"h": timedelta(hours=1), "d": timedelta(days=1), "w": timedelta(weeks=1)}


def parse_duration(text: str, flag: str) -> timedelta:
    """A duration in hours, days or weeks: ``36h``, ``90d``, ``12w``."""
    found = DURATION.fullmatch(text.strip())
    if found is None or int(found.group(1)) == 0:
        raise RequestError(
            f"{flag} {text!r} is not a duration", hint="write hours, days or weeks: 36h, 90d, 12w"
        )
    return int(found.group(1)) * DURATION_UNITS[found.group(2)]


def variable_name(*parts: str) -> str:
    """The ``AMINATOR_*`` variable of a setting: ``AMINATOR_BAKE_SUFFIX``, ``AMINATOR_HOME``."""
    return "_".join(["AMINATOR", *(re.sub(r"[^A-Za-z0-9]", "_", p).upper() for p in parts)])


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
    #: The tag that names an image's family, for retention.
    family_tag: str = DEFAULT_FAMILY_TAG

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
