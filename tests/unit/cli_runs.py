"""What an in-process run of ``aminate`` left, for the unit tests (the ``aminate`` fixture)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ERROR_PREFIX = "aminate: error:"


@dataclass
class Outcome:
    code: Any
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.startswith(ERROR_PREFIX)]


Aminate = Callable[..., Outcome]


@dataclass
class Workspace:
    home: Path
    log_dir: Path


def assert_request_error(outcome: Outcome, *needles: str) -> str:
    """Exit 2, exactly one ``aminate: error:`` line naming ``needles``, and no traceback."""
    assert outcome.code == 2, outcome.stderr
    assert len(outcome.error_lines) == 1, outcome.stderr
    line = outcome.error_lines[0]
    for needle in needles:
        assert needle in line, outcome.stderr
    assert "Traceback" not in outcome.stderr
    return line
