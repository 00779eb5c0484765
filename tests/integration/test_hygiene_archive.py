"""Image hygiene with real packages from the Debian archive: openssh-server makes host keys in
its postinst and ssl-cert a snakeoil key and certificate; the image carries none of them, and
makes its own at first boot."""

from __future__ import annotations

import pytest

from aminator_hygiene.plugin import KEYGEN_UNIT, SNAKEOIL_UNIT
from tests.integration.conftest import BASE_NAME, Workspace, mounted_image

pytestmark = pytest.mark.privileged


def test_an_ssh_server_image_has_no_host_key_nor_snakeoil_and_makes_them_at_first_boot(
    workspace: Workspace,
) -> None:
    result = workspace.aminate("-b", BASE_NAME, "--output", "json", "openssh-server", "ssl-cert")
    assert result.returncode == 0, result.stderr
    data = result.json()
    assert data["tags"]["hygiene"] == "ok"
    [keys] = [h for h in data["hygiene"] if h["rule"] == "ssh_host_keys"]
    assert keys["done"].startswith("removed ") and KEYGEN_UNIT in keys["done"]
    raw = workspace.scratch / "baked.raw"
    assert workspace.aminate("export", data["image_id"], str(raw)).returncode == 0
    with mounted_image(raw, workspace.scratch / "m") as root:
        assert (root / "usr/sbin/sshd").is_file()
        assert sorted((root / "etc/ssh").glob("ssh_host_*")) == []
        unit = root / "etc/systemd/system" / KEYGEN_UNIT
        assert "ssh-keygen -A" in unit.read_text()
        assert (root / "etc/systemd/system/sysinit.target.wants" / KEYGEN_UNIT).is_symlink()
        assert not (root / "etc/ssl/private/ssl-cert-snakeoil.key").exists()
        assert not (root / "etc/ssl/certs/ssl-cert-snakeoil.pem").exists()
        assert (
            "generate-default-snakeoil" in (root / "etc/systemd/system" / SNAKEOIL_UNIT).read_text()
        )
        machine_id = root / "etc/machine-id"
        assert not machine_id.exists() or machine_id.read_bytes() == b""


def test_a_rule_switched_off_keeps_what_it_would_remove(workspace: Workspace) -> None:
    result = workspace.aminate(
        "-b",
        BASE_NAME,
        "--output",
        "json",
        "openssh-server",
        env={"AMINATOR_HYGIENE_SSH_HOST_KEYS": "false"},
    )
    assert result.returncode == 0, result.stderr
    data = result.json()
    assert data["tags"]["hygiene"] == "off:ssh_host_keys"
    raw = workspace.scratch / "baked.raw"
    assert workspace.aminate("export", data["image_id"], str(raw)).returncode == 0
    with mounted_image(raw, workspace.scratch / "m") as root:
        assert sorted((root / "etc/ssh").glob("ssh_host_*_key"))
