"""The house rules that keep the plugin API honest, and the hook reference true."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from aminator_ng import hookspecs
from tests.hookrecord import hook_names

REPO = Path(__file__).resolve().parents[1]
PLUGIN_PACKAGES = {p.name for p in (REPO / "plugins").iterdir() if (p / "__init__.py").exists()}


def imported_modules(path: Path) -> set[str]:
    modules: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules.add(node.module)
    return modules


def test_the_engine_never_imports_plugins() -> None:
    for path in (REPO / "aminator_ng").rglob("*.py"):
        for module in imported_modules(path):
            assert module.split(".")[0] not in PLUGIN_PACKAGES, f"{path} imports {module}"


def test_plugins_import_only_the_api_of_the_engine() -> None:
    for path in (REPO / "plugins").rglob("*.py"):
        for module in imported_modules(path):
            if module.split(".")[0] == "aminator_ng":
                assert module == "aminator_ng.api", f"{path} imports {module}"


def test_builtin_plugins_are_entry_points_of_the_distribution() -> None:
    setup = (REPO / "setup.cfg").read_text()
    for package in PLUGIN_PACKAGES:
        assert f"= {package}.plugin" in setup, f"{package} is not registered as an entry point"


def test_every_hook_is_documented_in_the_hook_reference() -> None:
    reference = (REPO / "docs" / "plugins.md").read_text()
    documented = set(re.findall(r"^#+ `(aminator_\w+)`", reference, re.MULTILINE))
    assert hook_names() - documented == set(), "hooks missing from docs/plugins.md"
    assert documented - hook_names() == set(), "docs/plugins.md documents hooks that do not exist"


def test_every_hookspec_has_a_docstring() -> None:
    for name in hook_names():
        assert (getattr(hookspecs, name).__doc__ or "").strip(), f"{name} has no docstring"
