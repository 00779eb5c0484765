"""What the Debian plugin tells the SBOM of each installed package: its package URL, percent-encoded
as the purl specification says, and the licences of its machine-readable copyright file. Image
roots are plain directories under ``tmp_path``, read through the Chroot as a bake reads them."""

from __future__ import annotations

from pathlib import Path

import pytest
from packageurl import PackageURL

from aminator_debian.apt import AptProvisioner
from aminator_debian.sbom import copyright_licenses, declared_licenses, package_url
from aminator_ng.api import Chroot, Distro, ManifestEntry, SbomPackage

BOOKWORM = Distro("debian", "debian", "12", "Debian GNU/Linux 12 (bookworm)", "deb")
NOBLE = Distro("debian", "ubuntu", "24.04", "Ubuntu 24.04 LTS", "deb")
SID = Distro("debian", "debian", "", "Debian GNU/Linux trixie/sid", "deb")

#: A copyright file in the machine-readable format, as packages write them: a header with a
#: licence of its own, Files paragraphs, and stand-alone License paragraphs with their texts.
DEP5 = """\
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: frobnicator
Upstream-Contact: Jo Maintainer <jo@example.org>
Source: https://example.org/frobnicator
License: GPL-2+

Files: *
Copyright: 2019-2024 Jo Maintainer <jo@example.org>
License: GPL-2+

Files: lib/compat/*
Copyright: 2001 Another Author
License: BSD-3-clause

Files: scripts/frob.pl
Copyright: 2015 A Perl Hacker
License: GPL-1+ or Artistic
Comment: the script is dual-licensed, as Perl is.

Files: debian/*
Copyright: 2024 Jo Maintainer <jo@example.org>
License: MIT OR Apache-2.0

License: GPL-2+
 This program is free software; you can redistribute it and/or modify it under
 the terms of the GNU General Public License as published by the Free Software
 Foundation; either version 2 of the License, or (at your option) any later version.
 .
 License: this indented line is licence text, not a field.

License: BSD-3-clause
 Redistribution and use in source and binary forms, with or without modification,
 are permitted provided that the conditions in the file LICENSE are met.

License: GPL-1+ or Artistic
 On Debian systems the licences are in /usr/share/common-licenses.
"""

FREE_FORM = """\
This is the Debian prepackaged version of frobnicator.

Copyright (C) 2019 Jo Maintainer. License: GPL-2+
See /usr/share/common-licenses/GPL-2.
"""


@pytest.mark.parametrize(
    ("distro", "entry", "expected"),
    [
        (
            BOOKWORM,
            ManifestEntry("openssh-server", "1:9.2p1-2+deb12u3", "amd64", "openssh", "1:9.2p1-2"),
            "pkg:deb/debian/openssh-server@1:9.2p1-2%2Bdeb12u3?arch=amd64&distro=debian-12",
        ),
        (
            BOOKWORM,
            ManifestEntry("libstdc++6", "12.2.0-14~deb12u1", "amd64", "gcc-12", "12.2.0-14"),
            "pkg:deb/debian/libstdc%2B%2B6@12.2.0-14~deb12u1?arch=amd64&distro=debian-12",
        ),
        (
            NOBLE,
            ManifestEntry("tzdata", "2024a-3ubuntu1.1", "all", "tzdata", "2024a-3ubuntu1.1"),
            "pkg:deb/ubuntu/tzdata@2024a-3ubuntu1.1?arch=all&distro=ubuntu-24.04",
        ),
        # No VERSION_ID (testing, unstable): no distro qualifier rather than a wrong one.
        (
            SID,
            ManifestEntry("hello", "2.10-3", "amd64", "hello", "2.10-3"),
            "pkg:deb/debian/hello@2.10-3?arch=amd64",
        ),
    ],
)
def test_package_urls_are_percent_encoded(
    distro: Distro, entry: ManifestEntry, expected: str
) -> None:
    purl = package_url(distro, entry)
    assert purl == expected
    parsed = PackageURL.from_string(purl)
    assert (parsed.name, parsed.version) == (entry.name, entry.version)


