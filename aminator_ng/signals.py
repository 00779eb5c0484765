"""SIGINT, SIGTERM and SIGHUP become an ``Interrupted`` exception in the main thread, so that a
bake's ExitStack releases everything before the process exits with 130, 143 or 129."""

from __future__ import annotations

import contextlib
import logging
import signal
from collections.abc import Iterator
from types import FrameType

from aminator_ng.errors import EXIT_SIGHUP, EXIT_SIGINT, EXIT_SIGTERM, Interrupted

log = logging.getLogger(__name__)

EXIT_CODES = {
    signal.SIGINT: EXIT_SIGINT,
    signal.SIGTERM: EXIT_SIGTERM,
    signal.SIGHUP: EXIT_SIGHUP,
}


@contextlib.contextmanager
def interrupts_raised() -> Iterator[None]:
    """Within the context the first of these signals raises ``Interrupted``; later ones are
    logged and ignored, so that a second Ctrl-C cannot cut the release of what was acquired."""
    received: list[int] = []

    def handler(signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if received:
            log.warning("%s received while stopping; still releasing what the bake holds", name)
            return
        received.append(signum)
        log.warning("%s received: stopping and releasing what the bake holds", name)
        raise Interrupted(signum, EXIT_CODES[signal.Signals(signum)], name)

    previous = {sig: signal.signal(sig, handler) for sig in EXIT_CODES}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
