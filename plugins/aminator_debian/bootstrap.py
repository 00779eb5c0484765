"""Minimal Debian roots with mmdebstrap, for ``aminate base create``: main, updates and
security sources, ca-certificates."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from aminator_ng.api import BaseCreator, BootstrappedRoot, Flag, RequestError, declared, run

DEFAULT_MIRROR = "http://deb.debian.org/debian"
DEFAULT_SECURITY_MIRROR = "http://deb.debian.org/debian-security"
#: Debian releases with -updates and -security suites.
STABLE_SUITES = ("buster", "bullseye", "bookworm", "trixie", "forky")
ROLLING_SUITES = ("sid", "unstable")
SUITES = (*STABLE_SUITES, *ROLLING_SUITES)
BASE_PACKAGES = ["ca-certificates"]


@dataclass(frozen=True)
class DebianBaseOptions:
    """The options ``aminate base create`` takes for a Debian root."""

    suite: str = declared(
        str,
        "bookworm",
        "Distribution release.",
        choices=SUITES,
        flags=(Flag(("--suite",), metavar="SUITE"),),
    )
    mirror: str = declared(
        str, DEFAULT_MIRROR, "Package mirror.", flags=(Flag(("--mirror",), metavar="URL"),)
    )
    security_mirror: str = declared(
        str,
        DEFAULT_SECURITY_MIRROR,
        "Security updates mirror.",
        flags=(Flag(("--security-mirror",), metavar="URL"),),
    )
    include: tuple[str, ...] = declared(
        list,
        (),
        "Extra packages to install (comma-separated, repeatable).",
        flags=(Flag(("--include",), metavar="PKG,..."),),
    )


def sources(suite: str, mirror: str, security_mirror: str) -> list[str]:
    lines = [f"deb {mirror} {suite} main"]
    if suite in STABLE_SUITES:
        lines.append(f"deb {mirror} {suite}-updates main")
        lines.append(f"deb {security_mirror} {suite}-security main")
    return lines


class DebianBaseCreator(BaseCreator):
    """A minbase root of a Debian release, bootstrapped with mmdebstrap."""

    name = "debian"
    options = DebianBaseOptions

    def required_tools(self) -> list[str]:
        return ["mmdebstrap"]

    def bootstrap(self, target: Path, options: DebianBaseOptions) -> BootstrappedRoot:
        if options.suite not in SUITES:
            raise RequestError(
                f"unknown Debian suite {options.suite}",
                hint=f"the suites known: {' '.join(SUITES)}",
            )
        extra = [name for item in options.include for name in item.split(",") if name]
        packages = ",".join(dict.fromkeys([*BASE_PACKAGES, *extra]))
        suite = options.suite
        run(
            [
                "mmdebstrap",
                "--variant=minbase",
                "--mode=root",
                f"--include={packages}",
                # mmdebstrap copies the host's resolv.conf and hostname in; an image keeps neither.
                '--customize-hook=rm -f "$1/etc/resolv.conf"; echo localhost > "$1/etc/hostname"',
                suite,
                target,
                *sources(suite, options.mirror, options.security_mirror),
            ],
            what=f"mmdebstrap {suite}",
            hint="check that the mirror is reachable from this host",
        )
        return BootstrappedRoot(f"{suite} base", {"suite": suite})
