"""apt's own reasons in the one-line error, read from one real ``apt-get install``'s output."""

from __future__ import annotations

import pytest

from aminator_debian.failure import install_failure, unmet_dependencies
from aminator_ng.api import BakeError, Completed, RequestError

# apt 2.6, asked for nginx while an upgraded nginx-common is pinned in.
UNMET_STDOUT = """\
Reading package lists...
Building dependency tree...
Reading state information...
Some packages could not be installed. This may mean that you have
requested an impossible situation or if you are using the unstable
distribution that some required packages have not yet been created
or been moved out of Incoming.
The following information may help to resolve the situation:

The following packages have unmet dependencies:
 nginx : Depends: nginx-common (< 1.22.1-9+deb12u9.1~) but 1.22.1-9+deb12u11 is to be installed
         Depends: libnginx-mod-http-geoip (= 1.22.1-9+deb12u9) but it is not going to be installed
 needy : Depends: no-such-dependency-anywhere but it is not installable
"""
UNMET_STDERR = "E: Unable to correct problems, you have held broken packages.\n"

SCRIPT_STDERR = """\
dpkg: error processing package broken (--configure):
 installed broken package post-installation script subprocess returned error exit status 3
Errors were encountered while processing:
 broken
E: Sub-process /usr/bin/dpkg returned an error code (1)
"""
CORRUPT_STDERR = """\
dpkg-deb: error: <decompress> subprocess returned error exit status 2
dpkg: error processing archive /var/cache/apt/archives/hello_2.10-3_amd64.deb (--unpack):
 dpkg-deb --fsys-tarfile subprocess returned error exit status 2
Errors were encountered while processing:
 /var/cache/apt/archives/hello_2.10-3_amd64.deb
E: Sub-process /usr/bin/dpkg returned an error code (1)
"""


def finished(returncode: int, stdout: str = "", stderr: str = "") -> Completed:
    return Completed(["apt-get", "install"], returncode, stdout, stderr)


def test_every_unmet_dependency_is_named_with_its_package() -> None:
    assert unmet_dependencies(UNMET_STDOUT) == [
        "nginx : Depends: nginx-common (< 1.22.1-9+deb12u9.1~) but 1.22.1-9+deb12u11 is to be "
        "installed",
        "nginx : Depends: libnginx-mod-http-geoip (= 1.22.1-9+deb12u9) but it is not going to be "
        "installed",
        "needy : Depends: no-such-dependency-anywhere but it is not installable",
    ]


def test_an_unmet_dependency_is_a_request_error_quoting_apt() -> None:
    error = install_failure(finished(100, UNMET_STDOUT, UNMET_STDERR), ["nginx"])
    assert isinstance(error, RequestError)
    assert "nginx-common (< 1.22.1-9+deb12u9.1~) but 1.22.1-9+deb12u11 is to be installed" in str(
        error
    )
    assert "refused" not in str(error)


@pytest.mark.parametrize(
    ("stderr", "needle"),
    [
        ("E: Unable to locate package no-such-package\n", "no-such-package"),
        ("E: Version '9.9' for 'hello' was not found\n", "version 9.9 of package hello"),
        ("E: Package 'ghost' has no installation candidate\n", "ghost"),
    ],
)
def test_what_the_repositories_lack_is_a_request_error(stderr: str, needle: str) -> None:
    error = install_failure(finished(100, "", stderr), ["x"])
    assert isinstance(error, RequestError)
    assert needle in str(error)


def test_an_unauthenticated_package_is_a_request_error_naming_it() -> None:
    stdout = "WARNING: The following packages cannot be authenticated!\n  greeter libgreeting\n"
    stderr = (
        "E: There were unauthenticated packages and -y was used without --allow-unauthenticated\n"
    )
    error = install_failure(finished(100, stdout, stderr), ["greeter"])
    assert isinstance(error, RequestError)
    assert "greeter libgreeting" in str(error)


@pytest.mark.parametrize(
    ("stderr", "needle"),
    [
        (
            SCRIPT_STDERR,
            "installing package broken failed: its post-installation script returned exit status 3",
        ),
        (CORRUPT_STDERR, "dpkg-deb --fsys-tarfile subprocess returned error exit status 2"),
        (
            "E: Failed to fetch http://deb.debian.org/debian/pool/main/h/hello/hello_2.10-3_amd64.deb"
            "  404  Not Found [IP: 151.101.2.132 80]\n",
            "404 Not Found",
        ),
    ],
)
def test_a_failed_install_is_a_bake_error_with_dpkg_s_or_apt_s_reason(
    stderr: str, needle: str
) -> None:
    error = install_failure(finished(100, "", stderr), ["broken"])
    assert isinstance(error, BakeError) and not isinstance(error, RequestError)
    assert needle in str(error)


def test_success_is_no_failure() -> None:
    assert install_failure(finished(0, "Setting up hello (2.10-3) ...\n"), ["hello"]) is None
