"""A failure at the start or the end of every step of a local bake: exit 1, a message naming the
step, no new image, and nothing left behind (the workspace fixture checks the last part)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.conftest import BAKE_STEPS, BASE_NAME, Workspace

pytestmark = pytest.mark.privileged


@pytest.mark.parametrize("when", ["enter", "exit"])
@pytest.mark.parametrize("step", BAKE_STEPS)
def test_fault_at_step(workspace: Workspace, debs: dict[str, Path], step: str, when: str) -> None:
    result = workspace.aminate(
        "-b",
        BASE_NAME,
        "--output",
        "json",
        str(debs["hello"]),
        env={"AMINATOR_TEST_FAULT": f"{step}:{when}"},
    )
    assert result.returncode == 1, result.stderr
    error = result.json()["error"]
    assert error["step"] == step
    assert f"fault injected on {when} of step {step}" in error["message"]
    assert "Traceback" not in result.stderr
    assert workspace.baked_images() == []
