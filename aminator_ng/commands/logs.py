"""Where the engine's log records go: stderr for the operator, and each bake's own log file."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from aminator_ng.errors import ConfigError

#: A log record with this attribute set goes to the bake log only, not to stderr.
LOG_FILE_ONLY = "aminator_file_only"


def configure_logging(*, debug: bool, quiet: bool) -> None:
    level = logging.DEBUG if debug else logging.WARNING if quiet else logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.setLevel(level)
    handler.addFilter(lambda record: not getattr(record, LOG_FILE_ONLY, False))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)


def open_bake_log(path: Path) -> logging.Handler:
    """The bake's log file, readable by its owner only (a log names hosts, images and accounts);
    a log directory made here is the owner's only too."""
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600))
        handler = logging.FileHandler(path, encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            f"cannot write the bake log {path}: {exc.strerror}",
            hint="set AMINATOR_LOG_DIR to a writable directory",
        ) from exc
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)
    # The SBOM library's serializer logs each class it registers, a hundred lines: noise.
    logging.getLogger("py_serializable").setLevel(logging.INFO)
    return handler
