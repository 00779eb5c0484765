"""The session's record of hook calls, shared by tests/conftest.py and the test that reads it.

(A module of its own: conftest.py is imported by pytest under another name than
``tests.conftest``, so objects defined there are not the ones a test module imports.)
"""

from __future__ import annotations

import pytest

#: Points at the session's record file; the engine appends one JSON line per hook call to it.
HOOK_RECORD_VARIABLE = "AMINATOR_TRACE_PLUGINS"
#: The test that reads the record; it runs after every other test.
HOOK_CHECK_NODE = "tests/test_hooks_called.py"
#: Whether this session runs the whole suite (set at collection).
whole_suite_key = pytest.StashKey[bool]()
