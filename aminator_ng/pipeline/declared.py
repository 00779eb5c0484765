"""A pipeline of declared steps, and the resources they acquire, run on one ExitStack.

The bake declares its order once (see ``bake.BAKE_PIPELINE``): plain steps, and resources with
the step that acquires each, the step that releases it, the step before which it is released
(``until``; else at the end), and whether a failed bake run with ``--preserve-on-error`` keeps
it. The runner enters each resource on a stack of its own inside the pipeline's ExitStack, so
that everything acquired is released in reverse order on success, on error and on a signal,
and a resource can be released early, before the step it was declared to end at.

A resource is either a context manager (``enter``), released by leaving it, or an
``acquire``/``release`` pair. Only the latter can be kept: keeping it is dropping its release
callback, with nothing suspended that the interpreter would finish at exit.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from aminator_ng.pipeline.steps import Steps

S = TypeVar("S")


@dataclass(frozen=True)
class Step(Generic[S]):
    """Work that acquires nothing that outlives it."""

    name: str
    run: Callable[[S], None]


@dataclass(frozen=True)
class Resource(Generic[S]):
    """A step that acquires something, and the step that releases it."""

    name: str
    release: str
    #: A context manager over the resource (left to release it), or None with ``acquire``.
    enter: Callable[[S], AbstractContextManager[Any]] | None = None
    #: Acquire and release as two calls: what ``keep_on_preserve`` needs.
    acquire: Callable[[S], Any] | None = None
    release_by: Callable[[S, Any], None] | None = None
    #: Released just before this step runs; None: at the end of the pipeline.
    until: str | None = None
    #: Kept when the pipeline fails and the run preserves (``--preserve-on-error``).
    keep_on_preserve: bool = False
    #: Whether leaving it after success is a step of its own (a snapshot that is kept when the
    #: bake succeeds releases nothing then, so its leaving is not shown as a step).
    release_step_on_success: bool = True
    #: What the acquired value is stored as on the state (``setattr``).
    stored_as: str | None = None

    def __post_init__(self) -> None:
        if (self.enter is None) == (self.acquire is None or self.release_by is None):
            raise ValueError(f"{self.name}: give enter, or acquire and release_by")
        if self.keep_on_preserve and self.enter is not None:
            raise ValueError(f"{self.name}: only an acquire/release pair can be kept")


Item = Step[S] | Resource[S]


@dataclass(frozen=True)
class Kept:
    """A resource a preserved failure kept."""

    name: str
    value: Any


class Pipeline(Generic[S]):
    """Declared steps and resources, in the order they run."""

    def __init__(self, items: Sequence[Item[S]]) -> None:
        names = [item.name for item in items]
        for item in items:
            later = names[names.index(item.name) + 1 :]
            if isinstance(item, Resource) and item.until is not None and item.until not in later:
                raise ValueError(f"{item.name}: until names no later step: {item.until}")
        self.items = tuple(items)
        #: Each resource's ``until``: the step it is released before.
        self._until = {i.name: i.until for i in items if isinstance(i, Resource)}

    @property
    def step_names(self) -> list[str]:
        """Every step a successful run goes through, in order (releases included)."""
        order: list[str] = []
        live: list[Resource[S]] = []
        for item in self.items:
            for resource in reversed([r for r in live if r.until == item.name]):
                order.append(resource.release)
                live.remove(resource)
            order.append(item.name)
            if isinstance(item, Resource):
                live.append(item)
        order += [r.release for r in reversed(live) if r.release_step_on_success]
        return order

    def run(
        self, state: S, steps: Steps, *, preserve: Callable[[], bool], kept: list[Kept]
    ) -> None:
        """Run every item on ``state``. On failure, release what is held in reverse order,
        except, when ``preserve()`` says so, the resources declared kept: those are added to
        ``kept`` before the failure goes on."""
        with ExitStack() as pipeline:
            held: dict[str, ExitStack] = {}
            keepable: list[tuple[Resource[S], ExitStack, Any]] = []
            try:
                for item in self.items:
                    for name in reversed([n for n in held if self._until[n] == item.name]):
                        held.pop(name).close()
                    if isinstance(item, Step):
                        with steps.step(item.name):
                            item.run(state)
                        continue
                    slot = pipeline.enter_context(ExitStack())
                    held[item.name] = slot
                    value = self._acquire(item, state, steps, slot)
                    if item.stored_as:
                        setattr(state, item.stored_as, value)
                    if item.keep_on_preserve:
                        keepable.append((item, slot, value))
            except BaseException:
                if preserve():
                    for resource, slot, value in keepable:
                        if slot in held.values():
                            slot.pop_all()  # its release callback is dropped: it stays
                            kept.append(Kept(resource.name, value))
                raise

    def _acquire(self, item: Resource[S], state: S, steps: Steps, slot: ExitStack) -> Any:
        if item.enter is not None:
            return slot.enter_context(
                steps.resource(
                    item.name,
                    item.release,
                    item.enter(state),
                    release_step_on_success=item.release_step_on_success,
                )
            )
        assert item.acquire is not None and item.release_by is not None
        with steps.step(item.name):
            value = item.acquire(state)
            slot.callback(_released, steps, item.release, item.release_by, state, value)
        return value


def _released(
    steps: Steps, name: str, release: Callable[[Any, Any], None], state: Any, value: Any
) -> None:
    with steps.release_step(name):
        release(state, value)
