"""The settings reference of docs/configuration.md, made from the declarations: each table
between ``<!-- settings: TABLE -->`` and ``<!-- end of settings -->`` (TABLE: ``global``,
``bake`` or ``plugins``, the built-in plugins' settings).

``python -m aminator_ng.commands.settings_reference docs/configuration.md`` rewrites the
tables in place; a test checks that the file holds what it would write.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from aminator_ng.commands.config import GLOBAL_SETTINGS
from aminator_ng.contract.plugins import load_plugins
from aminator_ng.contract.request import BAKE_SETTINGS
from aminator_ng.contract.settings import Setting, variable_name

BLOCK = re.compile(
    r"(<!-- settings: (?P<table>\w+) -->\n)(?P<body>.*?)(<!-- end of settings -->)", re.DOTALL
)
TYPE_WORDS = {
    str: "string",
    bool: "bool",
    int: "integer",
    float: "number",
    Path: "path",
    list: "list",
    dict: "table of strings",
}
COLUMNS = ("key", "type", "default", "variable", "flag", "meaning")


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("<", "\\<")


def default_text(setting: Setting) -> str:
    value: Any = setting.default
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "`true`" if value else "`false`"
    if isinstance(value, Path):
        return f"`{value}`"
    if isinstance(value, tuple):
        value = [str(item) for item in value]
    return f"`{json.dumps(value)}`"


def flag_text(setting: Setting) -> str:
    forms = []
    for flag in setting.command_line:
        names = list(flag.names)
        if setting.type is bool and setting.negatable:
            names.append(f"--no-{flag.long_name[2:]}")
        metavar = flag.metavar or ("KEY=VALUE" if setting.type is dict else None)
        if metavar and setting.type is not bool:
            names[-1] = f"{names[-1]} {metavar}"
        text = ", ".join(f"`{name}`" for name in names)
        if setting.type in (list, dict):
            text += " (repeatable)"
        forms.append(text)
    return "; ".join(forms)


def meaning_text(setting: Setting) -> str:
    # The flag column says what the help's "(repeatable)" says.
    meaning = setting.help.replace(" (repeatable)", "")
    if meaning.endswith(".") and not meaning.endswith("..."):
        meaning = meaning[:-1]
    if setting.choices:
        meaning += ": " + ", ".join(f"`{choice}`" for choice in setting.choices)
    return meaning


def setting_row(setting: Setting, prefix: Sequence[str]) -> list[str]:
    return [
        f"`{setting.name}`",
        TYPE_WORDS[setting.type],
        default_text(setting),
        f"`{variable_name(*prefix, setting.name)}`",
        flag_text(setting),
        meaning_text(setting),
    ]


def markdown_table(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def reference_tables(plugins: Mapping[str, Sequence[Setting]]) -> dict[str, str]:
    """The tables by name: the engine's two, and the plugins' (in the order given; a plugin
    with no settings gets a row saying so)."""
    plugin_rows = []
    for plugin, settings in plugins.items():
        plugin_rows += [[f"`{plugin}`", *setting_row(s, (plugin,))] for s in settings]
        if not settings:
            plugin_rows.append([f"`{plugin}`", "", "", "", "", "", "no settings"])
    return {
        "global": markdown_table(COLUMNS, [setting_row(s, ()) for s in GLOBAL_SETTINGS]),
        "bake": markdown_table(COLUMNS, [setting_row(s, ("bake",)) for s in BAKE_SETTINGS]),
        "plugins": markdown_table(("plugin", *COLUMNS), plugin_rows),
    }


def builtin_plugin_settings() -> dict[str, Sequence[Setting]]:
    """The settings of the built-in plugins, in the order they register."""
    hooks = load_plugins(environ={})
    declared = hooks.setting_declarations().plugins
    return {info.name: declared.get(info.name, ()) for info in hooks.loaded.infos if info.builtin}


def with_reference(text: str, tables: Mapping[str, str]) -> str:
    """``text`` with every marked table replaced by its reference table."""

    def replaced(found: re.Match[str]) -> str:
        table = found.group("table")
        if table not in tables:
            raise ValueError(f"no settings table {table!r}; there are {', '.join(tables)}")
        return found.group(1) + tables[table] + found.group(4)

    return BLOCK.sub(replaced, text)


def main(argv: Sequence[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m aminator_ng.commands.settings_reference FILE.md", file=sys.stderr)
        return 2
    path = Path(argv[0])
    path.write_text(with_reference(path.read_text(), reference_tables(builtin_plugin_settings())))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
