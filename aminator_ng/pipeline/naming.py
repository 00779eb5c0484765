"""Image names: the charset and length every backend accepts (EC2's AMI name rules)."""

from __future__ import annotations

import re

from aminator_ng.errors import RequestError

MAX_IMAGE_NAME = 128
MIN_IMAGE_NAME = 3
_NOT_ALLOWED = re.compile(r"[^A-Za-z0-9()\[\] ./'@_-]")


def sanitize_image_name(name: str) -> str:
    """Replace characters outside the AMI name charset with ``_`` and cut to 128 characters."""
    cleaned = _NOT_ALLOWED.sub("_", name.strip())[:MAX_IMAGE_NAME].strip()
    if len(cleaned) < MIN_IMAGE_NAME:
        raise RequestError(
            f"image name {name!r} is too short", hint="image names have 3 to 128 characters"
        )
    return cleaned
