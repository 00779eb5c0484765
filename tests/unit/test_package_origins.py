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


def test_apt_s_simulation_names_what_it_installs() -> None:
    simulated = (
        "The following NEW packages will be installed:\n  hello libgreeting\n"
        "Inst libgreeting (1.0-1 localhost [amd64])\nInst hello (1.0-1 local-deb [all])\n"
        "Conf libgreeting (1.0-1 localhost [amd64])\n"
    )
    assert debian.installed_names(simulated) == ["libgreeting", "hello"]


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
