"""The engine's shape: no distribution knowledge in its code, and no import of a plugin.

Distribution knowledge (package managers, their tools and syntax, releases) lives in the
distribution plugins; the engine reaches them through hooks. Comments and docstrings may name
them, to say why; the code may not.
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ENGINE = REPO / "aminator_ng"
#: Whole words that are one distribution's knowledge.
DISTRIBUTION_WORDS = re.compile(
    r"(?<![\w-])(apt|apt-get|apt-cache|dnf|dnf5|yum|dpkg|dpkg-deb|rpm|rpmkeys|mmdebstrap|"
    r"createrepo_c|bookworm|trixie|bullseye|debian|ubuntu|red\s*hat|fedora|rhel|deb|deb-src)"
    r"(?![\w-])",
    re.IGNORECASE,
)
PLUGIN_PACKAGES = re.compile(r"^aminator_(?!ng\b)\w+")


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
        for path in sorted(ENGINE.rglob("*.py"))
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


def test_the_engine_imports_no_plugin() -> None:
    imported = []
    for path in sorted(ENGINE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            imported += [
                f"{path.relative_to(REPO)}: {n}" for n in names if PLUGIN_PACKAGES.match(n)
            ]
    assert imported == []
