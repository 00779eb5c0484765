"""The command-line forms of settings: a click option for each flag a setting declares, the
engine's bake settings, the plugins' and the base creators', and what a command line gave."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click
from click.core import ParameterSource

from aminator_ng.contract.base_creator import BaseCreator
from aminator_ng.contract.settings import Declarations, Flag, Setting, parse_tag

log = logging.getLogger("aminator_ng")

F = TypeVar("F", bound=Callable[..., Any])


class SettingOption(click.Option):
    """The command-line form of a setting (one of its flags): the engine's, or a plugin's."""

    def __init__(
        self, setting: Setting, flag: Flag, plugin: str | None = None, *, show_default: bool = False
    ) -> None:
        self.plugin = plugin
        self.setting = setting
        self.flag = flag
        help = flag.help or setting.help
        if plugin is not None and not show_default:
            help = f"{help} (plugin {plugin}; [plugins.{plugin}] {setting.name})"
        declared: dict[str, Any] = {
            "help": help,
            "default": None,
            "expose_value": True,
            "metavar": flag.metavar,
        }
        if show_default and setting.default not in (None, (), {}):
            # Only shown: a flag not given leaves the setting to its own default anyway.
            declared["default"], declared["show_default"] = setting.default, True
        names = list(flag.names)
        if setting.type is bool:
            if setting.negatable:
                names = [*flag.names[:-1], f"{flag.long_name}/--no-{flag.long_name[2:]}"]
            else:
                declared["is_flag"] = True
        elif setting.type in (list, dict):
            declared["multiple"] = True
            declared["metavar"] = flag.metavar or ("KEY=VALUE" if setting.type is dict else "TEXT")
        elif setting.choices:
            declared["type"] = click.Choice(setting.choices)
        elif setting.type is int and setting.minimum is not None:
            declared["type"] = click.IntRange(min=setting.minimum)
        else:
            declared["type"] = {int: click.INT, float: click.FLOAT, Path: click.Path()}.get(
                setting.type, click.STRING
            )
        position = setting.command_line.index(flag) if flag in setting.command_line else 0
        internal = f"setting_{plugin or 'bake'}_{setting.name}_{position}"
        super().__init__([*names, internal], **declared)


def setting_options(settings: Sequence[Setting]) -> Callable[[F], F]:
    """A command's options made from settings' flags, in the order declared."""

    def decorate(command: F) -> F:
        options = [SettingOption(s, flag) for s in settings for flag in s.command_line]
        # click collects options bottom up and reverses them.
        params = getattr(command, "__click_params__", [])
        command.__click_params__ = [*params, *reversed(options)]  # type: ignore[attr-defined]
        return command

    return decorate


def _add_options(
    command: click.Command,
    owned: Sequence[tuple[str, Setting, Flag]],
    insert_at: Callable[[list[click.Parameter]], int],
    left_out: str,
    *,
    show_default: bool = False,
) -> None:
    """Give ``command`` an option for each (owner, setting, flag), in place of the owners'
    options it had; a flag an option has already is left out, with the warning ``left_out``
    (formatted with ``owner``, ``options`` and ``setting``)."""
    command.params = [
        p for p in command.params if not (isinstance(p, SettingOption) and p.plugin is not None)
    ]
    taken = {name for param in command.params for name in param.opts + param.secondary_opts}
    for owner, setting, flag in owned:
        option = SettingOption(setting, flag, owner, show_default=show_default)
        clash = taken & {*option.opts, *option.secondary_opts}
        if clash:
            options = ", ".join(sorted(clash))
            log.warning(left_out.format(owner=owner, options=options, setting=setting.name))
            continue
        taken |= {*option.opts, *option.secondary_opts}
        command.params.insert(insert_at(command.params), option)


def add_plugin_options(command: click.Command, declarations: Declarations) -> None:
    """Give ``bake`` the flags plugins declared (set a flag left out in [plugins.NAME])."""

    def before_the_arguments(params: list[click.Parameter]) -> int:
        arguments = [i for i, p in enumerate(params) if isinstance(p, click.Argument)]
        return arguments[0] if arguments else len(params)

    owned = [
        (plugin, setting, flag)
        for plugin, settings in sorted(declarations.plugins.items())
        for setting in settings
        for flag in setting.command_line
    ]
    _add_options(
        command,
        owned,
        before_the_arguments,
        "plugin {owner}: bake option {options} is taken; set {setting} in [plugins.{owner}] "
        "instead",
    )


def settings_given(ctx: click.Context) -> dict[str | None, dict[str, Any]]:
    """The settings given as flags, by plugin (None: the engine's ``[bake]``)."""
    given: dict[str | None, dict[str, Any]] = {}
    used: dict[tuple[str | None, str], list[SettingOption]] = {}
    for param in ctx.command.params:
        if not isinstance(param, SettingOption) or param.name is None:
            continue
        if ctx.get_parameter_source(param.name) is not ParameterSource.COMMANDLINE:
            continue
        setting, value = param.setting, ctx.params[param.name]
        if setting.type is dict:
            value = dict(parse_tag(item) for item in value)
        elif setting.type is list:
            value = list(value)
        used.setdefault((param.plugin, setting.name), []).append(param)
        given.setdefault(param.plugin, {})[setting.name] = value
    for options in used.values():
        if len(options) > 1:
            forms = " or ".join("/".join(o.flag.names[:2]) for o in options)
            raise click.UsageError(f"give either {forms}, not both")
    return given


def add_creator_options(command: click.Command, creators: Sequence[BaseCreator]) -> None:
    """Give ``base create`` the options of every base creator (one creator's flag that another
    has already is left out)."""

    def before_the_global_options(params: list[click.Parameter]) -> int:
        return next((i for i, p in enumerate(params) if p.name == "cloud"), len(params))

    owned = [
        (creator.name, setting, flag)
        for creator in creators
        for setting in creator.option_settings()
        for flag in setting.command_line or (Flag((setting.option,)),)
    ]
    _add_options(
        command,
        owned,
        before_the_global_options,
        "base creator {owner}: option {options} is taken; {setting} is left out",
        show_default=True,
    )
