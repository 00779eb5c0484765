"""The secret scan: what the bake added or changed in the image, searched for private keys,
cloud credentials, tokens and traces of the bake host, before the snapshot.

"Changed by the bake" is an inode change time at or after the bake's start, which the kernel
sets and no package can set back. Only the image's root filesystem is walked (not the bake's
/dev, /run or /sys), without following a symlink, each file opened beside its directory's
descriptor. The patterns are this module's own: each is a format with a fixed shape (a PEM
header, a key id's prefix, a credential's name next to a value of the credential's length), so
that a finding is worth failing a bake for.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import re
import stat
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from aminator_ng.contract.model import ShippedFile


@dataclass(frozen=True)
class Kind:
    """One kind of secret or trace: its name in findings, its pattern, and the literal strings
    one of which every match contains. Only a file holding an anchor is searched with the
    pattern, so that the scan reads most bytes at the speed of a substring search."""

    name: str
    pattern: bytes
    anchors: tuple[bytes, ...]


_AWS = (b"aws", b"AWS", b"Aws")
#: What the scan looks for. No pattern captures the secret: a finding names file and kind only.
SECRET_KINDS: tuple[Kind, ...] = (
    # A key, not a program that parses keys: the header followed by a body.
    Kind(
        "a PEM private key",
        rb"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----\r?\n"
        rb"(?:[A-Za-z-]+: [^\r\n]*\r?\n)*(?:\r?\n)?[A-Za-z0-9+/=]{40,}",
        (b"PRIVATE KEY-----",),
    ),
    Kind("a PuTTY private key", rb"PuTTY-User-Key-File-[0-9]+: ", (b"PuTTY-User-Key-File-",)),
    Kind(
        "an AWS access key id",
        rb"(?<![A-Z0-9])(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}(?![A-Za-z0-9])",
        (b"AKIA", b"ASIA", b"ABIA", b"ACCA"),
    ),
    Kind(
        "an AWS secret access key",
        rb"(?i:aws_?secret_?(?:access_?)?key)[\"']?\s*[:=]\s*[\"']?"
        rb"[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+])",
        _AWS,
    ),
    Kind(
        "an AWS session token",
        rb"(?i:aws_?(?:session|security)_?token)[\"']?\s*[:=]\s*[\"']?[A-Za-z0-9/+=]{100,}",
        _AWS,
    ),
    Kind(
        "a GitHub token",
        rb"(?<![A-Za-z0-9_])(?:gh[pousr]_[A-Za-z0-9]{36}|github_pat_[A-Za-z0-9_]{82})"
        rb"(?![A-Za-z0-9_])",
        (b"ghp_", b"gho_", b"ghu_", b"ghs_", b"ghr_", b"github_pat_"),
    ),
    Kind(
        "a GitLab token",
        rb"(?<![A-Za-z0-9_-])glpat-[A-Za-z0-9_-]{20}(?![A-Za-z0-9_-])",
        (b"glpat-",),
    ),
    Kind("a Slack token", rb"(?<![A-Za-z0-9])xox[abposr]-[0-9]+-[A-Za-z0-9-]{10,}", (b"xox",)),
    Kind(
        "a Slack webhook URL",
        rb"https://hooks\.slack\.com/services/T[A-Za-z0-9_]+/B[A-Za-z0-9_]+/[A-Za-z0-9_]{16,}",
        (b"hooks.slack.com",),
    ),
    Kind("a Stripe live key", rb"(?<![A-Za-z0-9_])[rs]k_live_[A-Za-z0-9]{24,}", (b"k_live_",)),
    Kind(
        "a Google API key",
        rb"(?<![A-Za-z0-9_-])AIza[0-9A-Za-z_-]{35}(?![A-Za-z0-9_-])",
        (b"AIza",),
    ),
    Kind("an npm token", rb"(?<![A-Za-z0-9_])npm_[A-Za-z0-9]{36}(?![A-Za-z0-9_])", (b"npm_",)),
    Kind("a PyPI token", rb"pypi-AgEIcHlwaS5vcmc[A-Za-z0-9_-]{50,}", (b"pypi-AgEIcHlwaS5vcmc",)),
)
#: Larger files are not read; the result says which were left out.
MAX_SCANNED_BYTES = 64 << 20
#: Digests a package database may record for a file.
DIGEST_ALGORITHMS = ("md5", "sha1", "sha256", "sha512")


@dataclass(frozen=True)
class HostTraces:
    """What of the bake host must not end up in the image."""

    hostnames: tuple[str, ...] = ()
    addresses: tuple[str, ...] = ()
    nameservers: tuple[str, ...] = ()

    def kinds(self) -> list[Kind]:
        found: list[Kind] = []
        for name in self.hostnames:
            word = re.escape(name.encode())
            found.append(
                Kind(
                    f"the bake host's hostname {name}",
                    rb"(?i:(?<![A-Za-z0-9-])%s(?![A-Za-z0-9-]))" % word,
                    tuple(dict.fromkeys(v.encode() for v in (name, name.lower(), name.upper()))),
                )
            )
        for label, addresses in (
            ("the bake host's address", self.addresses),
            ("the bake host's nameserver", self.nameservers),
        ):
            for address in addresses:
                literal = address.encode()
                found.append(
                    Kind(
                        f"{label} {address}",
                        rb"(?<![0-9A-Fa-f.:])%s(?![0-9A-Fa-f.:])" % re.escape(literal),
                        (literal,),
                    )
                )
        return found


@dataclass(frozen=True)
class FoundInFile:
    """One kind of secret or trace in one file, with the file's digests (never the secret)."""

    path: str
    kind: str
    digests: Mapping[str, str]
    is_host_trace: bool = False


