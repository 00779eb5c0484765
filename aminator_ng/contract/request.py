"""A bake's request: the base image, the packages, and the value of each ``[bake]`` setting,
declared here as the request's fields."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aminator_ng.contract.settings import Flag, Setting, declared, settings_of


@dataclass(frozen=True)
class BakeRequest:
    """One bake, as the operator asked for it: the base image, the packages, and the value of
    each ``[bake]`` setting, which is declared here (and nowhere else)."""

    base: str
    packages: tuple[str, ...]
    name_template: str | None = declared(
        str,
        None,
        "Image name template; fields {name} {version} {release} {arch} {suffix} ...",
        key="name",
        flags=(Flag(("-n", "--name"), metavar="TEMPLATE"),),
    )
    suffix: str | None = declared(
        str,
        None,
        "Name suffix (default: UTC time and bake id).",
        flags=(Flag(("-s", "--suffix"), metavar="TEXT"),),
    )
    tags: Mapping[str, str] = declared(
        dict,
        {},
        "Add a tag (repeatable); tags merge key by key over every layer.",
        flags=(Flag(("--tag",), metavar="KEY=VALUE"),),
    )
    preserve_on_error: bool = declared(
        bool,
        False,
        "Keep what a failed bake acquired, and print how to release it.",
        flag=True,
        negatable=False,
    )
    #: ``--repo`` specs as given: host directories of package files, or repositories as the
    #: bake's provisioner reads them.
    repositories: tuple[str, ...] = declared(
        list,
        (),
        "Add a repository for this bake only: a directory of package files, or a repository "
        "as the image's package manager takes one, a source line or a URL (repeatable).",
        key="repo",
        flags=(Flag(("--repo",), metavar="SPEC"),),
    )
    repository_keys: tuple[Path, ...] = declared(
        list,
        (),
        "A key file (OpenPGP, armored or binary) that signs the --repo source lines (repeatable).",
        key="repo_key",
        item=Path,
        flags=(Flag(("--repo-key",), metavar="FILE"),),
    )
    scan_allow: tuple[str, ...] = declared(
        list,
        (),
        "An image path (or shell pattern) where the secret scan accepts a secret (repeatable).",
        flags=(Flag(("--scan-allow",), metavar="PATH"),),
    )
    scan_host_traces: bool = declared(
        bool,
        True,
        "Fail when changed files hold the bake host's hostname, addresses or nameservers "
        "(on by default).",
        flag=True,
    )
    package_cache: bool = declared(
        bool,
        True,
        "Use the package lists and downloaded packages other bakes left in the package cache "
        "(on by default).",
        flag=True,
    )
    index_max_age: int = declared(
        int,
        3600,
        "How old the cached package lists may be before they are fetched again "
        "(default 3600; 0: every bake fetches them).",
        minimum=0,
        flags=(Flag(("--index-max-age",), metavar="SECONDS"),),
    )
    refresh: bool = declared(
        bool,
        False,
        "Fetch the package lists even when the cached ones are fresh.",
        flag=True,
        negatable=False,
    )
    root_volume_size: int | None = declared(
        int,
        None,
        "Make the image's root volume this many GiB, larger than the base's; its root "
        "partition and filesystem (ext2/3/4 or XFS) grow to fill it (default: the base's size).",
        minimum=1,
        flags=(Flag(("--root-volume-size",), metavar="GIB"),),
    )
    keep: int | None = declared(
        int,
        None,
        "Once the bake succeeds, keep the newest N images of its family and remove the older "
        "ones that nothing protects or uses (see images prune).",
        minimum=1,
        flags=(Flag(("--keep",), metavar="N"),),
    )
    dry_run: bool = declared(
        bool,
        False,
        "Check the request and print the plan: the base, the volume, the name, the tags, the "
        "cloud's plan and what --keep would remove; nothing is made.",
        flag=True,
        negatable=False,
    )
    install_timeout: int = declared(
        int,
        3600,
        "How long the install may take, in seconds, before the bake ends it (exit 1).",
        minimum=1,
        flags=(Flag(("--install-timeout",), metavar="SECONDS"),),
    )

    @classmethod
    def from_settings(
        cls, base: str, packages: Sequence[str], values: Mapping[str, Any]
    ) -> BakeRequest:
        """The request for ``packages`` on ``base``, with the ``[bake]`` settings' values (by
        setting name)."""
        return cls(base, tuple(packages), **{s.attribute: values[s.name] for s in settings_of(cls)})


#: The ``[bake]`` table: bake's options by their long names; all but ``base_ami`` are declared
#: where a bake carries them, in ``BakeRequest``.
BASE_AMI = Setting(
    "base_ami",
    str,
    None,
    "The base image: an id, or a name (the newest image with it).",
    flags=(
        Flag(("-b", "--base-ami", "--base-ami-name"), metavar="NAME_OR_ID"),
        Flag(("-B", "--base-ami-id"), "Base image id.", "ID"),
    ),
)
BAKE_SETTINGS = (BASE_AMI, *settings_of(BakeRequest))
