"""The baked image's SBOM document: CycloneDX 1.6 JSON, checked against the schema.

The document is built as plain JSON, in time linear in the packages: the library's object model
keeps components in sorted sets, which took 5 s for an image of 1,000 packages. jsonschema's
``uniqueItems`` compares every pair of objects (8 s for those 1,000 components), so the schema
check replaces it with one that compares canonical forms through a set.
"""

from __future__ import annotations

import functools
import hashlib
import json
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from importlib.resources import files
from typing import Any

from cyclonedx.contrib.license.factories import LicenseFactory
from cyclonedx.model.license import License, LicenseExpression
from jsonschema import Draft7Validator, ValidationError
from jsonschema.protocols import Validator
from jsonschema.validators import extend
from packageurl import PackageURL
from referencing import Registry
from referencing.jsonschema import DRAFT7

from aminator_ng.contract.model import Image, SbomPackage
from aminator_ng.errors import BakeError
from aminator_ng.pipeline.sbom import Sbom

SPEC_VERSION = "1.6"
#: The schemas that come with cyclonedx-python-lib, and the ids the CycloneDX schema refers to
#: them by.
SCHEMA_PACKAGE = "cyclonedx.schema._res"
SCHEMA_FILE = "bom-1.6.SNAPSHOT.schema.json"
REFERENCED_SCHEMAS = {
    "http://cyclonedx.org/schema/spdx.SNAPSHOT.schema.json": "spdx.SNAPSHOT.schema.json",
    "http://cyclonedx.org/schema/jsf-0.82.SNAPSHOT.schema.json": "jsf-0.82.SNAPSHOT.schema.json",
    "http://cyclonedx.org/schema/cryptography-defs.SNAPSHOT.schema.json": (
        "cryptography-defs.SNAPSHOT.schema.json"
    ),
}
#: The namespace of the SBOM's own properties (CycloneDX property taxonomy).
PROPERTY_PREFIX = "aminator-ng:"
IMAGE_REF = "image"
BASE_IMAGE_REF = "base-image"
ENGINE_REF = "aminator-ng"
#: Serial numbers are derived from the bake id: one bake, one SBOM.
SERIAL_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:aminator-ng:sbom")
#: Of CycloneDX's types, a machine image (a root filesystem that boots) is an operating system.
IMAGE_TYPE = "operating-system"
#: An installed package is a library: CycloneDX's type for a unit of software that others use
#: and that is found by its package URL. Whether a package holds programs (application) cannot
#: be told from the package database, and scanners match OS packages as libraries by purl.
PACKAGE_TYPE = "library"


def _canonical(item: Any) -> Any:
    """A JSON value as JSON Schema compares it: 1.0 equals 1, true does not."""
    if isinstance(item, float) and item.is_integer():
        return int(item)
    if isinstance(item, dict):
        return {key: _canonical(value) for key, value in item.items()}
    if isinstance(item, list):
        return [_canonical(value) for value in item]
    return item


def _unique_items(
    validator: Validator, unique: bool, instance: Any, schema: dict[str, Any]
) -> Iterator[ValidationError]:
    if not unique or not validator.is_type(instance, "array"):
        return
    seen: set[str] = set()
    for item in instance:
        key = json.dumps(_canonical(item), sort_keys=True)
        if key in seen:
            yield ValidationError(f"has the same item twice: {key[:200]}")
            return
        seen.add(key)


_CycloneDxValidator = extend(Draft7Validator, {"uniqueItems": _unique_items})  # type: ignore[no-untyped-call]


@functools.cache
def schema_checker() -> Validator:
    """The CycloneDX 1.6 schema check, with its format checks, loaded once."""
    schemas = files(SCHEMA_PACKAGE)
    registry: Registry[Any] = Registry().with_resources(
        (uri, DRAFT7.create_resource(json.loads((schemas / name).read_text())))
        for uri, name in REFERENCED_SCHEMAS.items()
    )
    schema = json.loads((schemas / SCHEMA_FILE).read_text())
    return _CycloneDxValidator(  # type: ignore[no-any-return]
        schema, registry=registry, format_checker=Draft7Validator.FORMAT_CHECKER
    )


