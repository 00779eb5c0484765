"""The baked image's SBOM document: CycloneDX 1.6 JSON, checked against the schema."""

from __future__ import annotations

import functools
import hashlib
import json
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from cyclonedx.contrib.license.factories import LicenseFactory
from cyclonedx.model import Property
from cyclonedx.model.bom import Bom, BomMetaData
from cyclonedx.model.component import Component, ComponentType, Pedigree
from cyclonedx.model.dependency import Dependency
from cyclonedx.model.license import DisjunctiveLicense, License, LicenseExpression
from cyclonedx.model.tool import ToolRepository
from cyclonedx.output.json import JsonV1Dot6
from cyclonedx.schema import SchemaVersion
from packageurl import PackageURL

from aminator_ng.errors import BakeError
from aminator_ng.model import Image, SbomPackage
from aminator_ng.sbom import Sbom

if TYPE_CHECKING:
    from cyclonedx.validation.json import JsonStrictValidator

SCHEMA_VERSION = SchemaVersion.V1_6
#: The namespace of the SBOM's own properties (CycloneDX property taxonomy).
PROPERTY_PREFIX = "aminator-ng:"
IMAGE_REF = "image"
BASE_IMAGE_REF = "base-image"
ENGINE_REF = "aminator-ng"
#: Serial numbers are derived from the bake id: one bake, one SBOM.
SERIAL_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:aminator-ng:sbom")
#: Of CycloneDX's types, a machine image (a root filesystem that boots) is an operating system.
IMAGE_TYPE = ComponentType.OPERATING_SYSTEM
#: An installed package is a library: CycloneDX's type for a unit of software that others use
#: and that is found by its package URL. Whether a package holds programs (application) cannot
#: be told from the package database, and scanners match OS packages as libraries by purl.
PACKAGE_TYPE = ComponentType.LIBRARY


@functools.cache
def schema_checker() -> JsonStrictValidator:
    """The CycloneDX schema check, loaded once (a tenth of a second)."""
    from cyclonedx.validation.json import JsonStrictValidator

    return JsonStrictValidator(SCHEMA_VERSION)


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
    components = [_package_component(package, ref) for package, ref in _refs(packages)]
    image = Component(
        type=IMAGE_TYPE,
        name=image_name,
        description=image_description or None,
        bom_ref=IMAGE_REF,
        pedigree=Pedigree(ancestors=[_base_component(base)]),
    )
    engine = Component(
        type=ComponentType.APPLICATION,
        name="aminator-ng",
        version=engine_version,
        bom_ref=ENGINE_REF,
    )
    bom = Bom(
        serial_number=uuid.uuid5(SERIAL_NAMESPACE, bake_id),
        metadata=BomMetaData(
            component=image,
            tools=ToolRepository(components=[engine]),
            timestamp=created if created.tzinfo else created.replace(tzinfo=UTC),
            properties=[Property(name=f"{PROPERTY_PREFIX}bake-id", value=bake_id)],
        ),
        components=components,
    )
    # The image holds every package (each package's own dependencies are not recorded).
    bom.dependencies.add(Dependency(image.bom_ref, [Dependency(c.bom_ref) for c in components]))
    text = _in_order(JsonV1Dot6(bom).output_as_string(), [str(c.bom_ref) for c in components])
    error = schema_checker().validate_str(text)
    if error is not None:
        raise BakeError(
            f"the image's SBOM is not valid CycloneDX {SCHEMA_VERSION.to_version()}: "
            f"{_describe(error.data)}"
        )
    data = text.encode()
    return Sbom(data, len(components), hashlib.sha256(data).hexdigest())


def _refs(packages: Sequence[SbomPackage]) -> list[tuple[SbomPackage, str]]:
    """Each package with its bom-ref: its purl, made unique should a package be listed twice."""
    seen: dict[str, int] = {}
    refs = []
    for package in packages:
        seen[package.purl] = seen.get(package.purl, 0) + 1
        count = seen[package.purl]
        refs.append((package, package.purl if count == 1 else f"{package.purl}#{count}"))
    return refs


def _package_component(package: SbomPackage, ref: str) -> Component:
    try:
        purl = PackageURL.from_string(package.purl)
    except ValueError as exc:
        raise BakeError(
            f"package {package.name} {package.version} has an invalid package URL "
            f"{package.purl!r}: {exc}"
        ) from exc
    return Component(
        type=PACKAGE_TYPE,
        name=package.name,
        version=package.version,
        purl=purl,
        bom_ref=ref,
        licenses=licenses(package.licenses),
    )


def _base_component(base: Image) -> Component:
    facts = {"image-id": base.image_id, "cloud": base.cloud, "region": base.region}
    return Component(
        type=IMAGE_TYPE,
        name=base.name,
        bom_ref=BASE_IMAGE_REF,
        properties=[Property(name=PROPERTY_PREFIX + k, value=v) for k, v in facts.items() if v],
    )


def licenses(declared: Sequence[str]) -> list[License]:
    """The licences a package declares: an SPDX id as an id, an SPDX expression as an
    expression, anything else as a named licence.

    CycloneDX takes either one expression or a list of licences, never both: several licences
    of which one is an expression become one expression (``A AND (B OR C)``) when all are SPDX,
    else a list in which the expression is a named licence too. Nothing declared is dropped.
    """
    factory = LicenseFactory()
    made = [factory.make_from_string(text) for text in dict.fromkeys(declared) if text.strip()]
    expressions = [m for m in made if isinstance(m, LicenseExpression)]
    if len(made) < 2 or not expressions:
        return made
    if all(isinstance(m, LicenseExpression) or m.id for m in made):
        joined = " AND ".join(
            f"({m.value})" if isinstance(m, LicenseExpression) else str(m.id) for m in made
        )
        return [factory.make_with_expression(joined)]
    return [
        DisjunctiveLicense(name=m.value) if isinstance(m, LicenseExpression) else m for m in made
    ]


#: The document's members in the order CycloneDX's own examples give them, for people reading it.
_MEMBER_ORDER = ("$schema", "bomFormat", "specVersion", "serialNumber", "version", "metadata")


def _in_order(text: str, refs: Sequence[str]) -> str:
    """The document with its components in the packages' order (the library keeps them in a
    sorted set), and its members in the usual order."""
    document = json.loads(text)
    position = {ref: index for index, ref in enumerate(refs)}
    document["components"] = sorted(
        document.get("components", []), key=lambda c: position[c["bom-ref"]]
    )
    first = {key: document.pop(key) for key in _MEMBER_ORDER if key in document}
    return json.dumps({**first, **document}, indent=2, ensure_ascii=False) + "\n"


def _describe(error: object) -> str:
    """A schema error as one line: what is wrong, and where in the document."""
    message = str(getattr(error, "message", error)).splitlines()[0]
    path = "/".join(str(part) for part in getattr(error, "absolute_path", ()))
    return f"{message} (at /{path})" if path else message
