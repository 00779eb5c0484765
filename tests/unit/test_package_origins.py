"""Where the packages a bake installed came from, as apt and dnf tell it, for the secret scan."""

from __future__ import annotations

from aminator_debian import shipped as debian
from aminator_redhat import shipped as redhat

# apt-cache policy, as apt 2.6 prints it.
POLICY = """\
openssh-server:
  Installed: 1:9.2p1-2+deb12u3
  Candidate: 1:9.2p1-2+deb12u3
  Version table:
 *** 1:9.2p1-2+deb12u3 500
        500 http://deb.debian.org/debian bookworm/main amd64 Packages
        100 /var/lib/dpkg/status
     1:9.2p1-2+deb12u2 500
        500 http://deb.debian.org/debian-security bookworm-security/main amd64 Packages
libgreeting:amd64:
  Installed: 1.0-1
  Candidate: 1.0-1
  Version table:
 *** 1.0-1 500
        500 file:/run/aminator-ng/repositories/0 ./ Packages
        100 /var/lib/dpkg/status
hello:
  Installed: 1.0-1
  Candidate: 1.0-1
  Version table:
 *** 1.0-1 100
        100 /var/lib/dpkg/status
     0.9-1 500
        500 http://deb.debian.org/debian bookworm/main amd64 Packages
"""


def test_apt_tells_the_base_s_packages_from_the_bake_s() -> None:
    added = {"file:/run/aminator-ng/repositories/0"}
    # openssh-server: the archive; libgreeting: an added repository; hello: a package file
    # (its version is in no repository, though an older one is).
    assert debian.from_base_repositories(POLICY, added) == {"openssh-server"}
    assert debian.from_base_repositories(POLICY, set()) == {"openssh-server", "libgreeting"}


def test_apt_s_changes_are_what_dpkg_lists_differently_after_the_install() -> None:
    before = {"libc6:amd64": "2.36-9", "tzdata:all": "2024a-0", "hello:all": "0.9-1"}
    after = {
        "libc6:amd64": "2.36-9",
        "tzdata:all": "2025a-0",
        "hello:all": "1.0-1",
        "libgreeting:amd64": "1",
    }
    assert debian.changed_since(before, after) == ["hello", "libgreeting", "tzdata"]


# dnf 4's transaction table.
TRANSACTION = """\
Dependencies resolved.
================================================================================
 Package          Architecture   Version          Repository              Size
================================================================================
Installing:
 hello            noarch         1.0-1            @commandline           6.1 k
Installing dependencies:
 greeting         noarch         1.0-1            aminator-ng-0          5.9 k
 bash-completion  noarch         1:2.11-4.el9     baseos                 291 k
Upgrading:
 tzdata           noarch         2024a-1.el9      appstream              835 k

Transaction Summary
================================================================================
Install  3 Packages
"""


def test_dnf_tells_the_base_s_packages_from_the_bake_s() -> None:
    assert redhat.from_base_repositories(TRANSACTION, "aminator-ng-") == {
        "bash-completion",
        "tzdata",
    }
