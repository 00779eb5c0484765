"""SIGINT, SIGTERM and SIGHUP become an ``Interrupted`` exception in the main thread, so that a
bake's ExitStack releases everything before the process exits with 130, 143 or 129.

Releasing is never cut short: within ``deferred`` (every release step) the first signal is
remembered and raised only as the context ends, and later signals are logged and ignored.
"""

from __future__ import annotations

import contextlib
import logging
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from types import FrameType

from aminator_ng.errors import EXIT_SIGHUP, EXIT_SIGINT, EXIT_SIGTERM, Interrupted

log = logging.getLogger(__name__)

EXIT_CODES = {
    signal.SIGINT: EXIT_SIGINT,
    signal.SIGTERM: EXIT_SIGTERM,
    signal.SIGHUP: EXIT_SIGHUP,
}


@dataclass
class _Deferral:
    depth: int = 0
    pending: Interrupted | None = None


_deferral = _Deferral()


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Within the context a first signal does not interrupt; it is raised as the outermost
    such context ends."""
    _deferral.depth += 1
    try:
        yield
    finally:
        _deferral.depth -= 1
        pending = _deferral.pending
        if _deferral.depth == 0 and pending is not None:
            _deferral.pending = None
            raise pending


@contextlib.contextmanager
def interrupts_raised() -> Iterator[None]:
    """Within the context the first of these signals raises ``Interrupted`` (at once, or as
    a ``deferred`` context ends); later ones are logged and ignored, so that a second Ctrl-C
    cannot cut the release of what was acquired."""
    received: list[int] = []

    def handler(signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if received:
            log.warning("%s received while stopping; still releasing what the bake holds", name)
            return
        received.append(signum)
        log.warning("%s received: stopping and releasing what the bake holds", name)
        interrupted = Interrupted(signum, EXIT_CODES[signal.Signals(signum)], name)
        if _deferral.depth:
            _deferral.pending = interrupted
            return
        raise interrupted

    previous = {sig: signal.signal(sig, handler) for sig in EXIT_CODES}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
