"""What rpm and dnf know of installed files and where their packages came from, for the
engine's secret scan: the digests packages shipped (the rpm database's file digests), and which
repository gave each package a bake installed (dnf's transaction table)."""

from __future__ import annotations

import re
from collections.abc import Sequence

from aminator_ng.api import Chroot, ShippedFile

#: path, digest algorithm (rpm's number), digest, package; one line per file of every package.
FILES_FORMAT = "[%{FILENAMES}\\t%{=FILEDIGESTALGO}\\t%{FILEDIGESTS}\\t%{=NAME}\\n]"
#: rpm's numbers for the digest algorithms (RFC 4880's hash ids); packages without one are md5.
DIGEST_ALGORITHMS = {"1": "md5", "2": "sha1", "8": "sha256", "9": "sha384", "10": "sha512"}
#: The repository dnf names for a package file given on its command line.
COMMAND_LINE = "@commandline"
#: A row of dnf's transaction table: name, arch, version, repository, size.
_TRANSACTION_ROW = re.compile(r"^ (\S+)\s+\S+\s+\S+\s+(\S+)\s+[0-9.]+\s*[kMG]?i?B?\s*$")


def shipped_files(chroot: Chroot, paths: Sequence[str]) -> dict[str, ShippedFile]:
    wanted = set(paths)
    if not wanted:
        return {}
    result = chroot.run(
        ["rpm", "--query", "--all", "--queryformat", FILES_FORMAT], what="read the file digests"
    )
    found: dict[str, ShippedFile] = {}
    for line in result.stdout.splitlines():
        fields = line.split("\t")
        if len(fields) != 4 or fields[0] not in wanted or not fields[2]:
            continue
        path, algorithm, digest, package = fields
        found[path] = ShippedFile(path, package, DIGEST_ALGORITHMS.get(algorithm, "md5"), digest)
    return found


def from_base_repositories(transaction: str, added_prefix: str) -> set[str]:
    """The packages dnf's transaction table shows coming from one of the image's own
    repositories: not a package file, not a repository the bake added."""
    from_base: set[str] = set()
    for line in transaction.splitlines():
        match = _TRANSACTION_ROW.match(line)
        if match is None:
            continue
        name, repository = match.groups()
        if repository != COMMAND_LINE and not repository.startswith(added_prefix):
            from_base.add(name)
    return from_base
