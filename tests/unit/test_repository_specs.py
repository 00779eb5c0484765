"""``--repo``, ``--repo-key`` and ``NAME=VERSION``: what is accepted before anything is acquired,
and how the Debian plugin writes repositories into an image root and takes them out again.

The image root is a plain directory under ``tmp_path``: no mount, no chroot.
"""

from __future__ import annotations

import re
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import pytest

from aminator_debian.apt import AptProvisioner
from aminator_debian.repository import SOURCES_FILE, SourceLine, update_failure, written_sources
from aminator_ng.contract.model import (
    ManifestEntry,
    PackageInfo,
    PackageRequest,
    Repository,
)
from aminator_ng.contract.plugins import Hooks
from aminator_ng.contract.provisioner import Provisioner
from aminator_ng.errors import CleanupError, CommandError, NotFoundError, RequestError
from aminator_ng.host.chroot import Chroot, created_directories
from aminator_ng.pipeline.bake import read_package_requests
from aminator_ng.pipeline.repositories import parse_repositories, read_repositories
from aminator_redhat.dnf import DnfProvisioner

ARMORED_KEY = (
    b"-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nmDMEZ...\n-----END PGP PUBLIC KEY BLOCK-----\n"
)
BINARY_KEY = b"\x98\x33\x04\x65\x00\x00\x00"


class NoPackageFiles:
    """Plugins that know the ``.deb`` ending and read no file: package names never reach
    the readers."""

    def package_file_suffixes(self) -> tuple[str, ...]:
        return (".deb",)


NO_HOOKS = cast(Hooks, NoPackageFiles())


@pytest.fixture
def image(tmp_path: Path) -> Path:
    root = tmp_path / "image"
    (root / "etc/apt/sources.list.d").mkdir(parents=True)
    (root / "etc/apt/sources.list").write_text("deb http://deb.debian.org/debian bookworm main\n")
    (root / "var/cache").mkdir(parents=True)
    return root


def tree(root: Path) -> dict[str, tuple[str, bytes, int]]:
    found: dict[str, tuple[str, bytes, int]] = {}
    for path in sorted(root.rglob("*")):
        info = path.lstat()
        content = path.read_bytes() if stat.S_ISREG(info.st_mode) else b""
        found[str(path.relative_to(root))] = (
            "dir" if stat.S_ISDIR(info.st_mode) else "file",
            content,
            stat.S_IMODE(info.st_mode),
        )
    return found


# NAME=VERSION


@pytest.mark.parametrize(
    ("spec", "name", "version"),
    [
        ("jq", "jq", None),
        ("hello=1.0-1", "hello", "1.0-1"),
        ("libfoo2=1:2.3~rc1+dfsg-4ubuntu1", "libfoo2", "1:2.3~rc1+dfsg-4ubuntu1"),
        ("g++=4:12.2.0-3", "g++", "4:12.2.0-3"),
        ("python3.11=3.11.2-6", "python3.11", "3.11.2-6"),
    ],
)
def test_a_package_name_may_pin_a_version(spec: str, name: str, version: str | None) -> None:
    [request] = read_package_requests(NO_HOOKS, [spec])
    assert (request.spec, request.name, request.pinned_version) == (spec, name, version)
    assert not request.is_file


@pytest.mark.parametrize(
    "spec", ["hello=", "=1.0", "hello==1.0", "hello=1.0 2", "hello=:1.0", "hello=1:", "-hello"]
)
def test_a_malformed_package_spec_is_a_request_error(spec: str) -> None:
    with pytest.raises(RequestError, match="not a package name or NAME=VERSION") as raised:
        read_package_requests(NO_HOOKS, [spec])
    assert repr(spec) in raised.value.message
    assert raised.value.hint and "NAME=VERSION" in raised.value.hint


def test_a_package_file_has_no_pinned_version(tmp_path: Path) -> None:
    request = PackageRequest("./a=1.deb", tmp_path / "a=1.deb", PackageInfo("a", "1", "", "all"))
    assert (request.name, request.pinned_version) == ("a", None)


