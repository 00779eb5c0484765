"""Retention: which images of a family stay and which go (``aminate images prune``, and a
bake's ``--keep``).

A family is the images baked for one application on one kind of base: the bake tags each
image with ``PACKAGE/BASE_FAMILY`` under the ``family_tag`` setting, where the base family is
the base's own family (a baked base) or its name up to a date stamp (``debian-12-amd64`` of
``debian-12-amd64-20261101-1234``). An operator's own tag can be named as the family tag
instead. Images without the tag are in no family and are never pruned.

Of each family the newest ``keep`` stay, and so does any image newer than ``older_than``; of
the rest, each is removed unless the backend refuses it (protected, in use, not made by
aminator-ng), which is said. An image the caller spares (the one just baked) always stays.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from aminator_ng.contract.cloud import CloudBackend
from aminator_ng.contract.model import Image
from aminator_ng.errors import AminatorError, RequestError

log = logging.getLogger(__name__)

#: Where a base image's name stops naming its family: a date stamp (eight digits or more).
DATE_STAMP = re.compile(r"[-_.]?\d{8}")

REMOVE = "remove"
REMOVED = "removed"
KEPT = "kept"
SKIPPED = "skipped"


def base_family(base: Image, family_tag: str) -> str:
    """The base's own family, else its name up to a date stamp."""
    if base.tags.get(family_tag):
        return base.tags[family_tag]
    stamp = DATE_STAMP.search(base.name)
    return base.name[: stamp.start()] if stamp and stamp.start() > 0 else base.name


def image_family(first_package: str, base: Image, family_tag: str) -> str:
    """The family of an image baked from ``first_package`` on ``base``."""
    return f"{first_package}/{base_family(base, family_tag)}"


@dataclass(frozen=True)
class Decision:
    """What retention does, or did, with one image of a family, and why."""

    image: Image
    family: str
    action: str
    reason: str

    def as_dict(self) -> dict[str, str]:
        return {
            "image_id": self.image.image_id,
            "name": self.image.name,
            "region": self.image.region,
            "created": self.image.created.isoformat().replace("+00:00", "Z"),
            "family": self.family,
            "action": self.action,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class Retention:
    """How many of each family stay, and which families are looked at."""

    keep: int
    family_tag: str
    #: Only this family; None: every family.
    family: str | None = None
    #: Images newer than this stay too.
    older_than: timedelta | None = None

    def plan(
        self,
        images: Sequence[Image],
        *,
        now: datetime,
        refused: Callable[[Image], str | None],
        spare: Collection[str] = (),
        incoming: int = 0,
    ) -> list[Decision]:
        """A decision for each image of the families looked at, newest first per family.
        ``incoming`` images of ``family`` are about to be made (a dry run's bake): they take
        their places among the newest."""
        families: dict[str, list[Image]] = {}
        for image in images:
            family = image.tags.get(self.family_tag)
            if family and (self.family is None or family == self.family):
                families.setdefault(family, []).append(image)
        decisions: list[Decision] = []
        for family, members in sorted(families.items()):
            newest_first = sorted(members, key=lambda image: image.created, reverse=True)
            for place, image in enumerate(newest_first, start=incoming):
                decisions.append(
                    Decision(image, family, *self._judge(image, place, now, spare, refused))
                )
        return decisions

    def _judge(
        self,
        image: Image,
        place: int,
        now: datetime,
        spare: Collection[str],
        refused: Callable[[Image], str | None],
    ) -> tuple[str, str]:
        if image.image_id in spare:
            return KEPT, "the image just made"
        if place < self.keep:
            return KEPT, f"one of the newest {self.keep}"
        if self.older_than is not None and image.created > now - self.older_than:
            return KEPT, "newer than --older-than"
        why = refused(image)
        if why:
            return SKIPPED, why
        return REMOVE, f"older than the newest {self.keep}"


def prune(cloud: CloudBackend, decisions: Sequence[Decision], *, dry_run: bool) -> list[Decision]:
    """Carry the decisions out: remove what is to be removed, unless ``dry_run``. A removal the
    backend refuses now (an instance launched meanwhile) is skipped with its reason."""
    done: list[Decision] = []
    for decision in decisions:
        if decision.action != REMOVE or dry_run:
            done.append(decision)
            continue
        try:
            cloud.remove_image(decision.image.image_id)
        except RequestError as refusal:
            log.warning("prune: %s is kept: %s", decision.image.image_id, refusal)
            done.append(Decision(decision.image, decision.family, SKIPPED, refusal.message))
            continue
        except AminatorError as error:
            error.message = f"pruning {decision.image.image_id} failed: {error.message}"
            raise
        log.info("prune: removed %s (%s)", decision.image.image_id, decision.image.name)
        done.append(Decision(decision.image, decision.family, REMOVED, decision.reason))
    return done
