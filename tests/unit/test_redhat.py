"""The RPM family plugin without an image: rpm metadata, dnf's messages, the service shims.

Image roots are plain directories under ``tmp_path`` (no mount, no chroot); dnf's messages are
real dnf 4 outputs captured from bakes, replayed as ``Completed`` results. Tests that read real
package files build them with rpmbuild, and skip when it is not installed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import subprocess
from collections.abc import Mapping
from pathlib import Path

import pytest

import aminator_ng.host.run
from aminator_ng.api import (
    BakeError,
    Chroot,
    Completed,
    ManifestEntry,
    PackageInfo,
    PackageRequest,
    RequestError,
    replaced_file,
    run,
)
from aminator_redhat import shims
from aminator_redhat.dnf import DnfCommand, DnfProvisioner, dnf_spec, install_failure
from aminator_redhat.plugin import aminator_detect_distro, aminator_read_package_file
from aminator_redhat.rpmdb import RPM_MAGIC, parse_manifest, source_of
from tests.integration.rpms import build_rpm

DNF_INSTALL = ["/usr/bin/dnf", "--assumeyes", "install"]


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def needs_rpmbuild() -> None:
    if shutil.which("rpmbuild") is None or shutil.which("rpm") is None:
        pytest.skip("rpmbuild (and rpm) are not installed: no real .rpm can be built")


# rpmdb.source_of


@pytest.mark.parametrize(
    ("source_rpm", "expected"),
    [
        ("bash-5.1.8-9.el9.src.rpm", ("bash", "5.1.8-9.el9")),
        ("glibc-2.34-100.el9_4.2.src.rpm", ("glibc", "2.34-100.el9_4.2")),
        ("python-dateutil-2.8.1-7.el9.src.rpm", ("python-dateutil", "2.8.1-7.el9")),
        ("firmware-1.0-1.nosrc.rpm", ("firmware", "1.0-1")),
    ],
)
def test_source_of_splits_a_source_rpm_name(source_rpm: str, expected: tuple[str, str]) -> None:
    assert source_of(source_rpm) == expected


@pytest.mark.parametrize(
    "source_rpm",
    ["", "bash.src.rpm", "bash-5.1.8.src.rpm", "bash-5.1.8-9.el9.x86_64.rpm", "-1.0-1.src.rpm"],
)
def test_source_of_is_none_for_what_is_not_a_source_rpm_name(source_rpm: str) -> None:
    assert source_of(source_rpm) is None


# rpmdb.parse_manifest


def test_parse_manifest_reads_names_versions_and_sources() -> None:
    text = (
        "bash\t5.1.8-9.el9\tx86_64\tbash-5.1.8-9.el9.src.rpm\n"
        "python3-dateutil\t1:2.8.1-7.el9\tnoarch\tpython-dateutil-2.8.1-7.el9.src.rpm\n"
    )
    assert parse_manifest(text) == [
        ManifestEntry("bash", "5.1.8-9.el9", "x86_64", "bash", "5.1.8-9.el9"),
        ManifestEntry(
            "python3-dateutil", "1:2.8.1-7.el9", "noarch", "python-dateutil", "1:2.8.1-7.el9"
        ),
    ]


def test_parse_manifest_carries_the_epoch_into_the_source_version() -> None:
    line = "openssl-libs\t1:3.0.7-27.el9\tx86_64\topenssl-3.0.7-27.el9.src.rpm\n"
    (entry,) = parse_manifest(line)
    assert entry.version == "1:3.0.7-27.el9"
    assert entry.source_name == "openssl"
    assert entry.source_version == "1:3.0.7-27.el9"


def test_parse_manifest_drops_an_explicit_epoch_of_zero() -> None:
    (entry,) = parse_manifest("zlib\t0:1.2.11-40.el9\tx86_64\tzlib-1.2.11-40.el9.src.rpm\n")
    assert (entry.version, entry.source_version) == ("1.2.11-40.el9", "1.2.11-40.el9")


def test_parse_manifest_leaves_out_signing_keys() -> None:
    text = (
        "gpg-pubkey\t5a6340b3-6229229e\t(none)\t\n"
        "bash\t5.1.8-9.el9\tx86_64\tbash-5.1.8-9.el9.src.rpm\n"
        "gpg-pubkey\tfd431d51-4ae0493b\t(none)\t\n"
    )
    assert [entry.name for entry in parse_manifest(text)] == ["bash"]


def test_a_package_without_a_source_rpm_is_its_own_source() -> None:
    text = "hello\t2:1.0-1\tnoarch\t\nworld\t1.0-1\tnoarch\tnot-a-source-name\n"
    assert parse_manifest(text) == [
        ManifestEntry("hello", "2:1.0-1", "noarch", "hello", "2:1.0-1"),
        ManifestEntry("world", "1.0-1", "noarch", "world", "1.0-1"),
    ]


def test_parse_manifest_sorts_by_name_arch_and_version_and_skips_bad_lines() -> None:
    text = (
        "zlib\t1.2.11-40.el9\tx86_64\tzlib-1.2.11-40.el9.src.rpm\n"
        "glibc\t2.34-100.el9\ti686\tglibc-2.34-100.el9.src.rpm\n"
        "a line with no tabs\n"
        "\n"
        "kernel\t5.14.0-2.el9\tx86_64\tkernel-5.14.0-2.el9.src.rpm\n"
        "glibc\t2.34-100.el9\tx86_64\tglibc-2.34-100.el9.src.rpm\n"
        "kernel\t5.14.0-1.el9\tx86_64\tkernel-5.14.0-1.el9.src.rpm\n"
        "too\tfew\tfields\n"
    )
    assert [(e.name, e.arch, e.version) for e in parse_manifest(text)] == [
        ("glibc", "i686", "2.34-100.el9"),
        ("glibc", "x86_64", "2.34-100.el9"),
        ("kernel", "x86_64", "5.14.0-1.el9"),
        ("kernel", "x86_64", "5.14.0-2.el9"),
        ("zlib", "x86_64", "1.2.11-40.el9"),
    ]


def test_parse_manifest_of_nothing_is_empty() -> None:
    assert parse_manifest("") == []


# dnf.install_failure, on real dnf 4 output


def completed(returncode: int, stdout: str = "", stderr: str = "") -> Completed:
    return Completed([*DNF_INSTALL, "pkg"], returncode, stdout, stderr)


SCRIPTLET_FAILED = completed(
    0,
    stdout=(
        "Dependencies resolved.\n"
        "Installing:\n broken   noarch   1.0-1   @commandline   6.1 k\n"
        "Running transaction\n"
        "  Installing       : broken-1.0-1.noarch                                    1/1\n"
        "  Running scriptlet: broken-1.0-1.noarch                                    1/1\n"
        "warning: %post(broken-1.0-1.noarch) scriptlet failed, exit status 3\n"
        "\n"
        "Installed:\n  broken-1.0-1.noarch\n\nComplete!\n"
    ),
    stderr="Error in POSTIN scriptlet in rpm package broken\n",
)
NOTHING_PROVIDES = completed(
    1,
    stderr=(
        "Error: \n"
        " Problem: conflicting requests\n"
        "  - nothing provides no-such-thing needed by needy-1.0-1.noarch\n"
    ),
)
WRONG_ARCHITECTURE = completed(
    1,
    stderr=(
        "Error: \n"
        " Problem: conflicting requests\n"
        "  - package armthing-1.0-1.aarch64 does not have a compatible architecture\n"
    ),
)
NO_MATCH = completed(
    1,
    stdout="No match for argument: nosuchpkg\n",
    stderr="Error: Unable to find a match: nosuchpkg\n",
)
NOT_SIGNED = completed(
    1,
    stdout="Package greeter-1.0-1.noarch.rpm is not signed\n",
    stderr="Error: GPG check FAILED\n",
)


def repository_failed(repo_id: str) -> Completed:
    return completed(
        1,
        stderr=(
            f"Error: Failed to download metadata for repo '{repo_id}': Cannot download repomd.xml"
        ),
    )


def test_a_failing_scriptlet_fails_the_bake_though_dnf_succeeded() -> None:
    failure = install_failure(SCRIPTLET_FAILED, ["broken"])
    assert isinstance(failure, BakeError)
    assert failure.exit_code == 1
    assert (
        "installing package broken-1.0-1.noarch failed: its %post scriptlet exited with status 3"
        in str(failure)
    )


def test_a_scriptlet_killed_by_a_signal_says_so() -> None:
    result = completed(0, stdout="warning: %pretrans(x-1-1.noarch) scriptlet failed, signal 9\n")
    failure = install_failure(result, ["x"])
    assert isinstance(failure, BakeError)
    assert "its %pretrans scriptlet was killed by signal 9" in str(failure)


def test_a_missing_dependency_is_a_request_error() -> None:
    failure = install_failure(NOTHING_PROVIDES, ["needy"])
    assert isinstance(failure, RequestError)
    assert failure.exit_code == 2
    assert "nothing provides no-such-thing needed by needy-1.0-1.noarch" in str(failure)
    assert "needy" in str(failure).split(":")[0]


def test_a_package_of_another_architecture_is_a_request_error() -> None:
    failure = install_failure(WRONG_ARCHITECTURE, ["armthing"])
    assert isinstance(failure, RequestError)
    assert failure.exit_code == 2
    assert "armthing-1.0-1.aarch64 does not have a compatible architecture" in str(failure)
    assert failure.hint is not None and "architecture" in failure.hint


def test_a_package_the_repositories_lack_is_named_once() -> None:
    failure = install_failure(NO_MATCH, ["nosuchpkg"])
    assert isinstance(failure, RequestError)
    assert failure.exit_code == 2
    assert str(failure) == "package not found in the image's repositories: nosuchpkg"


def test_a_missing_pinned_package_is_named_as_it_was_asked_for() -> None:
    result = completed(
        1,
        stdout="No match for argument: greeting-lib-9.9\n",
        stderr="Error: Unable to find a match: greeting-lib-9.9\n",
    )
    asked = {"greeting-lib-9.9": "greeting-lib=9.9"}
    failure = install_failure(result, ["greeting-lib=9.9"], asked)
    assert isinstance(failure, RequestError)
    assert str(failure) == "package not found in the image's repositories: greeting-lib=9.9"


def test_an_unsigned_package_is_a_request_error_with_the_way_out() -> None:
    failure = install_failure(NOT_SIGNED, ["greeter"])
    assert isinstance(failure, RequestError)
    assert failure.exit_code == 2
    assert "greeter-1.0-1.noarch" in str(failure)
    assert "greeter-1.0-1.noarch.rpm" not in str(failure)
    assert failure.hint is not None
    assert "--repo-key" in failure.hint
    assert "--no-gpgcheck" in failure.hint


def test_a_failed_gpg_check_without_a_package_names_what_was_asked() -> None:
    failure = install_failure(completed(1, stderr="Error: GPG check FAILED\n"), ["a", "b"])
    assert isinstance(failure, RequestError)
    assert "package a, b failed its signature check" in str(failure)


def test_an_added_repository_that_fails_is_a_request_error() -> None:
    failure = install_failure(repository_failed("aminator-ng-0"), ["hello"])
    assert isinstance(failure, RequestError)
    assert failure.exit_code == 2
    assert "aminator-ng-0" in str(failure)
    assert "Cannot download repomd.xml" in str(failure)
    assert failure.hint is not None and "--repo" in failure.hint


def test_an_image_repository_that_fails_is_a_bake_error() -> None:
    failure = install_failure(repository_failed("appstream"), ["hello"])
    assert isinstance(failure, BakeError)
    assert not isinstance(failure, RequestError)
    assert failure.exit_code == 1
    assert "appstream" in str(failure)


def test_a_clean_transaction_is_no_failure() -> None:
    result = completed(
        0,
        stdout=(
            "Dependencies resolved.\n"
            "Running transaction\n"
            "  Installing       : hello-1.0-1.noarch                                     1/1\n"
            "  Verifying        : hello-1.0-1.noarch                                     1/1\n"
            "\nInstalled:\n  hello-1.0-1.noarch\n\nComplete!\n"
        ),
    )
    assert install_failure(result, ["hello"]) is None


def test_an_unknown_failure_is_a_bake_error_with_the_last_line() -> None:
    result = completed(
        1, stderr="Something odd happened.\n\nError: Transaction test error: disk full  \n\n"
    )
    failure = install_failure(result, ["hello", "world"])
    assert isinstance(failure, BakeError)
    assert not isinstance(failure, RequestError)
    assert failure.exit_code == 1
    assert str(failure) == (
        "installing hello, world failed: Error: Transaction test error: disk full"
    )


def test_an_unknown_failure_without_stderr_gives_the_exit_code() -> None:
    failure = install_failure(completed(200), ["hello"])
    assert isinstance(failure, BakeError)
    assert "dnf exited 200" in str(failure)


# dnf.dnf_spec


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("hello", "hello"),
        ("hello=1.0-1", "hello-1.0-1"),
        ("hello=1.0", "hello-1.0"),
        ("hello=2:1.0-1", "hello-2:1.0-1"),
    ],
)
def test_dnf_spec(spec: str, expected: str) -> None:
    assert dnf_spec(PackageRequest(spec)) == expected


# DnfProvisioner


HELLO = PackageInfo(name="hello", version="1.0", release="1", arch="noarch")
HELLO_EPOCH_2 = PackageInfo(name="hello", version="1.0", release="1", arch="noarch", epoch="2")


@pytest.mark.parametrize(
    ("installed", "pinned", "satisfied"),
    [
        (HELLO, "1.0", True),
        (HELLO, "1.0-1", True),
        (HELLO, "1.0-2", False),
        (HELLO, "1.1", False),
        (HELLO, "1", False),
        (HELLO, "0:1.0-1", True),
        (HELLO, "0:1.0", True),
        (HELLO, "2:1.0", False),
        (HELLO, "2:1.0-1", False),
        (HELLO_EPOCH_2, "2:1.0", True),
        (HELLO_EPOCH_2, "2:1.0-1", True),
        (HELLO_EPOCH_2, "2:1.0-2", False),
        (HELLO_EPOCH_2, "3:1.0", False),
        # Without an epoch, a pin is met by any epoch, as dnf matches NAME-VERSION.
        (HELLO_EPOCH_2, "1.0", True),
        (HELLO_EPOCH_2, "1.0-1", True),
        (HELLO_EPOCH_2, "0:1.0", False),
    ],
)
def test_satisfies_pin(installed: PackageInfo, pinned: str, satisfied: bool) -> None:
    assert DnfProvisioner().satisfies_pin(installed, pinned) is satisfied


@pytest.mark.parametrize("pinned", ["1.0", "1.0-1", "0:1.0-1"])
def test_an_explicit_epoch_of_zero_is_no_epoch(pinned: str) -> None:
    installed = PackageInfo(name="hello", version="1.0", release="1", arch="noarch", epoch="0")
    assert DnfProvisioner().satisfies_pin(installed, pinned)


def test_image_tags_record_signature_checking() -> None:
    assert DnfProvisioner().image_tags() == {"gpgcheck": "on"}
    assert DnfProvisioner(gpgcheck=True).image_tags() == {"gpgcheck": "on"}
    assert DnfProvisioner(gpgcheck=False).image_tags() == {"gpgcheck": "off"}


# DnfCommand


def tool(root: Path, inside: str, content: bytes = b"#!/bin/sh\n") -> Path:
    path = root / inside.lstrip("/")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    path.chmod(0o755)
    return path


def test_dnf_is_the_default(tmp_path: Path) -> None:
    (tmp_path / "usr" / "bin").mkdir(parents=True)
    assert DnfCommand.of(Chroot(tmp_path)).path == "/usr/bin/dnf"


def test_dnf_3_when_the_image_has_only_it(tmp_path: Path) -> None:
    tool(tmp_path, "usr/bin/dnf-3")
    assert DnfCommand.of(Chroot(tmp_path)).path == "/usr/bin/dnf-3"


def test_dnf_when_the_image_has_dnf_and_dnf_3(tmp_path: Path) -> None:
    tool(tmp_path, "usr/bin/dnf-3")
    (tmp_path / "usr" / "bin" / "dnf").symlink_to("dnf-3")
    assert DnfCommand.of(Chroot(tmp_path)).path == "/usr/bin/dnf"


def test_dnf5_when_the_image_has_it(tmp_path: Path) -> None:
    tool(tmp_path, "usr/bin/dnf5")
    # Fedora's dnf is a link to dnf5, which an absolute link resolves to inside the image.
    (tmp_path / "usr" / "bin" / "dnf").symlink_to("/usr/bin/dnf5")
    dnf = DnfCommand.of(Chroot(tmp_path))
    assert dnf.path == "/usr/bin/dnf5"
    argv = dnf.argv("install", "x", gpgcheck=False)
    assert argv[0] == "/usr/bin/dnf5"
    assert "--no-gpgchecks" in argv
    assert "--nogpgcheck" not in argv
    assert argv[-2:] == ["install", "x"]
    assert "--no-gpgchecks" not in dnf.argv("install", "x")


@pytest.mark.parametrize("name", ["dnf", "dnf-3"])
def test_dnf4_spells_nogpgcheck_its_way(tmp_path: Path, name: str) -> None:
    tool(tmp_path, f"usr/bin/{name}")
    dnf = DnfCommand.of(Chroot(tmp_path))
    unchecked = dnf.argv("install", "x", "y", gpgcheck=False)
    assert unchecked[0] == f"/usr/bin/{name}"
    assert "--nogpgcheck" in unchecked
    assert unchecked.index("--nogpgcheck") < unchecked.index("install")
    assert unchecked[-3:] == ["install", "x", "y"]
    assert "--assumeyes" in unchecked
    checked = dnf.argv("install", "x", "y", gpgcheck=True)
    assert "--nogpgcheck" not in checked
    assert "--no-gpgchecks" not in checked
    assert checked == [f"/usr/bin/{name}", "--assumeyes", "install", "x", "y"]


# plugin.aminator_detect_distro

RECOGNISED = ["rhel", "fedora", "centos", "amzn", "rocky", "almalinux"]


@pytest.fixture
def dnf_root(tmp_path: Path) -> Path:
    tool(tmp_path, "usr/bin/dnf")
    return tmp_path


@pytest.mark.parametrize("os_id", RECOGNISED)
def test_a_recognised_id_with_dnf_is_redhat(dnf_root: Path, os_id: str) -> None:
    os_release = {"ID": os_id, "VERSION_ID": "9.4", "PRETTY_NAME": f"{os_id} 9.4"}
    distro = aminator_detect_distro(os_release=os_release, root=dnf_root)
    assert distro is not None
    assert distro.family == "redhat"
    assert distro.package_format == "rpm"
    assert (distro.os_id, distro.version_id, distro.pretty_name) == (os_id, "9.4", f"{os_id} 9.4")


@pytest.mark.parametrize("like", RECOGNISED)
def test_a_recognised_id_like_with_dnf_is_redhat(dnf_root: Path, like: str) -> None:
    os_release = {"ID": "synthel", "ID_LIKE": f"something {like}", "VERSION_ID": "9"}
    distro = aminator_detect_distro(os_release=os_release, root=dnf_root)
    assert distro is not None
    assert (distro.family, distro.package_format) == ("redhat", "rpm")
    assert distro.os_id == "synthel"


def test_dnf_3_alone_is_enough(tmp_path: Path) -> None:
    tool(tmp_path, "usr/bin/dnf-3")
    distro = aminator_detect_distro(os_release={"ID": "rocky"}, root=tmp_path)
    assert distro is not None and distro.family == "redhat"


@pytest.mark.parametrize(
    "os_release",
    [{"ID": "debian"}, {"ID": "ubuntu", "ID_LIKE": "debian"}, {}, {"ID": "arch"}],
)
def test_other_distributions_are_not_this_plugins(
    dnf_root: Path, os_release: Mapping[str, str]
) -> None:
    assert aminator_detect_distro(os_release=os_release, root=dnf_root) is None


def test_a_yum_only_image_is_refused(tmp_path: Path) -> None:
    tool(tmp_path, "usr/bin/yum")
    with pytest.raises(RequestError) as raised:
        aminator_detect_distro(
            os_release={"ID": "amzn", "PRETTY_NAME": "Amazon Linux 2"}, root=tmp_path
        )
    assert raised.value.exit_code == 2
    assert "yum" in str(raised.value)
    assert "Amazon Linux 2" in str(raised.value)
    assert raised.value.hint is not None and "Amazon Linux 2023" in raised.value.hint


def test_an_image_without_dnf_is_refused(tmp_path: Path) -> None:
    (tmp_path / "usr" / "bin").mkdir(parents=True)
    with pytest.raises(RequestError, match="has no dnf") as raised:
        aminator_detect_distro(os_release={"ID": "centos"}, root=tmp_path)
    assert raised.value.exit_code == 2


def test_a_dnf_directory_is_not_dnf(tmp_path: Path) -> None:
    (tmp_path / "usr" / "bin" / "dnf").mkdir(parents=True)
    with pytest.raises(RequestError, match="has no dnf"):
        aminator_detect_distro(os_release={"ID": "fedora"}, root=tmp_path)


# plugin.aminator_read_package_file


def test_a_damaged_rpm_is_a_request_error(tmp_path: Path) -> None:
    junk = tmp_path / "x.rpm"
    junk.write_bytes(b"this is no package\n")
    with pytest.raises(RequestError, match=r"x\.rpm") as raised:
        aminator_read_package_file(path=junk)
    assert raised.value.exit_code == 2


def test_an_rpm_lead_followed_by_junk_is_a_request_error(tmp_path: Path) -> None:
    if shutil.which("rpm") is None:
        pytest.skip("rpm is not installed")
    junk = tmp_path / "lead-only.rpm"
    junk.write_bytes(RPM_MAGIC + b"\x00" * 200)
    with pytest.raises(RequestError, match=r"lead-only\.rpm") as raised:
        aminator_read_package_file(path=junk)
    assert raised.value.exit_code == 2


def test_another_format_is_not_the_redhat_plugins(tmp_path: Path) -> None:
    deb = tmp_path / "x.deb"
    deb.write_bytes(b"!<arch>\ndebian-binary   ")
    assert aminator_read_package_file(path=deb) is None


def test_a_missing_file_is_not_the_redhat_plugins(tmp_path: Path) -> None:
    assert aminator_read_package_file(path=tmp_path / "absent.tar") is None


def test_a_real_rpm_is_read_without_touching_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    needs_rpmbuild()
    (tmp_path / "build").mkdir()
    rpm = build_rpm(tmp_path / "build", "hello", "1.0", "2")

    # Debian's rpm keeps its database under ~/.rpmdb and creates it on any query. Commands get
    # a fixed HOME (/root, which may have one already): point both HOME and the commands' HOME
    # at an empty directory of the test's own.
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    real_environment = aminator_ng.host.run.command_environment

    def environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
        return {**real_environment(extra), "HOME": str(home)}

    monkeypatch.setattr(aminator_ng.host.run, "command_environment", environment)

    info = aminator_read_package_file(path=rpm)
    assert info == PackageInfo(name="hello", version="1.0", release="2", arch="noarch", epoch="")
    assert list(home.iterdir()) == []

    # The check above can fail: a query of the host's default database does create it there.
    run(["rpm", "--query", "--package", rpm], check=False)
    assert (home / ".rpmdb").exists()


def test_a_package_with_an_epoch_is_read_with_it(tmp_path: Path) -> None:
    needs_rpmbuild()
    rpm = build_rpm(tmp_path, "withepoch", epoch="3")
    assert aminator_read_package_file(path=rpm) == PackageInfo(
        name="withepoch", version="1.0", release="1", arch="noarch", epoch="3"
    )


def test_an_explicit_epoch_of_zero_is_read_as_none(tmp_path: Path) -> None:
    needs_rpmbuild()
    rpm = build_rpm(tmp_path, "zeroepoch", epoch="0")
    info = aminator_read_package_file(path=rpm)
    assert info is not None
    assert info.epoch == ""
    assert info.full_version == "1.0-1"


def test_a_source_rpm_is_refused(tmp_path: Path) -> None:
    needs_rpmbuild()
    top = tmp_path / "rpmbuild"
    spec = tmp_path / "hello.spec"
    spec.write_text(
        "Name: hello\nVersion: 1.0\nRelease: 1\nSummary: hello\nLicense: MIT\n"
        "BuildArch: noarch\n\n%description\ntest\n\n%files\n"
    )
    subprocess.run(
        ["rpmbuild", "-bs", "--quiet", "--define", f"_topdir {top}", str(spec)],
        check=True,
        capture_output=True,
    )
    (source,) = (top / "SRPMS").glob("hello-1.0-1*.src.rpm")
    with pytest.raises(RequestError, match="source package") as raised:
        aminator_read_package_file(path=source)
    assert raised.value.exit_code == 2
    assert raised.value.hint is not None and "rpmbuild --rebuild" in raised.value.hint


# shims: the scripts


@pytest.fixture
def fake_systemctl(tmp_path: Path) -> tuple[Path, Path]:
    """The SYSTEMCTL_SHIM, its REAL_SYSTEMCTL a fake that logs each call's arguments, one line
    per call, each argument in brackets. Returns (shim, log)."""
    log = tmp_path / "calls.log"
    fake = tmp_path / "real-systemctl"
    fake.write_text(f"#!/bin/sh\nprintf '[%s]' \"$@\" >> '{log}'\necho >> '{log}'\nexit 0\n")
    fake.chmod(0o755)
    script = shims.SYSTEMCTL_SHIM.replace(shims.REAL_SYSTEMCTL.encode(), str(fake).encode())
    assert script != shims.SYSTEMCTL_SHIM
    shim = tmp_path / "systemctl"
    shim.write_bytes(script)
    return shim, log


def calls(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def sh(script: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["/bin/sh", str(script), *args], capture_output=True, text=True)


def test_enable_now_enables_without_starting(fake_systemctl: tuple[Path, Path]) -> None:
    shim, log = fake_systemctl
    assert sh(shim, "enable", "--now", "foo.service").returncode == 0
    assert calls(log) == ["[enable][foo.service]"]


def test_now_before_the_verb_is_dropped_too(fake_systemctl: tuple[Path, Path]) -> None:
    shim, log = fake_systemctl
    assert sh(shim, "--now", "disable", "foo.service").returncode == 0
    assert calls(log) == ["[disable][foo.service]"]


def test_start_starts_nothing(fake_systemctl: tuple[Path, Path]) -> None:
    shim, log = fake_systemctl
    for verb in ("start", "restart", "try-restart", "stop", "reload", "daemon-reload"):
        done = sh(shim, verb, "foo.service")
        assert done.returncode == 0, verb
        assert "not running" in done.stderr
    assert calls(log) == []


def test_is_active_and_status_say_inactive(fake_systemctl: tuple[Path, Path]) -> None:
    shim, log = fake_systemctl
    assert sh(shim, "is-active", "foo").returncode == 3
    assert sh(shim, "--quiet", "is-active", "foo").returncode == 3
    assert sh(shim, "status", "foo").returncode == 3
    assert calls(log) == []


def test_is_failed_says_not_failed(fake_systemctl: tuple[Path, Path]) -> None:
    shim, log = fake_systemctl
    assert sh(shim, "is-failed", "foo").returncode == 1
    assert calls(log) == []


def test_options_before_the_verb_reach_the_real_systemctl(
    fake_systemctl: tuple[Path, Path],
) -> None:
    shim, log = fake_systemctl
    assert sh(shim, "--quiet", "preset", "foo").returncode == 0
    assert sh(shim, "--no-reload", "mask", "bar.service").returncode == 0
    assert calls(log) == ["[--quiet][preset][foo]", "[--no-reload][mask][bar.service]"]


def test_an_argument_with_a_space_reaches_the_real_systemctl_whole(
    fake_systemctl: tuple[Path, Path],
) -> None:
    shim, log = fake_systemctl
    assert sh(shim, "enable", "odd name.service", "--now").returncode == 0
    assert calls(log) == ["[enable][odd name.service]"]


def test_the_real_systemctls_exit_status_is_kept(tmp_path: Path) -> None:
    fake = tmp_path / "real-systemctl"
    fake.write_text("#!/bin/sh\nexit 4\n")
    fake.chmod(0o755)
    shim = tmp_path / "systemctl"
    shim.write_bytes(
        shims.SYSTEMCTL_SHIM.replace(shims.REAL_SYSTEMCTL.encode(), str(fake).encode())
    )
    assert sh(shim, "is-enabled", "foo").returncode == 4


def test_the_service_shim_starts_nothing(tmp_path: Path) -> None:
    shim = tmp_path / "service"
    shim.write_bytes(shims.SERVICE_SHIM)
    started = sh(shim, "foo", "start")
    assert started.returncode == 0
    assert "not running 'service foo start'" in started.stderr
    assert sh(shim, "foo", "status").returncode == 3
    assert sh(shim, "foo", "stop").returncode == 0


# shims.shim_service_managers

SYSTEMCTL_BYTES = b"\x7fELF the image's own systemctl\x00\xff\n"
SERVICE_BYTES = b"#!/bin/sh\n# the image's own service\n"


@pytest.fixture
def image(tmp_path: Path) -> Path:
    """A merged-/usr root: /bin is a link to usr/bin; /run exists (a tmpfs in a bake)."""
    root = tmp_path / "image"
    tool(root, "usr/bin/systemctl", SYSTEMCTL_BYTES)
    tool(root, "usr/sbin/service", SERVICE_BYTES)
    (root / "usr" / "sbin" / "service").chmod(0o750)
    (root / "bin").symlink_to("usr/bin")
    (root / "sbin").symlink_to("usr/sbin")
    (root / "run").mkdir()
    return root


def test_the_shims_are_in_place_for_the_stack_and_gone_after(image: Path) -> None:
    systemctl = image / "usr" / "bin" / "systemctl"
    service = image / "usr" / "sbin" / "service"
    with contextlib.ExitStack() as stack:
        shims.shim_service_managers(Chroot(image), stack)
        assert systemctl.read_bytes() == shims.SYSTEMCTL_SHIM
        assert mode_of(systemctl) == 0o755
        assert service.read_bytes() == shims.SERVICE_SHIM
        assert mode_of(service) == 0o755
        real = image / shims.REAL_SYSTEMCTL.lstrip("/")
        assert real.read_bytes() == SYSTEMCTL_BYTES
        assert mode_of(real) == 0o755
        assert shims.REAL_SYSTEMCTL.encode() in systemctl.read_bytes()
    assert systemctl.read_bytes() == SYSTEMCTL_BYTES
    assert mode_of(systemctl) == 0o755
    assert service.read_bytes() == SERVICE_BYTES
    assert mode_of(service) == 0o750
    assert not (image / "run" / "aminator-ng").exists()
    assert list((image / "run").iterdir()) == []
    assert (image / "bin").is_symlink() and os.readlink(image / "bin") == "usr/bin"


def test_the_originals_come_back_when_the_install_fails(image: Path) -> None:
    systemctl = image / "usr" / "bin" / "systemctl"
    with pytest.raises(RuntimeError), contextlib.ExitStack() as stack:
        shims.shim_service_managers(Chroot(image), stack)
        raise RuntimeError("dnf failed")
    assert systemctl.read_bytes() == SYSTEMCTL_BYTES
    assert not (image / "run" / "aminator-ng").exists()


def test_a_systemctl_a_package_installed_during_the_bake_is_kept(image: Path) -> None:
    systemctl = image / "usr" / "bin" / "systemctl"
    service = image / "usr" / "sbin" / "service"
    new = b"\x7fELF systemd's update\n"
    with contextlib.ExitStack() as stack:
        shims.shim_service_managers(Chroot(image), stack)
        # As rpm installs a file: write it under a temporary name, rename it over the old one.
        staged = systemctl.with_name("systemctl;6650a1b2")
        staged.write_bytes(new)
        staged.chmod(0o755)
        staged.replace(systemctl)  # os.replace: rename(2)
    assert systemctl.read_bytes() == new
    assert service.read_bytes() == SERVICE_BYTES
    assert not (image / "run" / "aminator-ng").exists()


def test_a_split_usr_image_has_both_paths_shimmed_and_restored(tmp_path: Path) -> None:
    root = tmp_path / "image"
    tool(root, "usr/bin/systemctl", SYSTEMCTL_BYTES)
    (root / "bin").mkdir()
    (root / "bin" / "systemctl").symlink_to("/usr/bin/systemctl")
    (root / "run").mkdir()
    with contextlib.ExitStack() as stack:
        shims.shim_service_managers(Chroot(root), stack)
        assert not (root / "bin" / "systemctl").is_symlink()
        assert (root / "bin" / "systemctl").read_bytes() == shims.SYSTEMCTL_SHIM
        assert (root / "usr" / "bin" / "systemctl").read_bytes() == shims.SYSTEMCTL_SHIM
        assert (root / "run" / "aminator-ng" / "systemctl").read_bytes() == SYSTEMCTL_BYTES
    assert os.readlink(root / "bin" / "systemctl") == "/usr/bin/systemctl"
    assert (root / "usr" / "bin" / "systemctl").read_bytes() == SYSTEMCTL_BYTES
    assert not (root / "run" / "aminator-ng").exists()


def test_an_image_without_service_managers_is_left_alone(tmp_path: Path) -> None:
    (tmp_path / "usr" / "bin").mkdir(parents=True)
    (tmp_path / "run").mkdir()
    with contextlib.ExitStack() as stack:
        shims.shim_service_managers(Chroot(tmp_path), stack)
        assert list((tmp_path / "usr" / "bin").iterdir()) == []
        assert list((tmp_path / "run").iterdir()) == []
    assert list((tmp_path / "usr" / "bin").iterdir()) == []


# chroot.replaced_file(keep_if_replaced=...)


def _replace_by_rename(path: Path, content: bytes) -> None:
    staged = path.with_name(path.name + ".new")
    staged.write_bytes(content)
    staged.replace(path)  # os.replace: rename(2), a new inode at the path


@pytest.fixture
def etc(tmp_path: Path) -> Path:
    (tmp_path / "etc").mkdir()
    original = tmp_path / "etc" / "tool"
    original.write_bytes(b"original\n")
    original.chmod(0o700)
    return tmp_path / "etc"


@pytest.mark.parametrize(
    ("keep", "expected"),
    [(True, b"installed by a package\n"), (False, b"original\n")],
    ids=["kept", "restored"],
)
def test_a_file_replaced_in_the_context(etc: Path, keep: bool, expected: bytes) -> None:
    chroot = Chroot(etc.parent)
    with replaced_file(chroot, "/etc/tool", b"shim\n", keep_if_replaced=keep) as path:
        assert path.read_bytes() == b"shim\n"
        _replace_by_rename(path, b"installed by a package\n")
    assert (etc / "tool").read_bytes() == expected
    assert not (etc / "tool.new").exists()


def test_keep_if_replaced_is_off_by_default(etc: Path) -> None:
    with replaced_file(Chroot(etc.parent), "/etc/tool", b"shim\n") as path:
        _replace_by_rename(path, b"installed by a package\n")
    assert (etc / "tool").read_bytes() == b"original\n"
    assert mode_of(etc / "tool") == 0o700


@pytest.mark.parametrize("keep", [True, False])
def test_a_file_not_replaced_is_restored_either_way(etc: Path, keep: bool) -> None:
    with replaced_file(Chroot(etc.parent), "/etc/tool", b"shim\n", keep_if_replaced=keep):
        pass
    assert (etc / "tool").read_bytes() == b"original\n"
    assert mode_of(etc / "tool") == 0o700


def test_a_file_written_in_place_is_still_ours_and_restored(etc: Path) -> None:
    # Writing through the same inode is not a replacement: the shim's own file, rewritten.
    with replaced_file(Chroot(etc.parent), "/etc/tool", b"shim\n", keep_if_replaced=True) as path:
        path.write_bytes(b"rewritten in place\n")
    assert (etc / "tool").read_bytes() == b"original\n"


def test_an_absent_file_replaced_in_the_context_is_kept(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    with replaced_file(Chroot(tmp_path), "/etc/new", b"shim\n", keep_if_replaced=True) as path:
        _replace_by_rename(path, b"from a package\n")
    assert (tmp_path / "etc" / "new").read_bytes() == b"from a package\n"
