"""The image's SBOM as ``build_sbom`` makes it: valid CycloneDX 1.6, one component per package in
the packages' order, the image described with its base as ancestor, the engine as the tool, and
tags that match the bytes."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator

from aminator_ng.contract.model import Image, SbomPackage
from aminator_ng.errors import BakeError
from aminator_ng.pipeline import sbom_document as sbom_module
from aminator_ng.pipeline.sbom import Sbom
from aminator_ng.pipeline.sbom_document import build_sbom

CREATED = datetime(2026, 3, 1, 12, 30, tzinfo=UTC)
BASE = Image(
    "img-0123456789ab",
    "debian-12-base",
    datetime(2026, 1, 1, tzinfo=UTC),
    "snap-0123456789ab",
    cloud="local",
    region="local",
)
OPENSSH = SbomPackage(
    "openssh-server",
    "1:9.2p1-2+deb12u3",
    "amd64",
    "pkg:deb/debian/openssh-server@1:9.2p1-2%2Bdeb12u3?arch=amd64&distro=debian-12",
    ("BSD-2-clause", "OpenSSH"),
)
LIBC_AMD64 = SbomPackage(
    "libc6",
    "2.36-9+deb12u4",
    "amd64",
    "pkg:deb/debian/libc6@2.36-9%2Bdeb12u4?arch=amd64&distro=debian-12",
    ("LGPL-2.1+",),
)
LIBC_I386 = SbomPackage(
    "libc6",
    "2.36-9+deb12u4",
    "i386",
    "pkg:deb/debian/libc6@2.36-9%2Bdeb12u4?arch=i386&distro=debian-12",
)
ZLIB = SbomPackage(
    "zlib1g",
    "1:1.2.13.dfsg-1",
    "amd64",
    "pkg:deb/debian/zlib1g@1:1.2.13.dfsg-1?arch=amd64&distro=debian-12",
    ("Zlib",),
)
#: Not in name order: the SBOM keeps the order it is given.
PACKAGES = (ZLIB, OPENSSH, LIBC_I386, LIBC_AMD64)


def build(packages: tuple[SbomPackage, ...] = PACKAGES, **changed: Any) -> Sbom:
    arguments: dict[str, Any] = {
        "image_name": "hello-1.0-1-20260301T123000Z",
        "image_description": "hello 1.0-1, from debian-12-base",
        "base": BASE,
        "packages": packages,
        "bake_id": "bake-0123",
        "engine_version": "0.1.0",
        "created": CREATED,
        **changed,
    }
    return build_sbom(**arguments)


def document(sbom: Sbom) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(sbom.data)
    return loaded


def licences_of(sbom: Sbom) -> dict[str, Any]:
    """Each component's licences, in no particular order (CycloneDX gives them none)."""
    return {
        c["bom-ref"]: sorted(c["licenses"], key=json.dumps) if "licenses" in c else None
        for c in document(sbom)["components"]
    }


def test_the_sbom_is_valid_cyclonedx_1_6() -> None:
    sbom = build()
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(sbom.data.decode()) is None
    bom = document(sbom)
    assert bom["bomFormat"] == "CycloneDX" and bom["specVersion"] == "1.6"
    assert bom["serialNumber"].startswith("urn:uuid:")
    assert bom["metadata"]["timestamp"].startswith("2026-03-01T12:30:00")


def test_one_component_per_package_in_the_order_given() -> None:
    components = document(build())["components"]
    assert [(c["name"], c["version"], c["purl"]) for c in components] == [
        (p.name, p.version, p.purl) for p in PACKAGES
    ]
    assert {c["type"] for c in components} == {"library"}
    assert len({c["bom-ref"] for c in components}) == len(PACKAGES)


def test_a_package_listed_twice_is_two_components() -> None:
    components = document(build((ZLIB, ZLIB)))["components"]
    assert [c["purl"] for c in components] == [ZLIB.purl, ZLIB.purl]
    assert components[0]["bom-ref"] != components[1]["bom-ref"]


def test_the_image_is_described_with_its_base_as_ancestor() -> None:
    bom = document(build())
    image = bom["metadata"]["component"]
    assert image["type"] == "operating-system"
    assert image["name"] == "hello-1.0-1-20260301T123000Z"
    assert image["description"] == "hello 1.0-1, from debian-12-base"
    [ancestor] = image["pedigree"]["ancestors"]
    assert ancestor["name"] == "debian-12-base"
    properties = {p["name"]: p["value"] for p in ancestor["properties"]}
    assert properties["aminator-ng:image-id"] == "img-0123456789ab"
    # The image holds every package.
    [held] = [d for d in bom["dependencies"] if d["ref"] == image["bom-ref"]]
    assert sorted(held["dependsOn"]) == sorted(c["bom-ref"] for c in bom["components"])
    bake = {p["name"]: p["value"] for p in bom["metadata"]["properties"]}
    assert bake == {"aminator-ng:bake-id": "bake-0123"}