# Source lines


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        (
            "deb http://deb.debian.org/debian bookworm main contrib",
            SourceLine("deb", "http://deb.debian.org/debian", "bookworm", ("main", "contrib")),
        ),
        (
            "deb [arch=amd64 signed-by=/k/x.gpg] https://x.example.org/apt stable main",
            SourceLine(
                "deb",
                "https://x.example.org/apt",
                "stable",
                ("main",),
                ("arch=amd64", "signed-by=/k/x.gpg"),
            ),
        ),
        (
            "  deb [ trusted=yes ]  file:/srv/repo ./  ",
            SourceLine("deb", "file:/srv/repo", "./", (), ("trusted=yes",)),
        ),
        (
            "deb-src [arch+=arm64] mirror+file:/etc/apt/mirrors.txt bookworm main",
            SourceLine(
                "deb-src",
                "mirror+file:/etc/apt/mirrors.txt",
                "bookworm",
                ("main",),
                ("arch+=arm64",),
            ),
        ),
    ],
)
def test_a_source_line_is_parsed(text: str, parsed: SourceLine) -> None:
    assert SourceLine.parse(text) == parsed
    assert SourceLine.parse(str(parsed)) == parsed


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("deb http://deb.debian.org/debian", "expected deb [options] URI suite"),
        ("deb http://deb.debian.org/debian bookworm", "needs a component"),
        ("deb file:/srv/repo ./ main", "takes no components"),
        ("deb [trusted] http://x.example.org/ ./", "'trusted' is not name=value"),
        ("deb deb.debian.org/debian bookworm main", "is not a URI"),
        ("rpm http://x.example.org/ ./", "expected deb"),
        ("deb [trusted=yes http://x.example.org/ ./", "is not a URI"),
    ],
)
def test_a_malformed_source_line_says_why(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=re.escape(reason)):
        SourceLine.parse(text)


def test_a_source_line_takes_more_options() -> None:
    line = SourceLine.parse("deb [arch-=i386] http://x.example.org/ ./")
    signed = line.with_option("signed-by=/etc/apt/keyrings/a.gpg")
    assert (
        str(signed) == "deb [arch-=i386 signed-by=/etc/apt/keyrings/a.gpg] http://x.example.org/ ./"
    )
    assert signed.option_names() == {"arch", "signed-by"}
    assert line.option_names() == {"arch"}


# --repo and --repo-key


@pytest.fixture
def repo_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "repo"
    (directory / "sub").mkdir(parents=True)
    (directory / "sub" / "app_1.0-1_all.deb").write_bytes(b"!<arch>\n")
    return directory


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    armored, binary = tmp_path / "repo.asc", tmp_path / "other.gpg"
    armored.write_bytes(ARMORED_KEY)
    binary.write_bytes(BINARY_KEY)
    return armored, binary


def test_a_directory_and_source_lines(repo_dir: Path, keys: tuple[Path, Path]) -> None:
    own = "deb [signed-by=/usr/share/keyrings/own.gpg] https://own.example.org/ ./"
    line = "deb https://x.example.org/apt stable main"
    read = read_repositories([str(repo_dir), line, own], keys)
    # The engine knows directories; the rest waits for the provisioner.
    assert read == (
        Repository(str(repo_dir), directory=repo_dir),
        Repository(line),
        Repository(own),
    )
    found = parse_repositories(AptProvisioner(), read, keys)
    assert found[0] == Repository(str(repo_dir), directory=repo_dir)
    assert found[1].parsed == SourceLine("deb", "https://x.example.org/apt", "stable", ("main",))
    # The keys sign every source line but the one that names its own keyring.
    assert found[1].keys == keys
    assert found[2].keys == ()
    assert found[0].keys == ()