def test_a_machine_readable_copyright_file_gives_its_distinct_licences_in_order() -> None:
    assert copyright_licenses(DEP5) == (
        "GPL-2+",
        "BSD-3-clause",
        "GPL-1+ or Artistic",
        "MIT OR Apache-2.0",
    )


@pytest.mark.parametrize(
    "format_line",
    [
        "Format: http://www.debian.org/doc/packaging-manuals/copyright-format/1.0/",
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0",
        "format:   https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/  ",
    ],
)
def test_the_format_line_as_packages_write_it(format_line: str) -> None:
    text = f"{format_line}\n\nFiles: *\nCopyright: 2024 Jo\nLicense: Expat\n"
    assert copyright_licenses(text) == ("Expat",)


@pytest.mark.parametrize(
    "text",
    [
        FREE_FORM,
        "",
        # The format named anywhere but on the first line is not the format.
        "Upstream-Name: frob\n" + DEP5,
        "Format: http://dep.debian.net/deps/dep5/\nLicense: GPL-2+\n",
    ],
)
def test_other_copyright_files_declare_no_licence(text: str) -> None:
    assert copyright_licenses(text) == ()


def test_a_licence_field_without_a_short_name_is_left_out() -> None:
    text = DEP5.splitlines()[0] + "\n\nFiles: *\nCopyright: 2024 Jo\nLicense:\n Some text.\n"
    assert copyright_licenses(text) == ()


@pytest.fixture
def root(tmp_path: Path) -> Path:
    image = tmp_path / "image"
    (image / "usr" / "share" / "doc").mkdir(parents=True)
    return image


def doc_file(root: Path, package: str, text: str) -> Path:
    path = root / "usr" / "share" / "doc" / package / "copyright"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_licences_are_read_from_the_image(root: Path) -> None:
    doc_file(root, "frobnicator", DEP5)
    doc_file(root, "legacy", FREE_FORM)
    # A -dev package's documentation is often a symlink to its library's, absolute or not.
    (root / "usr" / "share" / "doc" / "libfrob-dev").symlink_to("/usr/share/doc/frobnicator")
    chroot = Chroot(root)
    assert declared_licenses(chroot, "frobnicator") == copyright_licenses(DEP5)
    assert declared_licenses(chroot, "libfrob-dev") == copyright_licenses(DEP5)
    assert declared_licenses(chroot, "legacy") == ()
    assert declared_licenses(chroot, "no-docs") == ()  # images that leave documentation out


def test_a_copyright_symlink_never_reads_the_hosts_files(root: Path, tmp_path: Path) -> None:
    host_file = tmp_path / "host-copyright"
    host_file.write_text(DEP5)
    doc = root / "usr" / "share" / "doc" / "sneaky"
    doc.mkdir()
    (doc / "copyright").symlink_to(host_file)  # resolved inside the image: there is none
    (root / "usr" / "share" / "doc" / "loop").symlink_to("loop")
    chroot = Chroot(root)
    assert declared_licenses(chroot, "sneaky") == ()
    assert declared_licenses(chroot, "loop") == ()


def test_the_apt_provisioner_gives_one_package_per_manifest_row_in_order(root: Path) -> None:
    doc_file(root, "zlib1g", DEP5.replace("GPL-2+", "Zlib"))
    manifest = [
        ManifestEntry("zlib1g", "1:1.2.13.dfsg-1", "amd64", "zlib", "1:1.2.13.dfsg-1"),
        ManifestEntry("base-files", "12.4+deb12u5", "amd64", "base-files", "12.4+deb12u5"),
    ]
    packages = AptProvisioner().sbom_packages(Chroot(root), BOOKWORM, manifest)
    assert packages == [
        SbomPackage(
            "zlib1g",
            "1:1.2.13.dfsg-1",
            "amd64",
            "pkg:deb/debian/zlib1g@1:1.2.13.dfsg-1?arch=amd64&distro=debian-12",
            ("Zlib", "BSD-3-clause", "GPL-1+ or Artistic", "MIT OR Apache-2.0"),
        ),
        SbomPackage(
            "base-files",
            "12.4+deb12u5",
            "amd64",
            "pkg:deb/debian/base-files@12.4%2Bdeb12u5?arch=amd64&distro=debian-12",
        ),
    ]
