"""What went wrong in an ``apt-get install``, told from its own output.

apt prints why it cannot satisfy a request (the unmet dependencies) on stdout and its verdict
(``E: ...``) on stderr; dpkg reports failing maintainer scripts on stderr. Both are read.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from aminator_ng.api import BakeError, Completed, RequestError

_UNLOCATABLE = re.compile(r"^E: Unable to locate package (\S+)", re.MULTILINE)
_NO_CANDIDATE = re.compile(r"^E: Package '([^']+)' has no installation candidate", re.MULTILINE)
_NO_VERSION = re.compile(r"^E: Version '([^']+)' for '([^']+)' was not found", re.MULTILINE)
_UNMET_HEADING = "The following packages have unmet dependencies:"
_UNAUTHENTICATED = re.compile(
    r"^WARNING: The following packages cannot be authenticated!\n((?:  .*\n?)+)", re.MULTILINE
)
_FETCH_FAILED = re.compile(r"^E: Failed to fetch (\S+)\s+(.*)$", re.MULTILINE)
_DPKG_FAILED = re.compile(r"dpkg: error processing (?:package|archive) (\S+) \(")
_SCRIPT_FAILED = re.compile(
    r"(?:installed|new) \S+ package ((?:pre|post)-(?:installation|removal) script)"
    r" subprocess returned error exit status (\d+)"
)
_DPKG_RETURNED = "E: Sub-process /usr/bin/dpkg returned an error code"
#: At most this much of apt's reasons goes into the one-line error.
MAX_REASON = 400


def unmet_dependencies(stdout: str) -> list[str]:
    """apt's lines under "The following packages have unmet dependencies:", one per unmet
    dependency, each naming its package (``nginx : Depends: nginx-common (< 1.22) but 1.22.1 is
    to be installed``)."""
    _, found, rest = stdout.partition(_UNMET_HEADING)
    if not found:
        return []
    reasons: list[str] = []
    package = ""
    for line in rest.splitlines()[1:]:
        if not line.startswith(" "):
            break
        name, colon, reason = line.strip().partition(" : ")
        if colon:
            package = name
        else:
            reason = line.strip()
        reasons.append(f"{package} : {' '.join(reason.split())}")
    return reasons


def install_failure(result: Completed, names: Sequence[str]) -> Exception | None:
    """The error of a finished ``apt-get install``, or None when it succeeded: RequestError
    (exit 2) when the request cannot be satisfied, BakeError (exit 1) when the install failed."""
    if result.returncode == 0:
        return None
    stdout, stderr = result.stdout, result.stderr
    text = f"{stdout}\n{stderr}"
    if version := _NO_VERSION.search(text):
        return RequestError(
            f"version {version.group(1)} of package {version.group(2)} not found in the "
            "image's repositories",
            hint="check the version (apt-cache policy NAME lists them), or add a repository",
        )
    for pattern in (_UNLOCATABLE, _NO_CANDIDATE):
        if match := pattern.search(text):
            return RequestError(
                f"package not found in the image's repositories: {match.group(1)}",
                hint="check the name, or add a repository",
            )
    if unmet := unmet_dependencies(stdout):
        return RequestError(
            f"cannot install {', '.join(names)}: {'; '.join(unmet)[:MAX_REASON]}",
            hint="a dependency cannot be met from the image's repositories",
        )
    if unauthenticated := _UNAUTHENTICATED.search(text):
        packages = " ".join(unauthenticated.group(1).split())
        return RequestError(
            f"packages cannot be authenticated: {packages}",
            hint="give the repository's signing key with --repo-key",
        )
    if fetch := _FETCH_FAILED.search(text):
        return BakeError(
            f"cannot download {fetch.group(1)}: {' '.join(fetch.group(2).split())}",
            hint="the image's apt sources must be reachable from this host",
        )
    if _DPKG_FAILED.search(text) or _DPKG_RETURNED in text:
        return _package_failure(result, names)
    errors = [line.strip() for line in text.splitlines() if line.startswith("E: ")]
    return BakeError(
        f"apt-get install of {', '.join(names)} failed: "
        f"{'; '.join(errors)[:MAX_REASON] or f'exit status {result.returncode}'}",
        hint="see the bake log",
    )


def _package_failure(result: Completed, names: Sequence[str]) -> BakeError:
    """Name the package whose install failed, and why, from dpkg's messages."""
    text = f"{result.stdout}\n{result.stderr}"
    failed = _DPKG_FAILED.search(text)
    script = _SCRIPT_FAILED.search(text)
    package = failed.group(1) if failed else ", ".join(names)
    if script:
        reason = f"its {script.group(1)} returned exit status {script.group(2)}"
    elif failed and (detail := text[failed.end() :].split("\n", 2)[1:2]) and detail[0].strip():
        # dpkg's reason is the indented line after "dpkg: error processing ...:".
        reason = detail[0].strip()
    else:
        reason = f"apt-get exited {result.returncode}"
    return BakeError(f"installing package {package} failed: {reason}", hint="see the bake log")
