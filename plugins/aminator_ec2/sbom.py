"""Where the EC2 backend keeps a baked AMI's SBOM: in the bake host's records under the engine's
home, ``<home>/ec2/sboms/<region>/<ami-id>.cdx.json``, and, with ``sbom_bucket`` set, in S3 at
``s3://<bucket>/<sbom_prefix><ami-id>.cdx.json`` for everyone else who needs it."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aminator_ec2.aws import call
from aminator_ng.api import AminatorError, CloudError, write_whole

log = logging.getLogger(__name__)

#: CycloneDX's media type for its JSON format.
MEDIA_TYPE = "application/vnd.cyclonedx+json"
SUFFIX = ".cdx.json"


@dataclass(frozen=True)
class SbomRecords:
    """The SBOMs of the AMIs this host baked, and where else they go."""

    #: ``<home>/ec2/sboms``: a directory per region.
    directory: Path
    #: The S3 bucket that receives a copy of each; "" for none.
    bucket: str = ""
    prefix: str = "sboms/"

    def path(self, region: str, image_id: str) -> Path:
        return self.directory / region / f"{image_id}{SUFFIX}"

    def key(self, image_id: str) -> str:
        return f"{self.prefix}{image_id}{SUFFIX}"

    def url(self, image_id: str) -> str:
        return f"s3://{self.bucket}/{self.key(image_id)}"

    def read(self, region: str, image_id: str) -> bytes | None:
        try:
            return self.path(region, image_id).read_bytes()
        except FileNotFoundError:
            return None

    def location(self, region: str, image_id: str) -> str | None:
        """The S3 URL when a bucket is set, else the path; None for an AMI whose SBOM this host
        does not hold (one baked elsewhere, or a base)."""
        path = self.path(region, image_id)
        if not path.is_file():
            return None
        return self.url(image_id) if self.bucket else str(path)

    @contextlib.contextmanager
    def stored(self, s3: Any, region: str, image_id: str, data: bytes) -> Iterator[None]:
        """The SBOM written here and, with a bucket, put in S3; both removed again if the
        context ends with an error (each removal is arranged before its write, so that a signal
        in between leaves nothing behind)."""
        path = self.path(region, image_id)
        with contextlib.ExitStack() as undo:
            undo.callback(path.unlink, missing_ok=True)
            _write_file(path, data)
            if self.bucket:
                undo.callback(self._delete_object, s3, image_id)
                self._put_object(s3, image_id, data)
            yield
            undo.pop_all()

    def forget(self, region: str, image_id: str) -> None:
        """Remove the host's copy of a removed image's SBOM (one in S3 stays: it is the
        record of what was published)."""
        self.path(region, image_id).unlink(missing_ok=True)

    def _put_object(self, s3: Any, image_id: str, data: bytes) -> None:
        digest = hashlib.sha256(data).digest()
        call(
            s3.put_object,
            self.url(image_id),
            Bucket=self.bucket,
            Key=self.key(image_id),
            Body=data,
            ContentType=MEDIA_TYPE,
            # S3 refuses the object unless it arrives with this digest.
            ChecksumSHA256=base64.b64encode(digest).decode(),
        )
        log.info("SBOM of %s put at %s", image_id, self.url(image_id))

    def _delete_object(self, s3: Any, image_id: str) -> None:
        # The bake's own error is the one to report; a copy left in S3 is said, not raised.
        try:
            call(s3.delete_object, self.url(image_id), Bucket=self.bucket, Key=self.key(image_id))
        except AminatorError as error:
            log.warning("cannot remove the SBOM %s: %s", self.url(image_id), error)
            return
        log.info("removed the SBOM %s", self.url(image_id))


def _write_file(path: Path, data: bytes) -> None:
    """Written whole (a synced temporary file renamed), readable by all."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_whole(path, data)
    except OSError as exc:
        raise CloudError(f"cannot write the SBOM to {path}: {exc.strerror or exc}") from exc
