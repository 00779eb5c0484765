"""The baked image's software bill of materials: what a bake, the CLI and the image's tags know
of it. The document itself is built by ``aminator_ng.pipeline.sbom_document`` (CycloneDX 1.6 JSON,
checked against the schema), imported only by a bake: with the schema check, loading it takes
a fifth of a second.

The SBOM is built before the snapshot (its digest goes into the image's tags at registration),
so it names the image but cannot carry the image id.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from aminator_ng.contract.cloud import CloudBackend
    from aminator_ng.contract.model import Image

log = logging.getLogger(__name__)

COMPONENTS_TAG = "sbom_components"
DIGEST_TAG = "sbom_sha256"
DOCUMENT_MODULE = "aminator_ng.pipeline.sbom_document"


@dataclass(frozen=True)
class Sbom:
    """An image's SBOM: the validated JSON, and what the image's tags say of it."""

    data: bytes
    component_count: int
    #: Hex SHA-256 of ``data``.
    sha256: str

    def tags(self) -> dict[str, str]:
        return {COMPONENTS_TAG: str(self.component_count), DIGEST_TAG: self.sha256}

    @classmethod
    def from_data(cls, data: bytes) -> Sbom:
        """The summary of a stored SBOM; ValueError when it is not a CycloneDX JSON document."""
        document = json.loads(data)
        if not isinstance(document, dict) or document.get("bomFormat") != "CycloneDX":
            raise ValueError("not a CycloneDX JSON document")
        components = document.get("components", [])
        count = len(components) if isinstance(components, list) else 0
        return cls(data, count, hashlib.sha256(data).hexdigest())


def prepare_meanwhile() -> None:
    """Load the document's builder and schema check in a thread of its own, while the bake waits
    for the package manager: the ``sbom`` step then finds them loaded (or waits for the import
    to finish)."""

    def load() -> None:
        importlib.import_module(DOCUMENT_MODULE).schema_checker()

    threading.Thread(target=load, name="load-sbom-builder", daemon=True).start()


def stored_sbom(cloud: CloudBackend, image: Image) -> Sbom | None:
    """The summary of the SBOM stored with the image; None (and a warning) when it is unreadable."""
    data = cloud.image_sbom(image.image_id)
    if data is None:
        return None
    try:
        return Sbom.from_data(data)
    except ValueError as exc:
        log.warning("the SBOM of image %s is not CycloneDX JSON: %s", image.image_id, exc)
        return None
