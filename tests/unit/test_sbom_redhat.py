"""What the RPM plugin tells the SBOM of each installed package: its package URL (with the epoch as
a qualifier), percent-encoded as the purl specification says, and its LICENSE tag, read with one
query of the image's rpm database."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from packageurl import PackageURL

from aminator_ng.api import Chroot, Completed, Distro, ManifestEntry, SbomPackage, run
from aminator_redhat import rpmdb
from aminator_redhat.dnf import DnfProvisioner
from aminator_redhat.sbom import LICENSE_FORMAT, package_url, parse_licenses
from tests.integration.rpms import build_rpm

FEDORA = Distro("redhat", "fedora", "40", "Fedora Linux 40", "rpm")
AMAZON = Distro("redhat", "amzn", "2023", "Amazon Linux 2023", "rpm")

#: ``rpm -qa`` in LICENSE_FORMAT, as an image's database answers it.
RPM_ANSWER = (
    "bash\t5.2.26-3.fc40\tx86_64\tGPL-3.0-or-later\n"
    "openssl-libs\t1:3.2.1-2.fc40\tx86_64\tApache-2.0\n"
    "glibc\t2.39-5.fc40\ti686\tLGPLv2+ and LGPLv2+ with exceptions and GPLv2+\n"
    "glibc\t2.39-5.fc40\tx86_64\tLGPLv2+ and LGPLv2+ with exceptions and GPLv2+\n"
    "gpg-pubkey\ta15b79cc-63d04c2c\t(none)\tpubkey\n"
    "filesystem\t3.18-8.fc40\tx86_64\t(none)\n"
)


@pytest.mark.parametrize(
    ("distro", "entry", "expected"),
    [
        (
            FEDORA,
            ManifestEntry("bash", "5.2.26-3.fc40", "x86_64", "bash", "5.2.26-3.fc40"),
            "pkg:rpm/fedora/bash@5.2.26-3.fc40?arch=x86_64&distro=fedora-40",
        ),
        (
            FEDORA,
            ManifestEntry("openssl-libs", "1:3.2.1-2.fc40", "x86_64", "openssl", "1:3.2.1-2.fc40"),
            "pkg:rpm/fedora/openssl-libs@3.2.1-2.fc40?arch=x86_64&distro=fedora-40&epoch=1",
        ),
        (
            AMAZON,
            ManifestEntry("libstdc++", "11.4.1-2.amzn2023.0.2", "x86_64", "gcc", "11.4.1-2"),
            "pkg:rpm/amzn/libstdc%2B%2B@11.4.1-2.amzn2023.0.2?arch=x86_64&distro=amzn-2023",
        ),
        (
            FEDORA,
            ManifestEntry("vim-data", "2:9.1.393~rc1-1.fc40", "noarch", "vim", "2:9.1-1.fc40"),
            "pkg:rpm/fedora/vim-data@9.1.393~rc1-1.fc40?arch=noarch&distro=fedora-40&epoch=2",
        ),
        # An explicit epoch of 0 is no epoch.
        (
            FEDORA,
            ManifestEntry("zlib", "0:1.3-1.fc40", "x86_64", "zlib", "1.3-1.fc40"),
            "pkg:rpm/fedora/zlib@1.3-1.fc40?arch=x86_64&distro=fedora-40",
        ),
    ],
)
def test_package_urls_carry_the_epoch_as_a_qualifier(
    distro: Distro, entry: ManifestEntry, expected: str
) -> None:
    purl = package_url(distro, entry)
    assert purl == expected
    parsed = PackageURL.from_string(purl)
    assert parsed.name == entry.name
    assert parsed.version == entry.version.rpartition(":")[2]


def test_licences_are_parsed_per_package_without_signing_keys() -> None:
    assert parse_licenses(RPM_ANSWER) == {
        ("bash", "5.2.26-3.fc40", "x86_64"): "GPL-3.0-or-later",
        ("openssl-libs", "1:3.2.1-2.fc40", "x86_64"): "Apache-2.0",
        ("glibc", "2.39-5.fc40", "i686"): "LGPLv2+ and LGPLv2+ with exceptions and GPLv2+",
        ("glibc", "2.39-5.fc40", "x86_64"): "LGPLv2+ and LGPLv2+ with exceptions and GPLv2+",
    }


@dataclass(frozen=True)
class RpmChroot(Chroot):
    """An image whose rpm database answers ``answer``; every command asked is recorded."""

    answer: str = ""
    asked: list[list[str]] = field(default_factory=list)

    def run(self, argv: Sequence[str], **options: Any) -> Completed:
        self.asked.append(list(argv))
        return Completed(list(argv), 0, self.answer, "")


def test_the_dnf_provisioner_asks_rpm_once_and_keeps_the_manifests_order(tmp_path: Path) -> None:
    chroot = RpmChroot(tmp_path, answer=RPM_ANSWER)
    manifest = [
        ManifestEntry("openssl-libs", "1:3.2.1-2.fc40", "x86_64", "openssl", "1:3.2.1-2.fc40"),
        ManifestEntry("glibc", "2.39-5.fc40", "x86_64", "glibc", "2.39-5.fc40"),
        ManifestEntry("filesystem", "3.18-8.fc40", "x86_64", "filesystem", "3.18-8.fc40"),
    ]
    packages = DnfProvisioner().sbom_packages(chroot, FEDORA, manifest)
    assert chroot.asked == [["rpm", "--query", "--all", "--queryformat", LICENSE_FORMAT]]
    assert packages == [
        SbomPackage(
            "openssl-libs",
            "1:3.2.1-2.fc40",
            "x86_64",
            "pkg:rpm/fedora/openssl-libs@3.2.1-2.fc40?arch=x86_64&distro=fedora-40&epoch=1",
            ("Apache-2.0",),
        ),
        SbomPackage(
            "glibc",
            "2.39-5.fc40",
            "x86_64",
            "pkg:rpm/fedora/glibc@2.39-5.fc40?arch=x86_64&distro=fedora-40",
            ("LGPLv2+ and LGPLv2+ with exceptions and GPLv2+",),
        ),
        SbomPackage(
            "filesystem",
            "3.18-8.fc40",
            "x86_64",
            "pkg:rpm/fedora/filesystem@3.18-8.fc40?arch=x86_64&distro=fedora-40",
        ),
    ]


def query_file(package: Path, queryformat: str) -> str:
    """What ``rpm -qp`` says of a package file, with a database of the test's own."""
    with tempfile.TemporaryDirectory(prefix="aminator-ng-test-rpmdb-") as dbpath:
        argv = ["rpm", "--dbpath", dbpath, "--query", "--package", "--queryformat", queryformat]
        return run([*argv, package]).stdout


def test_the_licence_query_names_packages_as_the_manifest_does(tmp_path: Path) -> None:
    if shutil.which("rpmbuild") is None or shutil.which("rpm") is None:
        pytest.skip("rpmbuild (and rpm) are not installed: no real .rpm can be built")
    for epoch in ("", "0", "3"):
        out_dir = tmp_path / f"epoch{epoch or '-none'}"
        out_dir.mkdir()
        package = build_rpm(out_dir, "hello", "1.0", "1", epoch=epoch)
        [entry] = rpmdb.parse_manifest(query_file(package, rpmdb.MANIFEST_FORMAT))
        licences = parse_licenses(query_file(package, LICENSE_FORMAT))
        assert licences == {(entry.name, entry.version, entry.arch): "MIT"}
