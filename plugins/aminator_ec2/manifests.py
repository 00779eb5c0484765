"""Where the EC2 backend keeps a baked AMI's package manifest: in the bake host's records under
the engine's home, ``<home>/ec2/manifests/<region>/<ami-id>.json``, so that ``images show``
lists what the AMIs this host baked hold (EC2 keeps no such thing)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from aminator_ng.api import ManifestEntry, write_whole

SUFFIX = ".json"


@dataclass(frozen=True)
class ManifestRecords:
    """The manifests of the AMIs this host baked."""

    #: ``<home>/ec2/manifests``: a directory per region.
    directory: Path

    def path(self, region: str, image_id: str) -> Path:
        return self.directory / region / f"{image_id}{SUFFIX}"

    @contextlib.contextmanager
    def stored(
        self, region: str, image_id: str, manifest: Sequence[ManifestEntry]
    ) -> Iterator[None]:
        """The manifest written for the context; removed if the context fails."""
        path = self.path(region, image_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps([entry.as_dict() for entry in manifest], indent=1)
        write_whole(path, text.encode())
        try:
            yield
        except BaseException:
            path.unlink(missing_ok=True)
            raise

    def read(self, region: str, image_id: str) -> list[ManifestEntry]:
        """The manifest of an AMI this host baked; [] for any other."""
        try:
            entries = json.loads(self.path(region, image_id).read_text())
        except FileNotFoundError:
            return []
        return [ManifestEntry(**entry) for entry in entries]

    def forget(self, region: str, image_id: str) -> None:
        self.path(region, image_id).unlink(missing_ok=True)
