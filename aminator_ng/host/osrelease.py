"""Reading /etc/os-release (os-release(5)) from a mounted image."""

from __future__ import annotations

import shlex
from pathlib import Path

from aminator_ng.host import imagefs

OS_RELEASE_PATHS = ("/etc/os-release", "/usr/lib/os-release")


def parse_os_release(text: str) -> dict[str, str]:
    """KEY=value lines, values unquoted as a shell would; malformed lines are skipped."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, raw = line.partition("=")
        try:
            words = shlex.split(raw)
        except ValueError:
            continue
        fields[key.strip()] = words[0] if words else ""
    return fields


def read_os_release(root: Path) -> dict[str, str]:
    """The image's os-release fields; {} when it has none."""
    for inside in OS_RELEASE_PATHS:
        if imagefs.is_file(root, inside):
            return parse_os_release(imagefs.read_bytes(root, inside).decode(errors="replace"))
    return {}
