"""Every hookspec is called somewhere in the test suite, by the engine, in a real command.

The calls are recorded with pluggy's hook-call monitoring: tests/conftest.py points
``AMINATOR_TRACE_PLUGINS`` at a file for the whole session, and every plugin manager the engine
builds (in this process, and in every ``aminate`` the integration tests start) appends one line
per hook call to it. This test runs last.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from aminator_ng import hookspecs
from tests.hookrecord import HOOK_RECORD_VARIABLE, whole_suite_key


def hook_names() -> set[str]:
    return {name for name in vars(hookspecs) if name.startswith("aminator_")}


def test_every_hook_is_called_during_the_suite(request: pytest.FixtureRequest) -> None:
    if not request.config.stash.get(whole_suite_key, False):
        pytest.skip("only meaningful when the whole suite runs")
    record = Path(os.environ[HOOK_RECORD_VARIABLE])
    called = {json.loads(line)["hook"] for line in record.read_text().splitlines() if line}
    never_called = hook_names() - called
    assert never_called == set(), "hooks no test exercises"
