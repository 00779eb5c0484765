"""Waiting for the cloud: polls bounded by a deadline, with backoff for slow operations."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

from aminator_ec2.aws import call
from aminator_ng.api import BakeTimeoutError, CloudError

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


#: The states of an image that will never become available.
FAILED_IMAGE_STATES = ("failed", "error", "invalid", "deregistered", "disabled")


def image_state(ec2: Any, image_id: str) -> tuple[str, str]:
    """The image's state, and EC2's reason for it (empty when it gives none)."""
    answer = call(ec2.describe_images, image_id, ImageIds=[image_id])
    if not answer.get("Images"):
        return "deregistered", ""
    image = answer["Images"][0]
    return str(image.get("State", "")), str(image.get("StateReason", {}).get("Message", ""))


def wait_until_available(
    ec2: Any, image_id: str, *, timeout_s: float, hint: str, where: str = ""
) -> None:
    """Poll the image until EC2 says it is available; CloudError when it fails instead."""
    place = f" in {where}" if where else ""

    def available() -> bool | None:
        state, reason = image_state(ec2, image_id)
        if state in FAILED_IMAGE_STATES:
            raise CloudError(
                f"image {image_id}{place} is {state}" + (f": {reason}" if reason else ""),
                hint="EC2 could not make the image from its snapshot; see the bake log",
            )
        return True if state == "available" else None

    poll_until(
        available,
        timeout_s=timeout_s,
        what=f"image {image_id}{place} did not become available",
        first_delay_s=2.0,
        max_delay_s=30.0,
        hint=hint,
    )
    log.info("image %s%s is available", image_id, place)
