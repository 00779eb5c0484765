"""Reading /etc/os-release (os-release(5)) from an image root."""

from __future__ import annotations

from pathlib import Path

import pytest

from aminator_ng.host.osrelease import parse_os_release, read_os_release

DEBIAN_12 = """\
# This file is part of the base image.
PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"
NAME="Debian GNU/Linux"

VERSION_ID="12"
VERSION="12 (bookworm)"
VERSION_CODENAME=bookworm
ID=debian
HOME_URL="https://www.debian.org/"
"""


def test_debian_os_release() -> None:
    assert parse_os_release(DEBIAN_12) == {
        "PRETTY_NAME": "Debian GNU/Linux 12 (bookworm)",
        "NAME": "Debian GNU/Linux",
        "VERSION_ID": "12",
        "VERSION": "12 (bookworm)",
        "VERSION_CODENAME": "bookworm",
        "ID": "debian",
        "HOME_URL": "https://www.debian.org/",
    }


@pytest.mark.parametrize(
    ("line", "value"),
    [
        ('ID="ubuntu"', "ubuntu"),
        ("ID='ubuntu'", "ubuntu"),
        ("ID=ubuntu", "ubuntu"),
        ('ID="a \\"quoted\\" word"', 'a "quoted" word'),
        ("ID='single $dollar'", "single $dollar"),
        ("ID=", ""),
        ('ID=""', ""),
        ("   ID=indented   ", "indented"),
    ],
)
def test_values_are_unquoted_as_a_shell_would(line: str, value: str) -> None:
    assert parse_os_release(line) == {"ID": value}


def test_comments_blank_and_malformed_lines_are_skipped() -> None:
    text = "\n".join(
        [
            "# ID=commented-out",
            "   # indented comment",
            "",
            "   ",
            "not a key value line",
            'BROKEN="unterminated',
            "ID=debian",
            'ID_LIKE="ubuntu debian"',
        ]
    )
    assert parse_os_release(text) == {"ID": "debian", "ID_LIKE": "ubuntu debian"}


def test_the_later_of_two_lines_wins() -> None:
    assert parse_os_release("ID=first\nID=second\n") == {"ID": "second"}


def test_empty_text_has_no_fields() -> None:
    assert parse_os_release("") == {}


def test_read_follows_the_usual_symlink_inside_the_image(tmp_path: Path) -> None:
    # Debian's /etc/os-release -> ../usr/lib/os-release; an absolute link must stay inside too.
    (tmp_path / "etc").mkdir()
    (tmp_path / "usr" / "lib").mkdir(parents=True)
    (tmp_path / "usr" / "lib" / "os-release").write_text(DEBIAN_12)
    (tmp_path / "etc" / "os-release").symlink_to("/usr/lib/os-release")
    assert read_os_release(tmp_path)["ID"] == "debian"


def test_read_falls_back_to_usr_lib(tmp_path: Path) -> None:
    (tmp_path / "usr" / "lib").mkdir(parents=True)
    (tmp_path / "usr" / "lib" / "os-release").write_text("ID=fedora\n")
    assert read_os_release(tmp_path) == {"ID": "fedora"}


def test_read_of_a_root_without_os_release_is_empty(tmp_path: Path) -> None:
    assert read_os_release(tmp_path) == {}
