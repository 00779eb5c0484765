"""What decides which package cache entry an image's bake shares: its apt sources, keys,
configuration and dpkg architectures."""

from __future__ import annotations

from pathlib import Path

from aminator_debian.cache import architectures, cache_key
from aminator_ng.api import Chroot

STATUS = """\
Package: adduser
Status: install ok installed
Architecture: all
Version: 3.134

Package: dpkg
Status: install ok installed
Architecture: arm64
Version: 1.21.22
"""


def image(
    root: Path, *, sources: str = "deb http://deb.example.org/debian bookworm main\n"
) -> Chroot:
    for path, text in {
        "var/lib/dpkg/status": STATUS,
        "etc/apt/sources.list": sources,
    }.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text)
    return Chroot(root)


def test_the_native_architecture_is_dpkgs_own_and_added_ones_follow(tmp_path: Path) -> None:
    chroot = image(tmp_path)
    assert architectures(chroot) == ["arm64"]
    (tmp_path / "var/lib/dpkg/arch").write_text("arm64\namd64\n")
    assert architectures(chroot) == ["arm64", "amd64"]


def test_other_sources_make_another_key_and_the_same_sources_the_same(tmp_path: Path) -> None:
    first = cache_key(image(tmp_path / "a")).layout.key
    again = cache_key(image(tmp_path / "b")).layout.key
    other = cache_key(
        image(tmp_path / "c", sources="deb http://deb.example.org/debian trixie main\n")
    ).layout.key
    assert first == again
    assert first["sources"] != other["sources"]
    assert first["architectures"] == other["architectures"] == "arm64"