@dataclass(frozen=True)
class Finding:
    """A finding as the bake reports it: a failure, or a warning saying why it is one."""

    path: str
    kind: str
    #: Empty for a finding that fails the bake; else why it does not.
    warning: str = ""

    @property
    def fails(self) -> bool:
        return not self.warning

    def describe(self) -> str:
        text = f"{self.path} holds {self.kind}"
        return f"{text} ({self.warning})" if self.warning else text

    def as_dict(self) -> dict[str, str | bool]:
        return {"path": self.path, "kind": self.kind, "fails": self.fails, "warning": self.warning}


@dataclass(frozen=True)
class ScanReport:
    #: How many changed files were read.
    scanned: int
    findings: tuple[Finding, ...]
    #: Changed files too large to read.
    too_large: tuple[str, ...] = ()

    @property
    def failures(self) -> list[Finding]:
        return [f for f in self.findings if f.fails]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if not f.fails]

    def as_dict(self) -> dict[str, object]:
        return {
            "files": self.scanned,
            "findings": [f.as_dict() for f in self.findings],
            "too_large": list(self.too_large),
        }


class Scanner:
    """The kinds, each pattern compiled once."""

    def __init__(self, kinds: Sequence[Kind]) -> None:
        self.kinds = [(kind, re.compile(kind.pattern)) for kind in kinds]

    def kinds_in(self, data: bytes) -> list[str]:
        return [
            kind.name
            for kind, expression in self.kinds
            if any(anchor in data for anchor in kind.anchors) and expression.search(data)
        ]


def changed_files(
    root: Path, since: float, wanted: Callable[[os.stat_result], bool] = lambda _: True
) -> Iterator[tuple[str, int, os.stat_result]]:
    """The regular files of the image's root filesystem changed at or after ``since`` (and
    ``wanted``, by their status): their path inside the image, a descriptor open for reading
    (the caller closes it) and status.

    Each directory is opened beside its parent's descriptor (never by a path, never through a
    symlink) and read with scandir, whose entry types spare a stat of every symlink and
    device: the walk reads the whole tree of an image that has just been mounted. Depth first,
    so that only one descriptor per level is open."""
    root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield from _changed_below("", root_fd, os.fstat(root_fd).st_dev, since, wanted)
    finally:
        os.close(root_fd)


def _changed_below(
    inside: str,
    dir_fd: int,
    root_device: int,
    since: float,
    wanted: Callable[[os.stat_result], bool],
) -> Iterator[tuple[str, int, os.stat_result]]:
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
    with os.scandir(dir_fd) as listing:
        entries = list(listing)
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            # Stay on the image's filesystem: /dev, /run and /sys are the bake's own mounts.
            if entry.stat(follow_symlinks=False).st_dev != root_device:
                continue
            subdirectory = os.open(entry.name, flags | os.O_DIRECTORY, dir_fd=dir_fd)
            try:
                yield from _changed_below(
                    f"{inside}/{entry.name}", subdirectory, root_device, since, wanted
                )
            finally:
                os.close(subdirectory)
        elif entry.is_file(follow_symlinks=False):
            info = entry.stat(follow_symlinks=False)
            if not stat.S_ISREG(info.st_mode) or info.st_ctime < since or not wanted(info):
                continue
            yield (
                f"{inside}/{entry.name}",
                os.open(entry.name, flags | os.O_NONBLOCK, dir_fd=dir_fd),
                info,
            )


def scan_changed_files(
    root: Path, since: float, scanner: Scanner, host_trace_kinds: Collection[str] = ()
) -> tuple[int, list[FoundInFile], list[str]]:
    """Every finding in the files the bake changed: (files read, findings, files too large)."""
    scanned = 0
    found: list[FoundInFile] = []
    too_large: list[str] = []
    for path, fd, info in changed_files(root, since):
        with os.fdopen(fd, "rb") as file:
            if info.st_size > MAX_SCANNED_BYTES:
                too_large.append(path)
                continue
            data = file.read(info.st_size)
        scanned += 1
        kinds = scanner.kinds_in(data)
        if not kinds:
            continue
        digests = {name: hashlib.new(name, data).hexdigest() for name in DIGEST_ALGORITHMS}
        found += [FoundInFile(path, kind, digests, kind in host_trace_kinds) for kind in kinds]
    return scanned, found, too_large


def is_allowed(path: str, allowed: Sequence[str]) -> bool:
    """Whether an allow-list entry (an image path, or a shell pattern such as ``/opt/app/*``)
    accepts ``path``."""
    return any(path == entry or fnmatch.fnmatchcase(path, entry) for entry in allowed)


def judge(
    found: Sequence[FoundInFile],
    *,
    allowed: Sequence[str],
    kept_by_rules: Mapping[str, str],
    shipped: Mapping[str, ShippedFile],
    from_base_repositories: Collection[str],
) -> list[Finding]:
    """Which findings fail the bake. A warning instead: an allow-listed file; what a hygiene
    rule the operator switched off would have removed (``kept_by_rules``: path to rule); a
    file a package of the base's own repositories ships unchanged. A host trace in a file any
    package ships unchanged is the package's, not the host's, and is no finding."""
    judged: list[Finding] = []
    for item in found:
        owner = shipped.get(item.path)
        unchanged = owner is not None and item.digests.get(owner.algorithm) == owner.digest
        if item.is_host_trace and unchanged:
            continue
        if is_allowed(item.path, allowed):
            warning = "allow-listed"
        elif item.path in kept_by_rules:
            warning = f"the hygiene rule {kept_by_rules[item.path]} is switched off"
        elif unchanged and owner is not None and owner.package in from_base_repositories:
            warning = f"shipped unchanged by {owner.package}, from the base's repositories"
        else:
            warning = ""
        judged.append(Finding(item.path, item.kind, warning))
    return judged
