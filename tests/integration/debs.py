"""Test packages, built with dpkg-deb from a few lines of control data and scripts."""

from __future__ import annotations

import subprocess
from pathlib import Path


def build_deb(
    out_dir: Path,
    name: str,
    version: str = "1.0-1",
    *,
    depends: str = "",
    recommends: str = "",
    postinst: str | None = None,
    files: dict[str, str] | None = None,
) -> Path:
    """A binary package ``name_version_all.deb`` in ``out_dir``."""
    tree = out_dir / f"{name}-tree"
    (tree / "DEBIAN").mkdir(parents=True)
    control = [
        f"Package: {name}",
        f"Version: {version}",
        "Architecture: all",
        "Maintainer: tests <tests@example.org>",
        f"Description: test package {name}",
    ]
    if depends:
        control.append(f"Depends: {depends}")
    if recommends:
        control.append(f"Recommends: {recommends}")
    (tree / "DEBIAN" / "control").write_text("\n".join(control) + "\n")
    if postinst is not None:
        script = tree / "DEBIAN" / "postinst"
        script.write_text("#!/bin/sh\nset -e\n" + postinst + "\n")
        script.chmod(0o755)
    for inside, content in (files or {}).items():
        path = tree / inside.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    deb = out_dir / f"{name}_{version}_all.deb"
    subprocess.run(
        ["dpkg-deb", "--root-owner-group", "--build", str(tree), str(deb)],
        check=True,
        capture_output=True,
    )
    return deb
