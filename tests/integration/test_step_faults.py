"""A failure at a step of a real local bake: exit 1, a message naming the step, no new image, and
nothing left behind on the host (the workspace fixture checks the last part).

The whole matrix (every step, at its start and its end, and every signal) runs without root
over a fake host in tests/unit/test_bake_pipeline.py; these prove the real host layer: faults
with the volume attached, the root mounted, the chroot set up, and after each is released."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.conftest import BAKE_STEPS, BASE_NAME, Workspace

pytestmark = pytest.mark.privileged


REAL_HOST_FAULTS = [
    ("attach", "exit"),
    ("mount", "exit"),
    ("chroot_setup", "exit"),
    ("install", "exit"),
    ("chroot_teardown", "enter"),
    ("unmount", "enter"),
    ("snapshot", "exit"),
    ("register", "exit"),
]


def test_the_real_host_faults_name_steps_of_the_bake() -> None:
    assert {step for step, _ in REAL_HOST_FAULTS} <= set(BAKE_STEPS)


@pytest.mark.parametrize(("step", "when"), REAL_HOST_FAULTS)
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
