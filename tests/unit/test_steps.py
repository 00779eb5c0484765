"""Bake steps: timings, error labels, the test-only fault switch, and resources released."""

from __future__ import annotations

from types import TracebackType

import pytest

from aminator_ng.errors import BakeError, InjectedFault, NotFoundError
from aminator_ng.pipeline.steps import FAULT_VARIABLE, Steps


class Recorder:
    """A resource that writes down when it is acquired and released."""

    def __init__(self, events: list[str], name: str = "resource") -> None:
        self.events = events
        self.name = name

    def __enter__(self) -> str:
        self.events.append(f"acquire {self.name}")
        return self.name

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.events.append(f"release {self.name}")


def fault(monkeypatch: pytest.MonkeyPatch, spec: str) -> None:
    monkeypatch.setenv(FAULT_VARIABLE, spec)


def step_names(steps: Steps) -> list[str]:
    return [t.name for t in steps.timings]


# plain steps


def test_each_step_is_timed_in_order() -> None:
    finished: list[tuple[str, bool]] = []
    steps = Steps(on_finished=lambda name, elapsed, failed: finished.append((name, failed)))
    for name in ("resolve_base", "install", "register"):
        with steps.step(name):
            pass
    assert step_names(steps) == ["resolve_base", "install", "register"]
    assert all(t.duration_s >= 0 for t in steps.timings)
    assert finished == [("resolve_base", False), ("install", False), ("register", False)]
    assert steps.timings[0].as_dict()["name"] == "resolve_base"


def test_a_failed_step_is_timed_and_labels_the_error() -> None:
    finished: list[tuple[str, bool]] = []
    steps = Steps(on_finished=lambda name, elapsed, failed: finished.append((name, failed)))
    with pytest.raises(NotFoundError) as raised, steps.step("resolve_base"):
        raise NotFoundError("base image not found: x")
    assert raised.value.step == "resolve_base"
    assert step_names(steps) == ["resolve_base"]
    assert finished == [("resolve_base", True)]


def test_an_inner_step_keeps_its_label() -> None:
    steps = Steps()
    with pytest.raises(NotFoundError) as raised, steps.step("outer"), steps.step("inner"):
        raise NotFoundError("missing")
    assert raised.value.step == "inner"
    assert step_names(steps) == ["inner", "outer"]


def test_an_os_error_becomes_a_bake_error_of_the_step() -> None:
    steps = Steps()
    with pytest.raises(BakeError) as raised, steps.step("snapshot"):
        raise OSError(28, "No space left on device")
    assert raised.value.step == "snapshot"
    assert raised.value.exit_code == 1
    assert "No space left on device" in raised.value.message


# the fault switch


def test_enter_fault_raises_before_the_body(monkeypatch: pytest.MonkeyPatch) -> None:
    fault(monkeypatch, "x:enter")
    steps = Steps()
    ran: list[str] = []
    with pytest.raises(InjectedFault) as raised, steps.step("x"):
        ran.append("body")
    assert raised.value.step == "x"
    assert ran == []
    assert step_names(steps) == ["x"]


def test_exit_fault_raises_after_the_body(monkeypatch: pytest.MonkeyPatch) -> None:
    fault(monkeypatch, "x:exit")
    steps = Steps()
    ran: list[str] = []
    with pytest.raises(InjectedFault) as raised, steps.step("x"):
        ran.append("body")
    assert raised.value.step == "x"
    assert ran == ["body"]
    assert step_names(steps) == ["x"]


def test_a_fault_hits_only_the_named_step(monkeypatch: pytest.MonkeyPatch) -> None:
    fault(monkeypatch, "x:enter")
    steps = Steps()
    with steps.step("y"):
        pass
    assert step_names(steps) == ["y"]


@pytest.mark.parametrize("spec", ["x", "x:middle", ":enter", ""])
def test_a_malformed_fault_spec_injects_nothing(monkeypatch: pytest.MonkeyPatch, spec: str) -> None:
    fault(monkeypatch, spec)
    steps = Steps()
    with steps.step("x"):
        pass
    assert step_names(steps) == ["x"]


def test_a_fault_is_an_ordinary_bake_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    fault(monkeypatch, "x:enter")
    with pytest.raises(InjectedFault) as raised, Steps().step("x"):
        pass
    assert isinstance(raised.value, BakeError)
    assert raised.value.exit_code == 1


def test_release_step_runs_its_body_despite_an_enter_fault(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fault(monkeypatch, "detach:enter")
    finished: list[tuple[str, bool]] = []
    steps = Steps(on_finished=lambda name, elapsed, failed: finished.append((name, failed)))
    ran: list[str] = []
    with pytest.raises(InjectedFault) as raised, steps.release_step("detach"):
        ran.append("released")
    assert ran == ["released"]
    assert raised.value.step == "detach"
    assert finished == [("detach", True)]


def test_release_step_exit_fault_comes_after_the_body(monkeypatch: pytest.MonkeyPatch) -> None:
    fault(monkeypatch, "detach:exit")
    steps = Steps()
    ran: list[str] = []
    with pytest.raises(InjectedFault), steps.release_step("detach"):
        ran.append("released")
    assert ran == ["released"]


# resources


def test_resource_is_acquired_used_and_released_as_two_steps() -> None:
    events: list[str] = []
    steps = Steps()
    with steps.resource("attach", "detach", Recorder(events, "volume")) as value:
        assert value == "volume"
        events.append("use")
    assert events == ["acquire volume", "use", "release volume"]
    assert step_names(steps) == ["attach", "detach"]


def test_resource_is_released_when_the_acquire_step_fails_at_exit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fault(monkeypatch, "attach:exit")
    events: list[str] = []
    steps = Steps()
    with (
        pytest.raises(InjectedFault) as raised,
        steps.resource("attach", "detach", Recorder(events, "volume")),
    ):
        events.append("use")
    assert raised.value.step == "attach"
    assert events == ["acquire volume", "release volume"]
    assert step_names(steps) == ["attach", "detach"]


def test_resource_is_not_entered_when_the_acquire_step_fails_at_enter(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fault(monkeypatch, "attach:enter")
    events: list[str] = []
    with (
        pytest.raises(InjectedFault),
        Steps().resource("attach", "detach", Recorder(events, "volume")),
    ):
        events.append("use")
    assert events == []


def test_resource_is_released_when_the_body_fails() -> None:
    events: list[str] = []
    steps = Steps()
    with (
        pytest.raises(NotFoundError),
        steps.resource("attach", "detach", Recorder(events, "volume")),
    ):
        raise NotFoundError("package missing")
    assert events == ["acquire volume", "release volume"]
    assert step_names(steps) == ["attach", "detach"]


def test_resource_is_released_despite_a_release_enter_fault(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fault(monkeypatch, "detach:enter")
    events: list[str] = []
    with (
        pytest.raises(InjectedFault) as raised,
        Steps().resource("attach", "detach", Recorder(events, "volume")),
    ):
        events.append("use")
    assert raised.value.step == "detach"
    assert events == ["acquire volume", "use", "release volume"]


def test_nested_resources_are_released_in_reverse_order() -> None:
    events: list[str] = []
    steps = Steps()
    with (
        steps.resource("create_volume", "delete_volume", Recorder(events, "volume")),
        steps.resource("attach", "detach", Recorder(events, "device")),
    ):
        events.append("use")
    assert events == [
        "acquire volume",
        "acquire device",
        "use",
        "release device",
        "release volume",
    ]
    assert step_names(steps) == ["create_volume", "attach", "detach", "delete_volume"]