def test_a_relative_directory_is_made_absolute(
    repo_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(repo_dir.parent)
    [found] = read_repositories(["repo"], [])
    assert found.directory == repo_dir


@pytest.mark.parametrize(
    ("spec", "error", "needle"),
    [
        (
            "/no/such/repository",
            NotFoundError,
            "repository directory not found: /no/such/repository",
        ),
        ("deb http://x.example.org/debian", RequestError, "'deb http://x.example.org/debian'"),
        ("http://x.example.org/debian bookworm main", RequestError, "neither a source line"),
        ("", RequestError, "it is empty"),
    ],
)
def test_a_bad_repository_names_itself(spec: str, error: type[Exception], needle: str) -> None:
    with pytest.raises(error, match=needle):
        parse_repositories(AptProvisioner(), read_repositories([spec], []), [])


@pytest.mark.parametrize("spec", ["debs", "./debs", "/srv/debs", "../x:y"])
def test_a_spec_that_is_a_path_must_be_a_directory(spec: str, tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="repository directory not found"):
        read_repositories([str(tmp_path / spec) if spec.startswith("/") else spec], [])


@pytest.mark.parametrize(
    "spec", ["deb https://x.example.org/ stable main", "https://x.example.org/el9", "acme:/pool"]
)
def test_any_other_spec_is_left_to_the_provisioner(spec: str) -> None:
    assert read_repositories([spec], []) == (Repository(spec),)


def test_a_directory_without_packages_is_refused(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(RequestError, match="holds no package files"):
        read_repositories([str(tmp_path / "empty")], [])


def test_repository_keys_are_checked(
    tmp_path: Path, repo_dir: Path, keys: tuple[Path, Path]
) -> None:
    line = "deb https://x.example.org/apt stable main"
    with pytest.raises(NotFoundError, match=re.escape("repository key not found: /no/key.asc")):
        read_repositories([line], [Path("/no/key.asc")])
    text = tmp_path / "key.txt"
    text.write_text("not a key\n")
    with pytest.raises(RequestError, match="not an OpenPGP public key"):
        read_repositories([line], [text])
    with pytest.raises(RequestError, match="none of them takes the key"):
        parse_repositories(AptProvisioner(), read_repositories([str(repo_dir)], keys), keys)
    own = read_repositories(["deb [signed-by=/k.gpg] https://x.example.org/ ./"], keys)
    with pytest.raises(RequestError, match="--repo-key"):
        parse_repositories(AptProvisioner(), own, keys)


# The engine's directories inside the image


def test_created_directories_are_removed_again(image: Path) -> None:
    chroot = Chroot(image)
    with created_directories(chroot, "/var/cache/aminator-ng/repos/0/pool") as pool:
        assert pool == image / "var/cache/aminator-ng/repos/0/pool"
        assert pool.is_dir()
    assert not (image / "var/cache/aminator-ng").exists()
    assert (image / "var/cache").is_dir()


def test_a_directory_left_full_is_an_error_not_a_deletion(image: Path) -> None:
    chroot = Chroot(image)
    with (
        pytest.raises(CleanupError, match="cannot remove"),
        created_directories(chroot, "/var/cache/aminator-ng/repos/0") as made,
    ):
        (made / "left").write_text("something a bake should have removed\n")
    assert (image / "var/cache/aminator-ng/repos/0/left").is_file()


# The provisioner interface


class Minimal(Provisioner):
    name = "minimal"

    def install(self, chroot: Chroot, packages: Sequence[PackageRequest]) -> None:
        pass

    def query(self, chroot: Chroot, names: Sequence[str]) -> list[PackageInfo]:
        return []

    def manifest(self, chroot: Chroot) -> list[ManifestEntry]:
        return []


def test_a_provisioner_without_repository_support_refuses_repositories(image: Path) -> None:
    chroot = Chroot(image)
    with Minimal().added_repositories(chroot, []):
        pass
    source = SourceLine.parse("deb https://x.example.org/ ./")
    with pytest.raises(RequestError, match="provisioner minimal cannot add repositories"):
        Minimal().added_repositories(chroot, [Repository("deb ...", parsed=source)])
    with pytest.raises(RequestError, match="provisioner minimal cannot add repositories"):
        Minimal().parse_repository("deb https://x.example.org/ ./", [])


# The Debian plugin's sources and keys


def source_repository(text: str, *keys: Path) -> Repository:
    return Repository(text, parsed=SourceLine.parse(text), keys=keys)


def test_source_lines_and_keys_are_written_then_taken_out(
    image: Path, keys: tuple[Path, Path]
) -> None:
    before = tree(image)
    chroot = Chroot(image)
    repositories = [
        source_repository("deb https://a.example.org/apt stable main", *keys),
        source_repository("deb [arch=amd64] https://b.example.org/ ./", keys[1]),
        source_repository("deb [trusted=yes] http://c.example.org/ ./"),
    ]
    with written_sources(chroot, repositories) as lines:
        keyrings = image / "etc/apt/keyrings"
        assert sorted(p.name for p in keyrings.iterdir()) == [
            "aminator-ng-0.asc",
            "aminator-ng-1.gpg",
        ]
        assert (keyrings / "aminator-ng-0.asc").read_bytes() == ARMORED_KEY
        assert (keyrings / "aminator-ng-1.gpg").read_bytes() == BINARY_KEY
        assert stat.S_IMODE((keyrings / "aminator-ng-1.gpg").stat().st_mode) == 0o644
        both = "/etc/apt/keyrings/aminator-ng-0.asc,/etc/apt/keyrings/aminator-ng-1.gpg"
        assert lines == [
            f"deb [signed-by={both}] https://a.example.org/apt stable main",
            "deb [arch=amd64 signed-by=/etc/apt/keyrings/aminator-ng-1.gpg]"
            " https://b.example.org/ ./",
            "deb [trusted=yes] http://c.example.org/ ./",
        ]
        written = (image / SOURCES_FILE.lstrip("/")).read_text()
        assert written.splitlines()[1:] == lines
    # The keyrings directory was made for the bake: it goes too.
    assert tree(image) == before


def test_an_existing_keyrings_directory_stays(image: Path, keys: tuple[Path, Path]) -> None:
    (image / "etc/apt/keyrings").mkdir()
    (image / "etc/apt/keyrings/vendor.gpg").write_bytes(BINARY_KEY)
    before = tree(image)
    repository = source_repository("deb https://a.example.org/apt stable main", keys[0])
    with written_sources(Chroot(image), [repository]):
        assert (image / "etc/apt/keyrings/aminator-ng-0.asc").is_file()
    assert tree(image) == before


def test_a_sources_file_of_the_image_is_restored(image: Path) -> None:
    own = image / SOURCES_FILE.lstrip("/")
    own.write_text("# the image's own file of that name\n")
    own.chmod(0o600)
    before = tree(image)
    with written_sources(Chroot(image), [source_repository("deb http://x.example.org/ ./")]):
        assert "x.example.org" in own.read_text()
    assert tree(image) == before


def command_error(stderr: str) -> CommandError:
    return CommandError(
        "apt-get update in the image failed (exit 100)",
        argv=["apt-get", "update"],
        returncode=100,
        stderr_tail=stderr,
    )


@pytest.mark.parametrize(
    "stderr",
    [
        "E: Failed to fetch http://127.0.0.1:8000/./InRelease  The following signatures couldn't "
        "be verified because the public key is not available: NO_PUBKEY 2C37559FE9292EC4\n"
        "E: Some index files failed to download. They have been ignored, or old ones used instead.",
        "E: The repository 'http://x.example.org ./ Release' does not have a Release file.",
        "E: Failed to fetch http://x.example.org/dists/nosuch/main/binary-amd64/Packages  "
        "404  Not Found [IP: 127.0.0.1 80]",
    ],
)
def test_a_repository_that_cannot_be_verified_is_a_request_error(stderr: str) -> None:
    failure: Any = update_failure(command_error(stderr))
    assert isinstance(failure, RequestError)
    assert failure.message.startswith("a repository cannot be used: ")
    assert "ignored" not in failure.message


def test_a_repository_that_cannot_be_reached_stays_a_failed_bake() -> None:
    error = command_error(
        "E: Failed to fetch http://x.example.org/./InRelease  Could not connect to x.example.org"
    )
    assert update_failure(error) is error


@pytest.mark.parametrize(
    "url",
    [
        "https://rpm.example.org/el9/x86_64/",
        "http://rpm.example.org/el9",
        "ftp://mirror.example.org/pub/el9/",
        "file:///srv/repo",
    ],
)
def test_a_repository_url_is_a_url_repository_signed_by_the_keys(
    url: str, keys: tuple[Path, Path]
) -> None:
    [found] = parse_repositories(DnfProvisioner(), read_repositories([url], keys), keys)
    assert found == Repository(url, parsed=url, keys=keys)


@pytest.mark.parametrize("spec", ["https://", "file://relative/path"])
def test_a_url_without_a_host_or_an_absolute_path_is_not_a_repository(spec: str) -> None:
    with pytest.raises((NotFoundError, RequestError)):
        parse_repositories(DnfProvisioner(), read_repositories([spec], []), [])


def test_apt_refuses_a_bare_url_and_says_how_to_write_it(tmp_path: Path) -> None:
    url = "https://apt.example.org/debian"
    with pytest.raises(RequestError, match="one-line source") as raised:
        AptProvisioner().parse_repository(url, [])
    assert raised.value.hint == f"write it as --repo 'deb {url} SUITE COMPONENT'"
