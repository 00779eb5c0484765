"""Debian version strings (deb-version(7)) and package files read by the Debian plugin."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from aminator_debian.plugin import aminator_read_package_file
from aminator_debian.version import package_info, split_version
from aminator_ng.contract.model import PackageInfo
from aminator_ng.errors import RequestError


@pytest.mark.parametrize(
    ("full", "parts"),
    [
        ("1:2.3-4ubuntu1", ("1", "2.3", "4ubuntu1")),
        ("1.0", ("", "1.0", "")),
        ("1.0-2-3", ("", "1.0-2", "3")),
        ("1:2.3", ("1", "2.3", "")),
        ("2.36-9+deb12u4", ("", "2.36", "9+deb12u4")),
        ("2:1.2.3~rc1-0ubuntu1~22.04", ("2", "1.2.3~rc1", "0ubuntu1~22.04")),
    ],
)
def test_split_version(full: str, parts: tuple[str, str, str]) -> None:
    assert split_version(full) == parts


@pytest.mark.parametrize("full", ["1:2.3-4ubuntu1", "1.0", "1.0-2-3", "1:2.3"])
def test_package_info_writes_the_version_back_unchanged(full: str) -> None:
    info = package_info("hello", full, "amd64")
    assert info.full_version == full
    assert (info.name, info.arch) == ("hello", "amd64")


def test_a_deb_file_is_read(make_deb: Callable[..., Path]) -> None:
    deb = make_deb("hello", "1:2.0-3")
    assert aminator_read_package_file(path=deb) == PackageInfo(
        name="hello", version="2.0", release="3", arch="all", epoch="1"
    )


def test_a_native_deb_has_an_empty_release(make_deb: Callable[..., Path]) -> None:
    info = aminator_read_package_file(path=make_deb("native", "1.0"))
    assert info is not None
    assert (info.version, info.release) == ("1.0", "")


def test_a_damaged_deb_is_a_request_error(tmp_path: Path) -> None:
    fake = tmp_path / "notes.deb"
    fake.write_text("just some notes\n")
    with pytest.raises(RequestError, match=r"notes\.deb") as raised:
        aminator_read_package_file(path=fake)
    assert raised.value.exit_code == 2


def test_another_format_is_not_the_debian_plugins(tmp_path: Path) -> None:
    other = tmp_path / "hello-1.0-1.noarch.rpm"
    other.write_bytes(b"\xed\xab\xee\xdb not a deb")
    assert aminator_read_package_file(path=other) is None
