"""What commands print: JSON on stdout only (``--output json``), or text for people."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import click

from aminator_ng.contract.model import Image, ManifestEntry
from aminator_ng.errors import AminatorError, ImageKeptError
from aminator_ng.pipeline.bake import Bake, BakeResult, KeptResource
from aminator_ng.pipeline.retention import REMOVE, REMOVED, Decision
from aminator_ng.pipeline.sbom import Sbom

log = logging.getLogger("aminator_ng")


def print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, sort_keys=False)
    sys.stdout.write("\n")
    sys.stdout.flush()


def error_object(
    error: AminatorError | None,
    message: str,
    exit_code: int,
    *,
    bake_id: str | None = None,
    log_path: str | None = None,
    kept: Sequence[KeptResource] = (),
) -> dict[str, Any]:
    return {
        "error": {
            "message": message,
            "hint": error.hint if error else None,
            "step": error.step if error else None,
        },
        "exit_code": exit_code,
        "bake_id": bake_id,
        "log_path": log_path,
        "preserved": [k.as_dict() for k in kept],
        # What a late failure kept: an image made whole before a copy failed, say.
        "images": error.images if isinstance(error, ImageKeptError) else {},
    }


def bake_text(result: BakeResult) -> str:
    packages = ", ".join(f"{p.name} {p.full_version} ({p.arch})" for p in result.packages)
    lines = [
        f"image_id:  {result.image.image_id}",
        f"name:      {result.image.name}",
        f"base:      {result.base.image_id} ({result.base.name})",
        *(f"copy:      {image_id} in {where}" for where, image_id in result.image.copies.items()),
        f"packages:  {packages}",
        f"installed: {len(result.manifest)} package{'' if len(result.manifest) == 1 else 's'}"
        " in the image",
        f"duration:  {result.duration_s:.1f} s",
    ]
    if result.log_path:
        lines.append(f"log:       {result.log_path}")
    return "\n".join(lines)


def images_text(images: Sequence[Image]) -> str:
    if not images:
        return "no images"
    rows = [("IMAGE_ID", "NAME", "CREATED")]
    rows += [(i.image_id, i.name, i.created.isoformat().replace("+00:00", "Z")) for i in images]
    widths = [max(len(row[col]) for row in rows) for col in range(2)]
    return "\n".join(f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]}" for r in rows)


def plan_text(plan: Mapping[str, Any]) -> str:
    """A dry run's plan, one fact a line; the cloud's own part as it gives it."""
    base = plan["base"]
    size = plan["root_volume_size_bytes"]
    lines = [
        "dry run: nothing was made",
        f"base:      {base['image_id']} ({base['name']})",
        f"packages:  {' '.join(plan['packages'])}",
        f"name:      {plan['name']}" + ("" if plan["name_is_final"] else " (before the install)"),
        f"volume:    {size / 2**30:g} GiB" if size else "volume:    the base's size",
        *(f"tag:       {key}={value}" for key, value in plan["tags"].items()),
        *(
            f"would prune: {d['image_id']} ({d['name']}): {d['reason']}"
            for d in plan["would_prune"]
        ),
        *(
            f"{plan['cloud']}: {key}: {json.dumps(value)}"
            for key, value in plan[plan["cloud"]].items()
        ),
    ]
    return "\n".join(lines)


def prune_text(decisions: Sequence[Decision], dry_run: bool) -> str:
    if not decisions:
        return "no image is in a family"
    lines = [
        ("would remove" if dry_run and d.action == REMOVE else d.action)
        + f" {d.image.image_id} ({d.image.name}, {d.family})"
        + ("" if d.action in (REMOVE, REMOVED) else f": {d.reason}")
        for d in decisions
    ]
    return "\n".join(lines)


def image_text(
    image: Image,
    manifest: Sequence[ManifestEntry],
    lineage: Sequence[Mapping[str, str | None]] = (),
    disk_usage: int | None = None,
) -> str:
    data = image.as_dict()
    lines = [f"{key}: {value}" for key, value in data.items() if key != "tags"]
    if disk_usage is not None:
        lines.append(f"on disk: {disk_usage / 2**20:.1f} MiB")
    chain = [image.name] + [f"{a['name'] or '(removed)'} ({a['image_id']})" for a in lineage]
    lines.append(f"lineage: {' <- '.join(chain)}")
    lines.append("tags:")
    lines += [f"  {key}: {value}" for key, value in sorted(image.tags.items())]
    names = ", ".join(f"{m.name} {m.version}" for m in manifest[:5])
    more = f", ... ({len(manifest) - 5} more)" if len(manifest) > 5 else ""
    lines.append(f"packages: {len(manifest)} installed" + (f": {names}{more}" if names else ""))
    return "\n".join(lines)


def json_value(value: Any) -> Any:
    """A setting's value as JSON can hold it."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple | list):
        return [json_value(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): json_value(v) for k, v in value.items()}
    return value


def toml_value(value: Any) -> str:
    """A setting's value as it would be written in a config file."""
    if value is None:
        return "(not set)"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + "}"
    return json.dumps(json_value(value))


def config_text(
    files: Sequence[Path], environment: str | None, rows: Sequence[tuple[str, Any, str]]
) -> str:
    lines = [f"# files read: {', '.join(map(str, files)) or 'none'}"]
    lines.append(f"# environment: {environment or 'none'}")
    shown = [(key, toml_value(value), source) for key, value, source in rows]
    width = max((len(key) + len(value) for key, value, _ in shown), default=0) + 3
    lines += [f"{f'{key} = {value}':<{width}}  # {source}" for key, value, source in shown]
    return "\n".join(lines)


def describe(error: BaseException) -> str:
    """One line for an error; an engine error is prefixed with the step it failed in."""
    if not isinstance(error, AminatorError):
        return str(error) or type(error).__name__
    if error.step and not error.message.startswith(f"{error.step}:"):
        return f"{error.step}: {error.message}"
    return error.message


def report_failure(
    message: str,
    error: AminatorError | None,
    code: int,
    as_json: bool,
    runner: Bake | None,
    *,
    debug: bool = False,
    hint: str | None = None,
) -> int:
    """Print a failure: one ``aminate: error:`` line (and a hint) on stderr, the JSON failure
    object with ``--output json``, and how to release what ``--preserve-on-error`` kept;
    returns the exit code."""
    kept = runner.kept if runner is not None and runner.preserved else []
    if debug:
        log.exception("%s", message)
    if as_json:
        data = error_object(
            error,
            message,
            code,
            bake_id=runner.bake_id if runner else None,
            log_path=str(runner.log_path) if runner and runner.log_path else None,
            kept=list(reversed(kept)),
        )
        if hint and not data["error"]["hint"]:
            data["error"]["hint"] = hint
        print_json(data)
    click.echo(f"aminate: error: {message}", err=True)
    shown_hint = (error.hint if error else None) or hint
    if shown_hint and not as_json:
        click.echo(f"hint: {shown_hint}", err=True)
    if kept:
        click.echo("kept, as --preserve-on-error asked; release in this order with:", err=True)
        for resource in reversed(kept):
            click.echo(
                f"  {resource.release}    # {resource.kind} {resource.resource_id}", err=True
            )
        click.echo("or release all of them with: aminate cleanup --preserved", err=True)
    return code


def sbom_text(path: str | None, sbom: Sbom | None) -> str:
    if path is None:
        return "sbom: none"
    if sbom is None:
        return f"sbom: {path} (unreadable)"
    plural = "" if sbom.component_count == 1 else "s"
    return f"sbom: {path} ({sbom.component_count} component{plural}, sha256 {sbom.sha256})"
