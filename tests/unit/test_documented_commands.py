"""The docs cannot go stale silently: every command line they show parses, and every setting
their reference tables name is declared."""

from __future__ import annotations

import re
import shlex
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from aminator_ng.commands import cli, setting_options
from aminator_ng.commands.config import ENVIRONMENT_SETTINGS, GLOBAL_SETTINGS
from aminator_ng.commands.settings_reference import (
    BLOCK,
    builtin_plugin_settings,
    reference_tables,
    with_reference,
)
from aminator_ng.contract.plugins import load_plugins
from aminator_ng.contract.request import BAKE_SETTINGS
from tests.unit.cli_runs import Aminate

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "acme-distro"
DOCUMENTS = sorted([REPO / "README.md", EXAMPLE / "README.md", *(REPO / "docs").glob("*.md")])
#: Where a shell command line stops being aminate's.
SHELL_OPERATORS = {"|", ">", ">>", "2>", "&&", "||", ";", "&", "2>&1"}
_FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
_INLINE = re.compile(r"`(aminate [^`]*)`")
_PROMPT = re.compile(r"^(?:\$ |# )?(?:sudo (?:-E )?)?(?:[A-Z_]+=\S+ )*(aminate\s.*)$")


def fenced_command_lines(text: str) -> Iterator[str]:
    for block in _FENCE.findall(text):
        for line in block.replace("\\\n", " ").splitlines():
            found = _PROMPT.match(line.strip())
            if found:
                yield found.group(1)


def inline_command_lines(text: str) -> Iterator[str]:
    """Commands written in the prose; synopses (``[OPTIONS]``, ``create|import``, ``...``)
    are not command lines."""
    for command in _INLINE.findall(text):
        if not re.search(r"[\[|]|\.\.\.", command):
            yield command


def documented_commands() -> list[tuple[str, str]]:
    found = set()
    for document in DOCUMENTS:
        text = document.read_text()
        name = str(document.relative_to(REPO))
        found |= {(name, c) for c in [*fenced_command_lines(text), *inline_command_lines(text)]}
    return sorted(found)


def arguments(command: str) -> list[str]:
    """aminate's arguments of a documented command line, up to a shell operator or comment,
    with ``--help`` before any ``--`` (after it, words are the command's own)."""
    words = shlex.split(command, comments=True)[1:]
    for index, word in enumerate(words):
        if word in SHELL_OPERATORS:
            words = words[:index]
            break
    if "--" in words:
        at = words.index("--")
        return [*words[:at], "--help", *words[at:]]
    return [*words, "--help"]


@pytest.fixture
def with_example_plugin(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The example plugin loaded as a third party installs it, for the commands of its guide."""
    monkeypatch.syspath_prepend(str(EXAMPLE))
    import aminator_acme.plugin

    monkeypatch.setattr(
        cli, "load_plugins", lambda: load_plugins(extra=[("acme", aminator_acme.plugin)])
    )
    yield
    cli.bake.params = [
        p
        for p in cli.bake.params
        if not (isinstance(p, setting_options.SettingOption) and p.plugin)
    ]
    sys.modules.pop("aminator_acme.plugin", None)


def test_the_docs_show_command_lines() -> None:
    commands = documented_commands()
    assert len(commands) > 50
    assert any("--cloud ec2" in command for _, command in commands)


@pytest.mark.parametrize(("document", "command"), documented_commands())
def test_a_documented_command_line_parses(
    document: str, command: str, aminate: Aminate, with_example_plugin: None
) -> None:
    outcome = aminate(*arguments(command))
    assert outcome.code == 0, f"{document}: {command}\n{outcome.stderr}"
    assert "Usage:" in outcome.stdout or "--version" in command


def documented_rows(text: str) -> Iterator[tuple[str, str, dict[str, str]]]:
    """(table, key, the row's cells by column) of every row of the settings tables: those
    whose first column is ``key`` (table: the nearest heading) or ``plugin`` (table: the
    plugin's name)."""
    heading, columns = "", []
    for line in text.splitlines():
        if line.startswith("#"):
            heading = line.strip("# ").strip("`[]")
        if not line.startswith("|"):
            columns = []
            continue
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if not columns:
            columns = cells
            continue
        if set(cells[0]) <= {"-", ":"}:
            continue
        row = dict(zip(columns, cells, strict=False))
        if columns[:1] == ["key"] and cells[0].startswith("`") and "[" not in cells[0]:
            yield heading, cells[0].strip("`"), row
        elif columns[:2] == ["plugin", "key"] and cells[1]:
            yield cells[0].strip("`"), cells[1].strip("`"), row


def test_every_documented_setting_is_declared() -> None:
    declared = {
        "global": {s.name for s in GLOBAL_SETTINGS},
        "bake": {s.name for s in BAKE_SETTINGS},
        "Environments": {s.name for s in ENVIRONMENT_SETTINGS},
    }
    plugins = load_plugins(environ={}).setting_declarations().plugins
    declared |= {plugin: {s.name for s in settings} for plugin, settings in plugins.items()}
    rows = list(documented_rows((REPO / "docs" / "configuration.md").read_text()))
    assert {table for table, _, _ in rows} >= {"global", "bake", "debian", "ec2", "hygiene"}
    unknown = [(table, key) for table, key, _ in rows if key not in declared.get(table, set())]
    assert unknown == []


def test_the_settings_reference_is_made_from_the_declarations() -> None:
    path = REPO / "docs" / "configuration.md"
    text = path.read_text()
    tables = reference_tables(builtin_plugin_settings())
    assert {m.group("table") for m in BLOCK.finditer(text)} == set(tables)
    assert with_reference(text, tables) == text, (
        f"run: python -m aminator_ng.commands.settings_reference {path.relative_to(REPO)}"
    )
