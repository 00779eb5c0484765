"""Waiting for the cloud: polls bounded by a deadline, with backoff for slow operations."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from aminator_ng.api import BakeTimeoutError

log = logging.getLogger(__name__)

T = TypeVar("T")


def poll_until(
    check: Callable[[], T | None],
    *,
    timeout_s: float,
    what: str,
    first_delay_s: float = 1.0,
    max_delay_s: float = 15.0,
    hint: str | None = None,
) -> T:
    """The first result of ``check`` that is not None, asked until ``timeout_s`` has passed.

    The delay between polls doubles from ``first_delay_s`` up to ``max_delay_s``; the last poll
    is made at the deadline. Raises BakeTimeoutError saying what did not happen.
    """
    deadline = time.monotonic() + timeout_s
    delay = first_delay_s
    while True:
        result = check()
        if result is not None:
            return result
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise BakeTimeoutError(f"{what} within {timeout_s:g} s", hint=hint)
        log.debug("waiting %.1f s for %s", min(delay, remaining), what)
        time.sleep(min(delay, remaining))
        delay = min(delay * 2, max_delay_s)
