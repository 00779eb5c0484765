"""Hook implementations of the tagging finalizer."""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import socket
import string
from collections.abc import Mapping
from dataclasses import dataclass

from aminator_ng.api import (
    BakeFacts,
    ConfigError,
    declared,
    hookimpl,
)

DEFAULT_TEMPLATE = "{name}-{version}-{release}-{arch}-{suffix}"
TEMPLATE_FIELDS = (
    "name",
    "epoch",
    "version",
    "release",
    "arch",
    "suffix",
    "base_name",
    "base_id",
    "bake_id",
    "date",
    "distro",
)


@dataclass(frozen=True)
class TaggingSettings:
    """The ``[plugins.NAME]`` table of this plugin (``tagging`` as it is installed)."""

    creator: str | None = declared(
        str, None, "the creator tag (default: the user who ran the bake, @ the host name)"
    )


@hookimpl
def aminator_settings() -> type[TaggingSettings]:
    return TaggingSettings


def default_suffix(facts: BakeFacts) -> str:
    """A UTC timestamp to the second, and four hex characters of the bake id."""
    return f"{facts.started:%Y%m%d%H%M%S}-{facts.bake_id[:4]}"


def template_values(facts: BakeFacts) -> dict[str, str]:
    first = facts.packages[0]
    return {
        "name": first.name,
        "epoch": first.epoch,
        "version": first.version,
        "release": first.release,
        "arch": first.arch,
        "suffix": facts.suffix if facts.suffix is not None else default_suffix(facts),
        "base_name": facts.base.name,
        "base_id": facts.base.image_id,
        "bake_id": facts.bake_id,
        "date": f"{facts.started:%Y%m%d}",
        "distro": facts.distro.os_id,
    }


def render_name(template: str, values: Mapping[str, str]) -> str:
    formatter = string.Formatter()
    try:
        parsed = list(formatter.parse(template))
    except ValueError as exc:
        raise ConfigError(f"bad name template {template!r}: {exc}") from exc
    name = ""
    after_empty_field = False
    for literal, field, spec, conversion in parsed:
        # An empty field (a native package's release) must not leave "--" or a trailing "-";
        # hyphens the operator wrote elsewhere are kept as written.
        if after_empty_field and literal.startswith("-") and (not name or name.endswith("-")):
            literal = literal[1:]
        name += literal
        after_empty_field = False
        if field is None:
            continue
        if field not in values:
            raise ConfigError(
                f"unknown field {{{field}}} in name template {template!r}",
                hint="fields: " + ", ".join("{" + f + "}" for f in TEMPLATE_FIELDS),
            )
        try:
            value = formatter.format_field(
                formatter.convert_field(values[field], conversion), spec or ""
            )
        except ValueError as exc:
            raise ConfigError(f"bad name template {template!r}: {exc}") from exc
        after_empty_field = value == ""
        name += value
    if after_empty_field and name.endswith("-"):
        name = name[:-1]
    return name


@hookimpl
def aminator_check_name_template(template: str) -> None:
    render_name(template, dict.fromkeys(TEMPLATE_FIELDS, "x"))


@hookimpl(trylast=True)
def aminator_image_name(facts: BakeFacts) -> str | None:
    return render_name(facts.name_template or DEFAULT_TEMPLATE, template_values(facts))


@hookimpl(trylast=True)
def aminator_image_description(facts: BakeFacts) -> str | None:
    first = facts.packages[0]
    return (
        f"name={first.name}, arch={first.arch}, ancestor_name={facts.base.name}, "
        f"ancestor_id={facts.base.image_id}, "
        f"ancestor_version={facts.base.tags.get('appversion', '')}"
    )


def manifest_digest(facts: BakeFacts) -> str:
    canonical = json.dumps([m.as_dict() for m in facts.manifest], sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def creator(facts: BakeFacts) -> str:
    configured = facts.settings.of(TaggingSettings).creator
    if configured:
        return configured
    user = os.environ.get("SUDO_USER") or getpass.getuser()
    return f"{user}@{socket.gethostname()}"


@hookimpl
def aminator_image_tags(facts: BakeFacts) -> Mapping[str, str]:
    first = facts.packages[0]
    appversion = "-".join(part for part in (first.name, first.version, first.release) if part)
    return {
        "appversion": appversion,
        "base_image_id": facts.base.image_id,
        "base_image_name": facts.base.name,
        "creator": creator(facts),
        "creation_time": facts.started.isoformat().replace("+00:00", "Z"),
        "bake_id": facts.bake_id,
        "aminator_ng_version": facts.engine_version,
        "package_count": str(len(facts.manifest)),
        "manifest_sha256": manifest_digest(facts),
    }
