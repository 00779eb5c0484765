"""The tagging finalizer: the image's name, description and tags."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from aminator_ng.contract.hookspecs import hookimpl
from aminator_ng.contract.model import BakeFacts, Distro, Image, ManifestEntry, PackageInfo
from aminator_ng.contract.plugins import load_plugins
from aminator_ng.contract.request import BakeRequest
from aminator_ng.contract.settings import EngineSettings
from aminator_ng.errors import ConfigError
from aminator_tagging.plugin import (
    DEFAULT_TEMPLATE,
    aminator_check_name_template,
    aminator_image_description,
    aminator_image_name,
    aminator_image_tags,
    default_suffix,
    render_name,
    template_values,
)

STARTED = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)
BAKE_ID = "abcdef0123456789"
BASE = Image(
    image_id="img-0123456789ab",
    name="debian-12",
    created=datetime(2026, 1, 1, tzinfo=UTC),
    snapshot_id="snap-0123456789ab",
    tags={"appversion": "debian-base-12"},
)
MANIFEST = (
    ManifestEntry("hello", "1.0-1", "all", "hello", "1.0-1"),
    ManifestEntry("libc6", "2.36-9+deb12u4", "amd64", "glibc", "2.36-9+deb12u4"),
)


def make_facts(
    package: PackageInfo | None = None,
    *,
    name_template: str | None = None,
    suffix: str | None = None,
    manifest: tuple[ManifestEntry, ...] = MANIFEST,
) -> BakeFacts:
    return BakeFacts(
        bake_id=BAKE_ID,
        started=STARTED,
        base=BASE,
        packages=(package or PackageInfo("hello", "1.0", "1", "all"),),
        manifest=manifest,
        distro=Distro("debian", "debian", "12", "Debian GNU/Linux 12 (bookworm)", "deb"),
        name_template=name_template,
        suffix=suffix,
        extra_tags={},
        engine_version="9.8.7",
    )


# names


def test_default_suffix_is_utc_time_to_the_second_and_four_chars_of_the_bake_id() -> None:
    suffix = default_suffix(make_facts())
    assert suffix == "20260304050607-abcd"
    assert re.fullmatch(r"\d{14}-[0-9a-f]{4}", suffix)


def test_default_name() -> None:
    assert aminator_image_name(facts=make_facts()) == "hello-1.0-1-all-20260304050607-abcd"


def test_default_template_renders_the_same_as_the_hook() -> None:
    facts = make_facts()
    assert render_name(DEFAULT_TEMPLATE, template_values(facts)) == aminator_image_name(facts=facts)


def test_given_suffix_replaces_the_default() -> None:
    assert aminator_image_name(facts=make_facts(suffix="build42")) == "hello-1.0-1-all-build42"


def test_empty_release_leaves_no_double_dash() -> None:
    name = aminator_image_name(facts=make_facts(PackageInfo("native", "2.0", "", "all")))
    assert name == "native-2.0-all-20260304050607-abcd"
    assert "--" not in name


def test_empty_last_field_leaves_no_trailing_dash() -> None:
    assert aminator_image_name(facts=make_facts(suffix="")) == "hello-1.0-1-all"


def test_template_fields() -> None:
    facts = make_facts(
        PackageInfo("hello", "2.3", "4", "amd64", epoch="1"),
        name_template="{distro}/{base_name}/{name}_{epoch}_{version}_{date}_{bake_id}",
    )
    assert aminator_image_name(facts=facts) == (
        "debian/debian-12/hello_1_2.3_20260304_abcdef0123456789"
    )


@pytest.mark.parametrize("template", ["{name}-{nope}", "{nope}", "{name.upper}", "{0}"])
def test_unknown_template_field_is_a_config_error_naming_it(template: str) -> None:
    field = template.rsplit("{", 1)[1].rstrip("}")
    with pytest.raises(ConfigError) as raised:
        render_name(template, template_values(make_facts()))
    assert f"{{{field}}}" in raised.value.message
    assert raised.value.exit_code == 2
    assert raised.value.hint is not None and "{version}" in raised.value.hint


@pytest.mark.parametrize("template", ["{name", "{name}-}", "{name}-{"])
def test_unbalanced_brace_is_a_config_error(template: str) -> None:
    with pytest.raises(ConfigError):
        render_name(template, template_values(make_facts()))


def test_hyphens_the_operator_wrote_are_kept() -> None:
    name = aminator_image_name(facts=make_facts(suffix="2026--rc1"))
    assert name == "hello-1.0-1-all-2026--rc1"


# description and tags


def test_description_names_the_ancestor() -> None:
    description = aminator_image_description(facts=make_facts())
    assert description is not None
    assert "ancestor_name=debian-12" in description
    assert "ancestor_id=img-0123456789ab" in description
    assert "ancestor_version=debian-base-12" in description
    assert "name=hello" in description


def test_tags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUDO_USER", "alice")
    tags = dict(aminator_image_tags(facts=make_facts()))
    assert set(tags) >= {
        "appversion",
        "base_image_id",
        "base_image_name",
        "creator",
        "creation_time",
        "bake_id",
        "aminator_ng_version",
        "package_count",
        "manifest_sha256",
    }
    assert tags["appversion"] == "hello-1.0-1"
    assert tags["base_image_id"] == "img-0123456789ab"
    assert tags["base_image_name"] == "debian-12"
    assert tags["creator"].startswith("alice@")
    assert tags["creation_time"] == "2026-03-04T05:06:07Z"
    assert tags["bake_id"] == BAKE_ID
    assert tags["aminator_ng_version"] == "9.8.7"
    assert tags["package_count"] == "2"
    assert re.fullmatch(r"[0-9a-f]{64}", tags["manifest_sha256"])
    assert all(isinstance(value, str) for value in tags.values())


def test_appversion_of_a_native_package_has_no_trailing_dash() -> None:
    tags = aminator_image_tags(facts=make_facts(PackageInfo("native", "2.0", "", "all")))
    assert tags["appversion"] == "native-2.0"


def test_manifest_digest_follows_the_manifest() -> None:
    digest = aminator_image_tags(facts=make_facts())["manifest_sha256"]
    assert aminator_image_tags(facts=make_facts())["manifest_sha256"] == digest
    changed = (replace(MANIFEST[0], version="1.0-2"), MANIFEST[1])
    assert aminator_image_tags(facts=make_facts(manifest=changed))["manifest_sha256"] != digest


# the early check of -n


@pytest.mark.parametrize("template", ["{name}-{nope}", "{name", "{name}-}"])
def test_a_bad_template_is_refused_before_the_bake_acquires_anything(template: str) -> None:
    with pytest.raises(ConfigError):
        aminator_check_name_template(template=template)


def test_a_good_template_passes_the_early_check() -> None:
    aminator_check_name_template(template="web-{version}-{suffix}")


class TheirNames:
    """A finalizer of an environment's own, with template fields tagging does not know."""

    @hookimpl
    def aminator_check_name_template(self, template: str) -> None:
        pass


def test_the_early_check_is_left_to_the_chosen_finalizers() -> None:
    hooks = load_plugins(environ={}, extra=[("theirs", TheirNames())])
    request = BakeRequest(base="b", packages=("hello",), name_template="{their_own_field}")
    hooks.check_request(request, EngineSettings(finalizers=("theirs",)))
    with pytest.raises(ConfigError, match="their_own_field"):
        hooks.check_request(request, EngineSettings())
