"""The secret scan on real bakes: a package that ships a secret, or whose script makes one,
fails the bake naming the file and the kind of secret (never the secret), registers nothing,
and passes once the file is allow-listed."""

from __future__ import annotations

import pytest

from tests.integration.conftest import BASE_NAME, Result, Workspace
from tests.integration.debs import build_deb

pytestmark = pytest.mark.privileged

# Put together here so that no file of the project holds a whole credential.
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/" + "bPxRfiCYEXAMPLEKEY"
CREDENTIALS = (
    f"[default]\naws_access_key_id = AKIA{'Q' * 16}\naws_secret_access_key = {AWS_SECRET}\n"
)
KEY_BODY = "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC" * 2
PEM_KEY = f"-----BEGIN PRIVATE KEY-----\n{KEY_BODY}\n-----END PRIVATE KEY-----\n"


def assert_secret_error(workspace: Workspace, result: Result, *needles: str) -> None:
    assert result.returncode == 1, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("aminate: error:")]
    assert len(errors) == 1, result.stderr
    for needle in needles:
        assert needle in errors[0]
    assert "Traceback" not in result.stderr
    # Neither the error nor the bake's log holds the secret itself.
    logs = "".join(path.read_text() for path in workspace.log_dir.glob("*.log"))
    for secret in (AWS_SECRET, KEY_BODY):
        assert secret not in result.stderr + result.stdout + logs
    assert workspace.baked_images() == []


def test_a_package_that_ships_an_aws_secret_key_fails_until_the_file_is_allowed(
    workspace: Workspace,
) -> None:
    deb = build_deb(workspace.scratch, "leaky", files={"/etc/leaky/credentials": CREDENTIALS})
    failed = workspace.aminate("-b", BASE_NAME, str(deb))
    assert_secret_error(
        workspace,
        failed,
        "/etc/leaky/credentials holds an AWS access key id",
        "an AWS secret access key",
    )
    assert "--scan-allow" in failed.stderr

    passed = workspace.aminate(
        "-b", BASE_NAME, "--output", "json", "--scan-allow", "/etc/leaky/*", str(deb)
    )
    assert passed.returncode == 0, passed.stderr
    findings = passed.json()["scan"]["findings"]
    assert {(f["path"], f["kind"], f["warning"]) for f in findings} >= {
        ("/etc/leaky/credentials", "an AWS access key id", "allow-listed"),
        ("/etc/leaky/credentials", "an AWS secret access key", "allow-listed"),
    }
    assert not [f for f in findings if f["fails"]]


def test_a_private_key_a_package_script_makes_fails_the_bake(workspace: Workspace) -> None:
    lines = "\\n".join(PEM_KEY.splitlines())
    made = "/var/lib/keymaker/server.key"
    deb = build_deb(
        workspace.scratch,
        "keymaker",
        postinst=f"mkdir -p /var/lib/keymaker && printf '%b\\n' '{lines}' > {made}",
    )
    result = workspace.aminate("-b", BASE_NAME, str(deb))
    assert_secret_error(workspace, result, f"{made} holds a PEM private key")
    allowed = workspace.aminate("-b", BASE_NAME, "--scan-allow", made, str(deb))
    assert allowed.returncode == 0, allowed.stderr


TORNADO_TEST_KEY = "/usr/lib/python3/dist-packages/tornado/test/test.key"


def test_a_sample_key_of_the_base_s_archive_is_a_warning_unless_asked_for(
    workspace: Workspace,
) -> None:
    """python3-tornado ships its tests' private key. Brought in as a dependency from the
    base's own repositories, unchanged, it is a warning; asked for, it counts."""
    asked = workspace.aminate("-b", BASE_NAME, "python3-tornado")
    assert_secret_error(workspace, asked, f"{TORNADO_TEST_KEY} holds a PEM private key")
    app = build_deb(workspace.scratch, "tornado-app", depends="python3-tornado")
    passed = workspace.aminate("-b", BASE_NAME, "--output", "json", str(app))
    assert passed.returncode == 0, passed.stderr
    [finding] = [f for f in passed.json()["scan"]["findings"] if f["path"] == TORNADO_TEST_KEY]
    assert finding == {
        "path": TORNADO_TEST_KEY,
        "kind": "a PEM private key",
        "fails": False,
        "warning": "shipped unchanged by python3-tornado, from the base's repositories",
    }