def build_sbom(
    *,
    image_name: str,
    image_description: str,
    base: Image,
    packages: Sequence[SbomPackage],
    bake_id: str,
    engine_version: str,
    created: datetime,
) -> Sbom:
    """The SBOM of an image about to be registered: one component per package, in order; the
    image as the described component, its base as its ancestor; the engine as the tool.

    Raises BakeError when a package URL cannot be parsed or the document is not valid CycloneDX.
    """
    refs = _refs(packages)
    held = sorted(ref for _, ref in refs)
    image: dict[str, Any] = {
        "bom-ref": IMAGE_REF,
        "name": image_name,
        "pedigree": {"ancestors": [_base_component(base)]},
        "type": IMAGE_TYPE,
    }
    if image_description:
        image["description"] = image_description
    timestamp = created if created.tzinfo else created.replace(tzinfo=UTC)
    document = {
        "$schema": f"http://cyclonedx.org/schema/bom-{SPEC_VERSION}.schema.json",
        "bomFormat": "CycloneDX",
        "specVersion": SPEC_VERSION,
        "serialNumber": f"urn:uuid:{uuid.uuid5(SERIAL_NAMESPACE, bake_id)}",
        "version": 1,
        "metadata": {
            "component": image,
            "properties": [{"name": f"{PROPERTY_PREFIX}bake-id", "value": bake_id}],
            "timestamp": timestamp.isoformat(),
            "tools": {
                "components": [
                    {
                        "bom-ref": ENGINE_REF,
                        "name": "aminator-ng",
                        "type": "application",
                        "version": engine_version,
                    }
                ]
            },
        },
        "components": [_package_component(package, ref) for package, ref in refs],
        # The image holds every package (each package's own dependencies are not recorded).
        "dependencies": [
            {"dependsOn": held, "ref": IMAGE_REF} if held else {"ref": IMAGE_REF},
            *({"ref": ref} for ref in held),
        ],
    }
    text = _text(document)
    error = next(iter(schema_checker().iter_errors(json.loads(text))), None)
    if error is not None:
        raise BakeError(
            f"the image's SBOM is not valid CycloneDX {SPEC_VERSION}: {_describe(error)}"
        )
    data = text.encode()
    return Sbom(data, len(refs), hashlib.sha256(data).hexdigest())


def _text(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def _refs(packages: Sequence[SbomPackage]) -> list[tuple[SbomPackage, str]]:
    """Each package with its bom-ref: its purl, made unique should a package be listed twice."""
    seen: dict[str, int] = {}
    refs = []
    for package in packages:
        seen[package.purl] = seen.get(package.purl, 0) + 1
        count = seen[package.purl]
        refs.append((package, package.purl if count == 1 else f"{package.purl}#{count}"))
    return refs


def _package_component(package: SbomPackage, ref: str) -> dict[str, Any]:
    try:
        purl = PackageURL.from_string(package.purl).to_string()
    except ValueError as exc:
        raise BakeError(
            f"package {package.name} {package.version} has an invalid package URL "
            f"{package.purl!r}: {exc}"
        ) from exc
    component: dict[str, Any] = {"bom-ref": ref}
    declared = licenses(package.licenses)
    if declared:
        component["licenses"] = declared
    component.update(name=package.name, purl=purl, type=PACKAGE_TYPE, version=package.version)
    return component


def _base_component(base: Image) -> dict[str, Any]:
    facts = {"cloud": base.cloud, "image-id": base.image_id, "region": base.region}
    return {
        "bom-ref": BASE_IMAGE_REF,
        "name": base.name,
        "properties": [{"name": PROPERTY_PREFIX + k, "value": v} for k, v in facts.items() if v],
        "type": IMAGE_TYPE,
    }


def licenses(declared: Sequence[str]) -> list[dict[str, Any]]:
    """The licences a package declares, as CycloneDX JSON: an SPDX id as an id, an SPDX
    expression as an expression, anything else as a named licence.

    CycloneDX takes either one expression or a list of licences, never both: several licences
    of which one is an expression become one expression (``A AND (B OR C)``) when all are SPDX,
    else a list in which the expression is a named licence too. Nothing declared is dropped.
    """
    factory = LicenseFactory()
    made = [factory.make_from_string(text) for text in dict.fromkeys(declared) if text.strip()]
    mixed = len(made) > 1 and any(isinstance(m, LicenseExpression) for m in made)
    if mixed and all(isinstance(m, LicenseExpression) or m.id for m in made):
        joined = " AND ".join(
            f"({m.value})" if isinstance(m, LicenseExpression) else str(m.id) for m in made
        )
        return [{"expression": joined}]
    return [_licence(m, expression_as_name=mixed) for m in made]


def _licence(made: License, *, expression_as_name: bool) -> dict[str, Any]:
    if isinstance(made, LicenseExpression):
        if expression_as_name:
            return {"license": {"name": made.value}}
        return {"expression": made.value}
    return {"license": {"id": made.id} if made.id else {"name": made.name}}


def _describe(error: ValidationError) -> str:
    """A schema error as one line: what is wrong, and where in the document."""
    message = str(error.message).splitlines()[0]
    path = "/".join(str(part) for part in error.absolute_path)
    return f"{message} (at /{path})" if path else message
