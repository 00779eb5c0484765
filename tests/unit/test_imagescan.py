"""The secret scan: what it finds in which files, and what it lets pass as a warning."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from aminator_ng.contract.model import ShippedFile
from aminator_ng.pipeline.secret_scan import (
    SECRET_KINDS,
    FoundInFile,
    HostTraces,
    Scanner,
    changed_files,
    judge,
    scan_changed_files,
)

# Put together here so that no file of the project holds a whole credential.
AWS_KEY_ID = "AKIA" + "QWERTYUIOPASDFGH"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/" + "bPxRfiCYEXAMPLEKEY"
SAMPLES = {
    "a PEM private key": "-----BEGIN RSA PRIVATE KEY-----\n" + "MIIEowIBAAKCAQEA" * 4 + "\n",
    "an AWS access key id": f"key_id: {AWS_KEY_ID}\n",
    "an AWS secret access key": f"aws_secret_access_key = {AWS_SECRET}\n",
    "an AWS session token": f'"AWS_SESSION_TOKEN": "{"FwoGZXIvYXdzE" * 10}"\n',
    "a GitHub token": "token = ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8\n",
    "a GitLab token": "glpat-" + "abcdefghij0123456789\n",
    "a Slack token": "xoxb-" + "123456789012-abcdefghijklmnop\n",
    "a Stripe live key": "sk_live_" + "a1b2c3d4e5f6g7h8i9j0k1l2\n",
    "a Google API key": "AIza" + "SyA1234567890abcdefghijklmnopqrstuv\n",
}
NOT_SECRETS = [
    # A program that reads keys holds the header, not a key.
    '#define MARK_BEGIN "-----BEGIN OPENSSH PRIVATE KEY-----\\n"\n',
    "-----BEGIN OPENSSH PRIVATE KEY-----\n\0\0-----END OPENSSH PRIVATE KEY-----",
    "-----BEGIN PUBLIC KEY-----\n" + "MIIBIjANBgkqhkiG9w0B" * 3 + "\n",
    "-----BEGIN CERTIFICATE-----\n",
    "aws_secret_access_key = <your secret here>\n",
    "AKIA is how access key ids begin\n",
    f"x{AWS_KEY_ID}x\n",
]


@pytest.mark.parametrize("kind", sorted(SAMPLES))
def test_each_kind_is_found(kind: str) -> None:
    assert Scanner(SECRET_KINDS).kinds_in(SAMPLES[kind].encode()) == [kind]


@pytest.mark.parametrize("text", NOT_SECRETS)
def test_what_only_looks_like_a_secret_is_not(text: str) -> None:
    assert Scanner(SECRET_KINDS).kinds_in(text.encode()) == []


def test_host_traces_are_found_as_whole_words_and_addresses() -> None:
    traces = HostTraces(("bake-7f3a",), ("192.0.2.17", "2001:db8::17"), ("198.51.100.53",))
    scanner = Scanner(traces.kinds())
    assert scanner.kinds_in(b"myhostname = BAKE-7F3A.example\n") == [
        "the bake host's hostname bake-7f3a"
    ]
    assert scanner.kinds_in(b"rebake-7f3ab 192.0.2.170 2001:db8::170\n") == []
    assert set(scanner.kinds_in(b"nameserver 198.51.100.53\nlisten 2001:db8::17\n")) == {
        "the bake host's nameserver 198.51.100.53",
        "the bake host's address 2001:db8::17",
    }


def test_only_the_files_changed_since_the_start_are_read(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    old = tmp_path / "etc/old.pem"
    old.write_text(SAMPLES["a PEM private key"])
    since = time.time() + 0.05
    time.sleep(0.1)
    (tmp_path / "etc/new.conf").write_text(SAMPLES["an AWS secret access key"])
    # A link to a file with a secret is not followed, wherever it leads.
    (tmp_path / "etc/link.pem").symlink_to(old)
    (tmp_path / "etc/fifo").unlink(missing_ok=True)
    os.mkfifo(tmp_path / "etc/fifo")
    scanned, found, too_large = scan_changed_files(tmp_path, since, Scanner(SECRET_KINDS))
    assert (scanned, too_large) == (1, [])
    assert [(f.path, f.kind) for f in found] == [("/etc/new.conf", "an AWS secret access key")]
    paths = []
    for path, fd, _ in changed_files(tmp_path, since):
        os.close(fd)
        paths.append(path)
    assert paths == ["/etc/new.conf"]


def found(path: str, kind: str = "a PEM private key", digest: str = "d1") -> FoundInFile:
    return FoundInFile(path, kind, {"md5": digest, "sha256": "s" + digest})


def test_judging_fails_what_is_not_accounted_for() -> None:
    shipped = {
        "/usr/share/doc/x/sample.key": ShippedFile("/usr/share/doc/x/sample.key", "x", "md5", "d1"),
        "/usr/share/doc/y/edited.key": ShippedFile("/usr/share/doc/y/edited.key", "y", "md5", "d0"),
        "/opt/app/app.key": ShippedFile("/opt/app/app.key", "app", "md5", "d1"),
    }
    judged = judge(
        [
            found("/usr/share/doc/x/sample.key"),
            found("/usr/share/doc/y/edited.key"),
            found("/opt/app/app.key"),
            found("/etc/ssh/ssh_host_rsa_key"),
            found("/etc/app/creds", "an AWS secret access key"),
            found("/srv/known.pem"),
        ],
        allowed=["/srv/*.pem"],
        kept_by_rules={"/etc/ssh/ssh_host_rsa_key": "ssh_host_keys"},
        shipped=shipped,
        from_base_repositories={"x", "y"},
    )
    assert [(f.path, f.warning) for f in judged] == [
        ("/usr/share/doc/x/sample.key", "shipped unchanged by x, from the base's repositories"),
        # Changed since the package shipped it, or from a package the bake was asked for.
        ("/usr/share/doc/y/edited.key", ""),
        ("/opt/app/app.key", ""),
        ("/etc/ssh/ssh_host_rsa_key", "the hygiene rule ssh_host_keys is switched off"),
        ("/etc/app/creds", ""),
        ("/srv/known.pem", "allow-listed"),
    ]


def test_a_host_trace_in_a_file_a_package_ships_unchanged_is_the_package_s() -> None:
    trace = FoundInFile(
        "/usr/share/doc/z/README", "the bake host's hostname bake-7f3a", {"md5": "d1"}, True
    )
    shipped = {trace.path: ShippedFile(trace.path, "z", "md5", "d1")}
    assert (
        judge([trace], allowed=[], kept_by_rules={}, shipped=shipped, from_base_repositories=set())
        == []
    )
