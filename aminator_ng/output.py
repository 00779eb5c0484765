"""What commands print: JSON on stdout only (``--output json``), or text for people."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

from aminator_ng.bake import BakeResult, KeptResource
from aminator_ng.errors import AminatorError
from aminator_ng.model import Image, ManifestEntry


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
    }


def bake_text(result: BakeResult) -> str:
    packages = ", ".join(f"{p.name} {p.full_version} ({p.arch})" for p in result.packages)
    lines = [
        f"image_id:  {result.image.image_id}",
        f"name:      {result.image.name}",
        f"base:      {result.base.image_id} ({result.base.name})",
        f"packages:  {packages}",
        f"installed: {len(result.manifest)} packages in the image",
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


def image_text(image: Image, manifest: Sequence[ManifestEntry]) -> str:
    data = image.as_dict()
    lines = [f"{key}: {value}" for key, value in data.items() if key != "tags"]
    lines.append("tags:")
    lines += [f"  {key}: {value}" for key, value in sorted(image.tags.items())]
    lines.append(f"packages: {len(manifest)} installed")
    return "\n".join(lines)