def test_the_engine_is_the_tool() -> None:
    [tool] = document(build())["metadata"]["tools"]["components"]
    assert (tool["type"], tool["name"], tool["version"]) == ("application", "aminator-ng", "0.1.0")


def test_the_serial_number_is_the_bakes_own() -> None:
    assert document(build())["serialNumber"] == document(build())["serialNumber"]
    assert document(build())["serialNumber"] != document(build(bake_id="bake-9"))["serialNumber"]


@pytest.mark.parametrize(
    ("declared", "expected"),
    [
        (("MIT",), [{"license": {"id": "MIT"}}]),
        (("bsd-3-clause",), [{"license": {"id": "BSD-3-Clause"}}]),
        (("GPL-2+",), [{"license": {"name": "GPL-2+"}}]),
        (("MIT OR Apache-2.0",), [{"expression": "MIT OR Apache-2.0"}]),
        (("GPL-2+", "Expat"), [{"license": {"name": "GPL-2+"}}, {"license": {"name": "Expat"}}]),
        # One expression, or a list: several with an expression among them are joined...
        (("MIT", "Apache-2.0 OR MIT"), [{"expression": "MIT AND (Apache-2.0 OR MIT)"}]),
        # ... unless one is no SPDX licence: then the expression is named, not dropped.
        (
            ("GPL-2+", "MIT OR Apache-2.0"),
            [{"license": {"name": "GPL-2+"}}, {"license": {"name": "MIT OR Apache-2.0"}}],
        ),
        (("MIT", "MIT"), [{"license": {"id": "MIT"}}]),
        ((), None),
    ],
)
def test_licences_become_ids_expressions_or_names(
    declared: tuple[str, ...], expected: list[dict[str, Any]] | None
) -> None:
    package = SbomPackage("hello", "1.0-1", "all", "pkg:deb/debian/hello@1.0-1?arch=all", declared)
    sbom = build((package,))
    wanted = sorted(expected, key=json.dumps) if expected is not None else None
    assert licences_of(sbom) == {package.purl: wanted}
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(sbom.data.decode()) is None


def test_the_tags_match_the_data() -> None:
    sbom = build()
    assert sbom.component_count == len(PACKAGES)
    assert sbom.sha256 == hashlib.sha256(sbom.data).hexdigest()
    assert sbom.tags() == {"sbom_components": "4", "sbom_sha256": sbom.sha256}
    assert Sbom.from_data(sbom.data) == sbom


def test_an_image_without_packages_has_an_empty_sbom() -> None:
    sbom = build(())
    assert sbom.component_count == 0
    assert document(sbom)["components"] == []


def test_stored_data_that_is_no_sbom_is_refused() -> None:
    for data in (b"not json", b"[]", b'{"bomFormat": "SPDX"}'):
        with pytest.raises(ValueError):
            Sbom.from_data(data)


def test_an_invalid_package_url_names_the_package() -> None:
    broken = SbomPackage("hello", "1.0-1", "all", "hello@1.0-1")
    with pytest.raises(BakeError, match=r"package hello 1\.0-1 has an invalid package URL"):
        build((broken,))


def test_an_invalid_document_says_what_is_invalid(monkeypatch: pytest.MonkeyPatch) -> None:
    original = sbom_module._text

    def with_a_stray_member(bom: dict[str, Any]) -> str:
        bom["metadata"]["stray"] = True
        return original(bom)

    monkeypatch.setattr(sbom_module, "_text", with_a_stray_member)
    with pytest.raises(BakeError, match=r"not valid CycloneDX 1\.6: .*'stray'.* \(at /metadata\)"):
        build()


def test_the_schema_check_still_refuses_a_component_listed_twice() -> None:
    bom = document(build())
    bom["components"].append(dict(bom["components"][0]))
    errors = list(sbom_module.schema_checker().iter_errors(bom))
    assert [list(e.absolute_path) for e in errors] == [["components"]]
    assert "the same item twice" in errors[0].message


def test_items_equal_as_json_are_the_same_item_to_the_schema_check() -> None:
    unique = {"type": "array", "uniqueItems": True}
    check = sbom_module.schema_checker().evolve(schema=unique)
    assert not check.is_valid([1, 1.0])
    assert not check.is_valid([{"a": [1]}, {"a": [1.0]}])
    assert check.is_valid([1, True, "1"])
    assert check.is_valid([{"a": 1}, {"a": 2}])
