"""Bake steps: each is logged on entry and on exit with its elapsed time, timed for the JSON
result and the metrics hook, and can be made to fail on purpose for tests.

Two test-only switches: ``AMINATOR_TEST_FAULT=STEP:enter`` (or ``STEP:exit``) makes the named step
raise ``InjectedFault`` as it starts (or ends); ``AMINATOR_TEST_PAUSE=STEP:enter`` (or
``STEP:exit``) makes the bake wait there until a signal comes, so that a test can kill it at a
known point.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import TypeVar

from aminator_ng.contract.model import StepTiming
from aminator_ng.errors import AminatorError, BakeError, InjectedFault
from aminator_ng.host.signals import deferred

log = logging.getLogger(__name__)

T = TypeVar("T")
FAULT_VARIABLE = "AMINATOR_TEST_FAULT"
PAUSE_VARIABLE = "AMINATOR_TEST_PAUSE"


def _test_switch(variable: str) -> tuple[str, str] | None:
    spec = os.environ.get(variable, "")
    name, sep, when = spec.rpartition(":")
    return (name, when) if sep and when in ("enter", "exit") else None


class Steps:
    """The steps of one bake, in the order they ran."""

    def __init__(self, on_finished: Callable[[str, float, bool], None] | None = None) -> None:
        self.timings: list[StepTiming] = []
        self._on_finished = on_finished
        self._fault = _test_switch(FAULT_VARIABLE)
        self._pause = _test_switch(PAUSE_VARIABLE)

    def _maybe_fail(self, name: str, when: str) -> None:
        if self._pause == (name, when):
            log.warning("paused on %s of step %s until a signal comes", when, name)
            while True:
                time.sleep(3600)
        if self._fault == (name, when):
            fault = InjectedFault(f"fault injected on {when} of step {name}")
            fault.step = name
            raise fault

    def _finish(self, name: str, started: float, failed: bool) -> None:
        elapsed = time.monotonic() - started
        self.timings.append(StepTiming(name, elapsed))
        log.log(
            logging.WARNING if failed else logging.INFO,
            "%s %s in %.2f s",
            name,
            "failed" if failed else "done",
            elapsed,
        )
        if self._on_finished is not None:
            self._on_finished(name, elapsed, failed)

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        """A step of the bake. An error raised inside it is labelled with the step's name."""
        log.info("%s ...", name)
        started = time.monotonic()
        failed = True
        try:
            self._maybe_fail(name, "enter")
            yield
            failed = False
        except AminatorError as exc:
            if exc.step is None:
                exc.step = name
            raise
        except OSError as exc:
            error = BakeError(f"{name}: {exc}")
            error.step = name
            raise error from exc
        finally:
            self._finish(name, started, failed)
        self._maybe_fail(name, "exit")

    @contextlib.contextmanager
    def release_step(self, name: str) -> Iterator[None]:
        """A step that releases something. Its body always runs, and runs whole: a signal is
        raised only after it (``signals.deferred``), and a failure of the step's own
        bookkeeping (an injected fault on entry) only after the release is done."""
        with deferred():
            log.info("%s ...", name)
            started = time.monotonic()
            fault: AminatorError | None = None
            try:
                self._maybe_fail(name, "enter")
            except InjectedFault as exc:
                fault = exc
            failed = True
            try:
                yield
                failed = False
            except AminatorError as exc:
                if exc.step is None:
                    exc.step = name
                raise
            finally:
                self._finish(name, started, failed or fault is not None)
            if fault is not None:
                raise fault
        self._maybe_fail(name, "exit")

    @contextlib.contextmanager
    def resource(
        self,
        acquire: str,
        release: str,
        manager: AbstractContextManager[T],
        *,
        release_step_on_success: bool = True,
    ) -> Iterator[T]:
        """Enter ``manager`` as step ``acquire`` and leave it as step ``release`` (after
        success too, unless ``release_step_on_success`` is False: then it is left quietly).

        If the acquire step fails after the resource was acquired, the resource is released.
        """
        with contextlib.ExitStack() as stack:
            with self.step(acquire):
                value = stack.enter_context(
                    self._released_as(release, manager, release_step_on_success)
                )
            owned = stack.pop_all()
        with owned:
            yield value

    @contextlib.contextmanager
    def _released_as(
        self, release: str, manager: AbstractContextManager[T], step_on_success: bool
    ) -> Iterator[T]:
        value = manager.__enter__()
        try:
            yield value
        except BaseException:
            exc_info = sys.exc_info()
            with self.release_step(release):
                manager.__exit__(*exc_info)
            raise
        if not step_on_success:
            manager.__exit__(None, None, None)
            return
        with self.release_step(release):
            manager.__exit__(None, None, None)
