"""The interface of a base creator: how a distro plugin bootstraps the root of ``aminate base
create``."""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aminator_ng.contract.settings import Setting, made_from, settings_of


@dataclass(frozen=True)
class BootstrappedRoot:
    """What a base creator made: the base image's description and its tags."""

    description: str
    tags: Mapping[str, str] = field(default_factory=dict)


class BaseCreator(abc.ABC):
    """What a distro plugin offers ``aminate base create`` (``aminator_base_creator``): its
    options, its tools, and the bootstrap of a root tree."""

    #: What ``--distro`` names it by.
    name: str
    #: The dataclass of its options (fields made with ``declared``; each becomes a flag of
    #: ``base create``); None for none.
    options: type | None = None

    def required_tools(self) -> list[str]:
        """Host tools the bootstrap runs, checked before anything is made."""
        return []

    @abc.abstractmethod
    def bootstrap(self, target: Path, options: Any) -> BootstrappedRoot:
        """Fill the empty directory ``target`` with a root tree, as ``options`` (an instance
        of ``options``, or None) ask. Raise RequestError for options it cannot meet."""

    def option_settings(self) -> tuple[Setting, ...]:
        return settings_of(self.options) if self.options is not None else ()

    def options_from(self, given: Mapping[str, Any]) -> Any:
        """The options instance, from the flags given (by setting name), checked."""
        if self.options is None:
            return None
        checked = {
            s.name: s.check(given[s.name], s.flag_source(given[s.name]))
            for s in self.option_settings()
            if s.name in given
        }
        return made_from(self.options, checked)
