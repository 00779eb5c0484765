"""Minimal Debian roots with mmdebstrap: main, updates and security sources, ca-certificates."""

from __future__ import annotations

from pathlib import Path

from aminator_ng.api import run

DEFAULT_MIRROR = "http://deb.debian.org/debian"
DEFAULT_SECURITY_MIRROR = "http://deb.debian.org/debian-security"
#: Debian releases with -updates and -security suites.
STABLE_SUITES = {"buster", "bullseye", "bookworm", "trixie", "forky"}
ROLLING_SUITES = {"sid", "unstable"}
BASE_PACKAGES = ["ca-certificates"]


def sources(suite: str, mirror: str, security_mirror: str) -> list[str]:
    lines = [f"deb {mirror} {suite} main"]
    if suite in STABLE_SUITES:
        lines.append(f"deb {mirror} {suite}-updates main")
        lines.append(f"deb {security_mirror} {suite}-security main")
    return lines


def bootstrap(
    target: Path, suite: str, mirror: str | None, security_mirror: str | None, include: list[str]
) -> bool | None:
    """Fill ``target`` with a minbase root of ``suite``; None for a suite not known here."""
    if suite not in STABLE_SUITES | ROLLING_SUITES:
        return None
    packages = ",".join(dict.fromkeys([*BASE_PACKAGES, *include]))
    run(
        [
            "mmdebstrap",
            "--variant=minbase",
            "--mode=root",
            f"--include={packages}",
            # mmdebstrap copies the bake host's resolv.conf and hostname in; an image keeps neither.
            '--customize-hook=rm -f "$1/etc/resolv.conf"; echo localhost > "$1/etc/hostname"',
            suite,
            target,
            *sources(suite, mirror or DEFAULT_MIRROR, security_mirror or DEFAULT_SECURITY_MIRROR),
        ],
        what=f"mmdebstrap {suite}",
        hint="check that the mirror is reachable from this host",
    )
    return True
