"""Image hygiene with real packages from the Debian archive: openssh-server makes host keys in
its postinst, ssl-cert a snakeoil key and certificate, and systemd-resolved makes resolv.conf a
link to its stub. Baked on a host with a name of its own, the image carries none of the keys
(it makes its own at first boot), no trace of the bake host, and the package's resolv.conf."""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path

import pytest

from aminator_hygiene.plugin import KEYGEN_UNIT, SNAKEOIL_UNIT
from aminator_ng.pipeline.host_seam import host_traces
from tests.integration.conftest import (
    BASE_NAME,
    Workspace,
    assert_sbom_describes,
    mounted_image,
)

pytestmark = pytest.mark.privileged


def files_holding(root: Path, needles: list[bytes]) -> dict[str, list[str]]:
    """Every regular file of the image that holds one of ``needles`` (case-insensitive)."""
    pattern = re.compile(b"|".join(re.escape(n) for n in needles), re.IGNORECASE)
    found: dict[str, list[str]] = {}
    for directory, _, names in os.walk(root):
        for name in names:
            path = Path(directory, name)
            if path.is_symlink() or not path.is_file():
                continue
            hits = {m.group().decode().lower() for m in pattern.finditer(path.read_bytes())}
            if hits:
                found[f"/{path.relative_to(root)}"] = sorted(hits)
    return found


def test_an_ssh_server_image_has_no_host_key_nor_snakeoil_and_makes_them_at_first_boot(
    workspace: Workspace,
) -> None:
    host_name = f"bakehost-{secrets.token_hex(6)}"
    result = workspace.aminate(
        "-b",
        BASE_NAME,
        "--output",
        "json",
        "openssh-server",
        "ssl-cert",
        "systemd-resolved",
        hostname=host_name,
    )
    assert result.returncode == 0, result.stderr
    data = result.json()
    assert_sbom_describes(workspace, data, "debian-12")
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
        # The resolver file systemd-resolved made (a link to its stub), not the base's.
        resolv_conf = root / "etc/resolv.conf"
        assert resolv_conf.is_symlink()
        assert os.readlink(resolv_conf).endswith("/run/systemd/resolve/stub-resolv.conf")
        # Nothing of the bake host: neither its name nor its nameservers.
        needles = [host_name.encode()] + [n.encode() for n in host_traces().nameservers]
        assert files_holding(root, needles) == {}


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
    # The keys it kept are the secret scan's warnings, not failures.
    warned = {f["path"]: f["warning"] for f in data["scan"]["findings"]}
    assert warned["/etc/ssh/ssh_host_ed25519_key"] == (
        "the hygiene rule ssh_host_keys is switched off"
    )
    raw = workspace.scratch / "baked.raw"
    assert workspace.aminate("export", data["image_id"], str(raw)).returncode == 0
    with mounted_image(raw, workspace.scratch / "m") as root:
        assert sorted((root / "etc/ssh").glob("ssh_host_*_key"))
