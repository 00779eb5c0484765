"""Settings: built once from defaults, the environment and the command line, then frozen."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from aminator_ng.errors import ConfigError

DEFAULT_HOME = Path("/var/lib/aminator-ng")
DEFAULT_LOG_DIR = Path("/var/log/aminator-ng")
DEFAULT_CLOUD = "local"


@dataclass(frozen=True)
class EngineSettings:
    """Settings every command shares."""

    #: Where the local store, work directories and mount points live.
    home: Path = DEFAULT_HOME
    #: Where each bake writes ``<bake_id>.log``.
    log_dir: Path = DEFAULT_LOG_DIR
    #: The cloud backend: "local" (the embedded default) or a plugin's backend.
    cloud: str = DEFAULT_CLOUD
    output: str = "text"
    debug: bool = False
    quiet: bool = False

    @property
    def work_dir(self) -> Path:
        """Per-bake scratch space and mount points."""
        return self.home / "work"


@dataclass(frozen=True)
class BakeRequest:
    """One bake, as the operator asked for it."""

    base: str
    packages: tuple[str, ...]
    name_template: str | None = None
    suffix: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)
    preserve_on_error: bool = False


def settings_from_environment(
    *,
    cloud: str | None = None,
    output: str = "text",
    debug: bool = False,
    quiet: bool = False,
    environ: Mapping[str, str] = os.environ,
) -> EngineSettings:
    """Defaults, overridden by ``AMINATOR_*`` variables, overridden by flags."""
    home = Path(environ.get("AMINATOR_HOME") or DEFAULT_HOME)
    log_dir = Path(environ.get("AMINATOR_LOG_DIR") or DEFAULT_LOG_DIR)
    for variable, path in (("AMINATOR_HOME", home), ("AMINATOR_LOG_DIR", log_dir)):
        if not path.is_absolute():
            raise ConfigError(f"{variable} must be an absolute path, not {path}")
    return EngineSettings(
        home=home,
        log_dir=log_dir,
        cloud=cloud or environ.get("AMINATOR_CLOUD") or DEFAULT_CLOUD,
        output=output,
        debug=debug,
        quiet=quiet,
    )


def parse_tag(text: str) -> tuple[str, str]:
    """``KEY=VALUE`` from ``--tag``."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"bad --tag {text!r}", hint="write tags as KEY=VALUE")
    return key.strip(), value
