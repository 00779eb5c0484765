"""The house rules that keep the plugin API honest, and the hook reference true.

Distribution knowledge (package managers, their tools and syntax, releases) lives in the
distribution plugins; the engine reaches them through hooks. Comments and docstrings may name
them, to say why; the engine's code may not.
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
from collections.abc import Iterator
from pathlib import Path

from aminator_ng.contract import hookspecs
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


#: Whole words that are one distribution's knowledge.
DISTRIBUTION_WORDS = re.compile(
    r"(?<![\w-])(apt|apt-get|apt-cache|dnf|dnf5|yum|dpkg|dpkg-deb|rpm|rpmkeys|mmdebstrap|"
    r"createrepo_c|bookworm|trixie|bullseye|debian|ubuntu|red\s*hat|fedora|rhel|deb|deb-src)"
    r"(?![\w-])",
    re.IGNORECASE,
)


def docstring_starts(tree: ast.AST) -> set[tuple[int, int]]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            first = node.body[0] if node.body else None
            if (
                isinstance(first, ast.Expr)
                and isinstance(first.value, ast.Constant)
                and isinstance(first.value.value, str)
            ):
                found.add((first.lineno, first.col_offset))
    return found


def code_words(path: Path) -> Iterator[tuple[int, str]]:
    """Distribution words in a module's code: its names and strings, not its comments and
    docstrings."""
    source = path.read_text()
    docstrings = docstring_starts(ast.parse(source))
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            continue
        if token.type == tokenize.STRING and token.start in docstrings:
            continue
        for match in DISTRIBUTION_WORDS.finditer(token.string):
            yield token.start[0], match.group(0)


def test_the_engine_has_no_distribution_knowledge() -> None:
    found = [
        f"{path.relative_to(REPO)}:{line}: {word}"
        for path in sorted((REPO / "aminator_ng").rglob("*.py"))
        for line, word in code_words(path)
    ]
    assert found == []


def test_the_scan_finds_what_it_looks_for(tmp_path: Path) -> None:
    module = tmp_path / "module.py"
    module.write_text(
        '"""Debian is named here, in a docstring."""\n'
        "# and apt in a comment\n"
        'TOOL = "mmdebstrap"\n'
        "def install():\n"
        '    """dnf here too."""\n'
        '    return ["apt-get", "install", "--no-install-recommends"]\n'
    )
    assert list(code_words(module)) == [(3, "mmdebstrap"), (6, "apt-get")]


#: The engine's layers, lowest first (DESIGN.md): each imports only its own and lower layers,
#: and the shared error types.
ENGINE_LAYERS = ("host", "contract", "pipeline", "commands")
SHARED_MODULES = {"aminator_ng", "aminator_ng.errors"}


def engine_layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "aminator_ng" else None


def test_each_layer_of_the_engine_imports_only_the_layers_below_it() -> None:
    for layer in ENGINE_LAYERS:
        allowed = set(ENGINE_LAYERS[: ENGINE_LAYERS.index(layer) + 1])
        for path in (REPO / "aminator_ng" / layer).glob("*.py"):
            for module in imported_modules(path):
                # The package itself is imported for its version.
                if module.split(".")[0] != "aminator_ng" or module in SHARED_MODULES:
                    continue
                assert engine_layer(module) in allowed, f"{path} ({layer}) imports {module}"


def test_the_engine_is_laid_out_in_its_layers() -> None:
    top_level = {path.stem for path in (REPO / "aminator_ng").glob("*.py")}
    assert top_level == {"__init__", "__main__", "api", "errors"}
    folders = {
        path.name for path in (REPO / "aminator_ng").iterdir() if (path / "__init__.py").exists()
    }
    assert folders == set(ENGINE_LAYERS)
