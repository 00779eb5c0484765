"""The package cache with real bakes: lists fetched once and shared, downloads kept only when
signed lists vouch for them, nothing of the cache in an image, and nothing a package script
writes reaching the cache."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import BASE_NAME, Workspace, assert_one_error_line, mounted_image
from tests.integration.debs import build_deb

pytestmark = pytest.mark.privileged


def own_cache(workspace: Workspace) -> dict[str, str]:
    """The workspace's own cache directory (the suite's bakes otherwise share one)."""
    return {"AMINATOR_CACHE_DIR": str(workspace.home / "cache")}


def cache_files(cache: Path) -> dict[str, str]:
    """Every file of the cache and its SHA-256 (a symlink: its target)."""
    found = {}
    for path in sorted(cache.rglob("*")):
        if path.is_symlink():
            found[str(path.relative_to(cache))] = f"-> {path.readlink()}"
        elif path.is_file():
            found[str(path.relative_to(cache))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def only_entry(cache: Path) -> Path:
    entries = [p for p in cache.iterdir() if p.is_dir()]
    assert len(entries) == 1, entries
    return entries[0]


def assert_image_holds_no_cache(workspace: Workspace, baked: dict[str, Any]) -> None:
    raw = workspace.scratch / "baked.raw"
    assert workspace.aminate("export", baked["image_id"], str(raw)).returncode == 0
    with mounted_image(raw, workspace.scratch / "mnt") as root:
        lists = root / "var/lib/apt/lists"
        assert sorted(p.name for p in lists.iterdir()) in ([], ["lock"], ["lock", "partial"])
        assert not any((lists / "partial").iterdir()) if (lists / "partial").exists() else True
        apt_cache = root / "var/cache/apt"
        assert [p for p in apt_cache.rglob("*") if p.is_file() and p.name != "lock"] == []
    raw.unlink()


def test_two_bakes_at_once_with_an_empty_cache_share_one_fetch(
    workspace: Workspace, debs: dict[str, Path]
) -> None:
    env = own_cache(workspace)
    bakes = [
        workspace.start("-b", BASE_NAME, "--output", "json", str(debs["hello"]), env=env)
        for _ in range(2)
    ]
    results = [process.communicate(timeout=600) for process in bakes]
    for process, (_, stderr) in zip(bakes, results, strict=True):
        assert process.returncode == 0, stderr
    used = sorted(json.loads(stdout)["package_cache"]["index"] for stdout, _ in results)
    # One bake fetched the lists; the other waited for them and used them.
    assert used == ["fresh", "refreshed"]

    cache = workspace.home / "cache"
    entry = only_entry(cache)
    index = entry / "index"
    generations = [p.name for p in index.iterdir() if p.name != "current"]
    assert len(generations) == 1, generations
    assert (index / "current").readlink() == Path(generations[0])
    # The example package depends on jq: its downloads are kept, vouched for by the lists.
    kept = sorted(p.name.split("_")[0] for p in (entry / "packages").iterdir())
    assert kept == ["jq", "libjq1", "libonig5"]
    shown = workspace.aminate("cache", "show", "--output", "json", env=env)
    assert shown.returncode == 0, shown.stderr
    (described,) = shown.json()["entries"]
    assert described["packages"] == 3 and described["provisioner"] == "apt"
    assert set(described["key"]) == {"sources", "keyrings", "configuration", "architectures"}

    third = workspace.aminate("-b", BASE_NAME, "--output", "json", str(debs["hello"]), env=env)
    assert third.returncode == 0, third.stderr
    assert third.json()["package_cache"] == {
        "entry": str(entry),
        "index": "fresh",
        "packages_offered": 3,
    }
    for stdout, _ in results:
        assert_image_holds_no_cache(workspace, json.loads(stdout))
    assert_image_holds_no_cache(workspace, third.json())

    refreshed = workspace.aminate(
        "-b", BASE_NAME, "--refresh", "--output", "json", str(debs["hello"]), env=env
    )
    assert refreshed.returncode == 0, refreshed.stderr
    assert refreshed.json()["package_cache"]["index"] == "refreshed"
    # The older generation went once no bake held it.
    assert len([p for p in index.iterdir() if p.name != "current"]) == 1

    cleared = workspace.aminate("cache", "clear", "--output", "json", env=env)
    assert cleared.returncode == 0, cleared.stderr
    assert cleared.json()["freed_bytes"] > 0
    assert list(cache.iterdir()) == []


def test_what_a_package_script_writes_to_apt_s_directories_never_reaches_the_cache(
    workspace: Workspace, debs: dict[str, Path], tmp_path: Path
) -> None:
    env = own_cache(workspace)
    first = workspace.aminate("-b", BASE_NAME, str(debs["hello"]), env=env)
    assert first.returncode == 0, first.stderr
    cache = workspace.home / "cache"
    before = cache_files(cache)
    # Same size, other bytes: apt itself would take such a cached package as it is.
    tamper = build_deb(
        tmp_path,
        "tamperer",
        postinst="""
for deb in /var/cache/apt/archives/*.deb; do
    size=$(stat -c %s "$deb"); head -c "$size" /dev/zero > "$deb"
done
for list in /var/lib/apt/lists/*_Packages; do echo 'Package: evil' >> "$list"; done
cp /var/cache/apt/archives/jq_*.deb /var/cache/apt/archives/evil_1.0_all.deb
""",
        depends="jq",
    )
    second = workspace.aminate("-b", BASE_NAME, "--output", "json", str(tamper), env=env)
    assert second.returncode == 0, second.stderr
    assert second.json()["package_cache"]["index"] == "fresh"
    assert cache_files(cache) == before
    third = workspace.aminate("-b", BASE_NAME, "--output", "json", str(debs["hello"]), env=env)
    assert third.returncode == 0, third.stderr


def test_an_unsatisfiable_request_quotes_apt_s_reason(workspace: Workspace, tmp_path: Path) -> None:
    needy = build_deb(tmp_path, "needy", depends="jq (>= 99)")
    result = workspace.aminate("-b", BASE_NAME, str(needy))
    assert_one_error_line(
        result, 2, "needy : Depends: jq (>= 99) but it is not going to be installed"
    )
    assert workspace.baked_images() == []


def test_without_the_cache_the_image_fetches_its_own_lists_and_keeps_none(
    workspace: Workspace, debs: dict[str, Path]
) -> None:
    env = own_cache(workspace)
    result = workspace.aminate(
        "-b", BASE_NAME, "--no-package-cache", "--output", "json", str(debs["hello"]), env=env
    )
    assert result.returncode == 0, result.stderr
    assert result.json()["package_cache"] is None
    assert not (workspace.home / "cache").exists()
    assert_image_holds_no_cache(workspace, result.json())
