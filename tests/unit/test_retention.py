"""Retention's decisions: families from the family tag, the newest N kept, --older-than, the
image just made spared, and the backend's refusals said as reasons."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from aminator_ng.contract.model import Image
from aminator_ng.contract.settings import parse_duration
from aminator_ng.errors import RequestError
from aminator_ng.pipeline.retention import Retention, base_family, image_family

NOW = datetime(2026, 12, 1, tzinfo=UTC)
APP = "hello/debian-12"


def image(image_id: str, days_old: float, family: str | None = APP, **tags: str) -> Image:
    all_tags = {"family": family, **tags} if family else dict(tags)
    return Image(
        image_id, f"name-{image_id}", NOW - timedelta(days=days_old), "snap", tags=all_tags
    )


def never_refused(image: Image) -> str | None:
    return None


def actions(decisions: list) -> list[tuple[str, str]]:
    return [(d.image.image_id, d.action) for d in decisions]


def test_a_family_is_the_first_package_on_the_base_family() -> None:
    dated = Image("ami-1", "debian-12-amd64-20261101-1234", NOW, "snap")
    assert base_family(dated, "family") == "debian-12-amd64"
    assert image_family("nginx", dated, "family") == "nginx/debian-12-amd64"
    plain = Image("img-1", "deb12", NOW, "snap")
    assert base_family(plain, "family") == "deb12"
    baked = Image("ami-2", "web-base-1.0-20261101", NOW, "snap", tags={"family": "web/deb12"})
    assert image_family("app", baked, "family") == "app/web/deb12"


def test_the_newest_n_of_each_family_stay_and_the_rest_go() -> None:
    images = [
        image("a1", 3),
        image("a2", 2),
        image("a3", 1),
        image("b1", 5, family="other/deb12"),
        image("base", 9, family=None),
    ]
    decisions = Retention(2, "family").plan(images, now=NOW, refused=never_refused)
    assert actions(decisions) == [
        ("a3", "kept"),
        ("a2", "kept"),
        ("a1", "remove"),
        ("b1", "kept"),
    ]
    only = Retention(1, "family", family=APP).plan(images, now=NOW, refused=never_refused)
    assert actions(only) == [("a3", "kept"), ("a2", "remove"), ("a1", "remove")]


def test_what_the_backend_refuses_is_skipped_with_its_reason_and_the_new_image_stays() -> None:
    images = [image("old", 3), image("protected", 2), image("new", 0)]

    def refused(candidate: Image) -> str | None:
        return "protected from deregistration" if candidate.image_id == "protected" else None

    decisions = Retention(1, "family").plan(images, now=NOW, refused=refused, spare={"new"})
    assert [(d.image.image_id, d.action, d.reason) for d in decisions] == [
        ("new", "kept", "the image just made"),
        ("protected", "skipped", "protected from deregistration"),
        ("old", "remove", "older than the newest 1"),
    ]


def test_older_than_keeps_what_is_newer_and_an_incoming_image_takes_a_place() -> None:
    images = [image("a1", 30), image("a2", 3), image("a3", 1)]
    recent = Retention(1, "family", older_than=timedelta(days=7))
    assert actions(recent.plan(images, now=NOW, refused=never_refused)) == [
        ("a3", "kept"),
        ("a2", "kept"),
        ("a1", "remove"),
    ]
    dry = Retention(2, "family").plan(images, now=NOW, refused=never_refused, incoming=1)
    assert actions(dry) == [("a3", "kept"), ("a2", "remove"), ("a1", "remove")]


def test_an_operators_own_tag_can_name_the_family() -> None:
    images = [image("a1", 2, app="web"), image("a2", 1, app="web"), image("x", 1, family=None)]
    decisions = Retention(1, "app").plan(images, now=NOW, refused=never_refused)
    assert actions(decisions) == [("a2", "kept"), ("a1", "remove")]


@pytest.mark.parametrize("text", ["30 days", "0d", "d", "3y"])
def test_a_duration_that_is_none_is_refused(text: str) -> None:
    with pytest.raises(RequestError, match="is not a duration"):
        parse_duration(text, "--older-than")
