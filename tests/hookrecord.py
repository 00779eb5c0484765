"""The session's record of hook calls: every plugin manager the engine builds (in the test
processes, and in every ``aminate`` the integration tests start) appends one JSON line per hook
call to the file ``AMINATOR_TRACE_PLUGINS`` names, with pluggy's hook-call monitoring; the
session's end reads it (tests/conftest.py).
"""

from __future__ import annotations

import json
from pathlib import Path

from aminator_ng.contract import hookspecs

#: Points at the session's record file.
HOOK_RECORD_VARIABLE = "AMINATOR_TRACE_PLUGINS"


def hook_names() -> set[str]:
    return {name for name in vars(hookspecs) if name.startswith("aminator_")}


def hooks_never_called(record: Path) -> set[str]:
    """The hookspecs the record has no call of."""
    called = {json.loads(line)["hook"] for line in record.read_text().splitlines() if line}
    return hook_names() - called
