"""What the host checks before apt's fetched lists and downloads are shared between bakes."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from aminator_debian.cache import dearmored, verified_lists, vouched_debs
from tests.integration.rpms import SigningKey

PREFIX = "deb.example.org_debian_dists_bookworm_"
DEB = b"!<arch>\nnot really a package, but bytes with a digest\n"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


PACKAGES = f"""\
Package: greeter
Version: 1:2.0-1
Architecture: amd64
Size: {len(DEB)}
SHA256: {sha256(DEB)}

Package: other
Version: 1.0
Architecture: all
SHA256: {"0" * 64}
""".encode()
TRANSLATION = b"Package: greeter\nDescription-en: greets\n"


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, SigningKey]]:
    if shutil.which("gpg") is None or shutil.which("gpgv") is None:
        pytest.skip("needs gpg and gpgv")
    home = tmp_path_factory.mktemp("gnupg")
    made = {
        "archive": SigningKey(home / "archive", "archive@example.org"),
        "stranger": SigningKey(home / "stranger", "stranger@example.org"),
    }
    yield made
    for key in made.values():
        key.close()


def signed_lists(directory: Path, key: SigningKey) -> Path:
    directory.mkdir()
    (directory / f"{PREFIX}main_binary-amd64_Packages").write_bytes(PACKAGES)
    (directory / f"{PREFIX}main_i18n_Translation-en").write_bytes(TRANSLATION)
    (directory / "lock").touch()
    (directory / "partial").mkdir()
    release = "Origin: Example\nSuite: bookworm\nSHA256:\n" + "".join(
        f" {sha256(data)} {len(data)} {path}\n"
        for path, data in [
            ("main/binary-amd64/Packages", PACKAGES),
            ("main/i18n/Translation-en", TRANSLATION),
            ("main/binary-amd64/Packages.xz", b"other bytes"),
        ]
    )
    unsigned = directory.parent / "Release"
    unsigned.write_text(release)
    key._gpg(
        "--local-user",
        key.email,
        "--output",
        str(directory / f"{PREFIX}InRelease"),
        "--clearsign",
        str(unsigned),
    )
    return directory


def test_lists_signed_by_a_trusted_key_and_listed_with_their_digests_are_verified(
    keys: dict[str, SigningKey], tmp_path: Path
) -> None:
    lists = signed_lists(tmp_path / "lists", keys["archive"])
    trusted = [keys["archive"].public.read_bytes()]
    assert verified_lists(lists, trusted, tmp_path / "scratch")


def test_a_list_changed_after_the_fetch_is_not_verified(
    keys: dict[str, SigningKey], tmp_path: Path
) -> None:
    lists = signed_lists(tmp_path / "lists", keys["archive"])
    with (lists / f"{PREFIX}main_binary-amd64_Packages").open("ab") as changed:
        changed.write(b"\nPackage: evil\n")
    assert not verified_lists(lists, [keys["archive"].public.read_bytes()], tmp_path / "s")


@pytest.mark.parametrize(
    "change",
    ["stranger's key", "unlisted file", "filled directory", "no keys", "unsigned release"],
)
def test_lists_the_image_s_keys_do_not_vouch_for_are_not_verified(
    keys: dict[str, SigningKey], tmp_path: Path, change: str
) -> None:
    lists = signed_lists(tmp_path / "lists", keys["archive"])
    trusted = [keys["archive"].public.read_bytes()]
    if change == "stranger's key":
        trusted = [keys["stranger"].public.read_bytes()]
    elif change == "unlisted file":
        (lists / f"{PREFIX}contrib_binary-amd64_Packages").write_bytes(PACKAGES)
    elif change == "filled directory":
        (lists / "auxfiles").mkdir()
        (lists / "auxfiles" / "x").write_bytes(b"anything")
    elif change == "no keys":
        trusted = []
    else:
        inrelease = lists / f"{PREFIX}InRelease"
        inrelease.rename(lists / f"{PREFIX}Release")
    assert not verified_lists(lists, trusted, tmp_path / "scratch")


def test_an_armored_keyring_is_read_as_gpgv_reads_a_binary_one(
    keys: dict[str, SigningKey],
) -> None:
    key = keys["archive"]
    binary = subprocess.run(
        ["gpg", "--batch", "--export", key.email],
        env={**os.environ, "GNUPGHOME": str(key.home)},
        capture_output=True,
        check=True,
    ).stdout
    assert dearmored(key.public.read_bytes()) == binary
    assert dearmored(binary) == binary


def test_only_downloads_whose_digest_the_lists_give_are_vouched_for(tmp_path: Path) -> None:
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / f"{PREFIX}main_binary-amd64_Packages").write_bytes(PACKAGES)
    downloads = tmp_path / "archives"
    downloads.mkdir()
    good = downloads / "greeter_1%3a2.0-1_amd64.deb"
    good.write_bytes(DEB)
    tampered = downloads / "other_1.0_all.deb"
    tampered.write_bytes(b"same name, other bytes")
    unknown = downloads / "ghost_1.0_all.deb"
    unknown.write_bytes(DEB)
    assert vouched_debs(lists, [good, tampered, unknown, downloads / "junk.txt"]) == [good]
