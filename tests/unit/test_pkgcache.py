"""The package cache's keys, generations, locks and downloads, without mounting anything: the
bind mount of a fetch is replaced by a record of what would be bound."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from aminator_ng.contract.model import PackageCacheLayout, PackageInfo, PackageRequest
from aminator_ng.contract.provisioner import Provisioner
from aminator_ng.pipeline import package_cache as pkgcache
from aminator_ng.pipeline.package_cache import BakeIdentity, CacheEntry, PackageCache, key_digest

LAYOUT = PackageCacheLayout({"sources": "abc", "architectures": "amd64"}, "/lists", "/dl", "arc")


class FetchingProvisioner(Provisioner):
    """Fetches by writing a list into the directory bound at the index; vouches for every
    download whose name does not say otherwise; derives ``cache.bin`` from the lists. Stands
    in for the chroot too: the fake mounts tell it what the image would see."""

    name = "fake"

    def __init__(self, *, verifiable: bool = True, fetch_s: float = 0.0) -> None:
        self.verifiable = verifiable
        self.fetch_s = fetch_s
        self.fetches = 0
        self.preparations = 0
        self.bound: Path | None = None
        self.seen: dict[str, Path] = {}
        self.downloads_upper: Path | None = None

    def refresh_index(self, chroot: Any) -> None:
        assert self.bound is not None
        self.fetches += 1
        time.sleep(self.fetch_s)
        (self.bound / "Packages").write_text(f"fetch {self.fetches}\n")

    def verified_index(self, index: Path, scratch: Path) -> bool:
        return self.verifiable and (index / "Packages").exists()

    def vouched_downloads(self, index: Path, downloads: Sequence[Path]) -> list[Path]:
        return [path for path in downloads if "unvouched" not in path.name]

    def prepare_index(self, chroot: Any) -> None:
        assert self.downloads_upper is not None
        self.preparations += 1
        (self.downloads_upper / "cache.bin").write_text("derived\n")

    def install(self, chroot: Any, packages: Sequence[PackageRequest]) -> None:
        raise AssertionError("not called here")

    def query(self, chroot: Any, names: Sequence[str]) -> list[PackageInfo]:
        return []

    def manifest(self, chroot: Any) -> list[Any]:
        return []


@pytest.fixture(autouse=True)
def fake_mounts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Stand in for the bind mount and the overlays: the provisioner (the "chroot") learns
    which directory it would see where."""

    @contextlib.contextmanager
    def bound(chroot: Any, inside: str, source: Path, **options: Any) -> Iterator[None]:
        assert inside == LAYOUT.index and options == {"bind": True}
        chroot.bound = source
        yield

    @contextlib.contextmanager
    def overlay(chroot: Any, inside: str, lower: Path, scratch: Path) -> Iterator[Path]:
        upper = scratch / "upper"
        upper.mkdir(parents=True)
        chroot.seen[inside] = lower
        if inside == LAYOUT.downloads:
            chroot.downloads_upper = upper
        yield upper

    monkeypatch.setattr(pkgcache, "mounted_inside", bound)
    monkeypatch.setattr(pkgcache, "_overlay", overlay)


@contextlib.contextmanager
def use_index(
    cache: PackageCache,
    provisioner: FetchingProvisioner,
    tmp_path: Path,
    bake: str,
    layout: PackageCacheLayout = LAYOUT,
    base: str = "img-base",
) -> Iterator[tuple[Path, str]]:
    """A bake's use of the cache: the lists it was given, and how it had them."""
    scratch = tmp_path / bake
    identity = BakeIdentity(bake, time.time(), base)
    # The fake provisioner is the "chroot" too.
    with cache.bound(provisioner, provisioner, layout, scratch, identity) as use:  # type: ignore[arg-type]
        yield provisioner.seen[layout.index], use.index


def test_the_key_is_the_provisioner_and_what_determines_its_lists() -> None:
    assert key_digest("apt", {"sources": "a"}) == key_digest("apt", {"sources": "a"})
    assert key_digest("apt", {"sources": "a"}) != key_digest("apt", {"sources": "b"})
    assert key_digest("apt", {"sources": "a"}) != key_digest("dnf", {"sources": "a"})


def test_fresh_lists_are_used_and_stale_ones_fetched_again(tmp_path: Path) -> None:
    cache = PackageCache(tmp_path / "cache", max_age_s=3600)
    provisioner = FetchingProvisioner()
    with use_index(cache, provisioner, tmp_path, "b1") as (first, how):
        assert how == "refreshed" and (first / "Packages").read_text() == "fetch 1\n"
    with use_index(cache, provisioner, tmp_path, "b2") as (second, how):
        assert (how, second) == ("fresh", first)
    assert provisioner.fetches == 1

    always = PackageCache(tmp_path / "cache", max_age_s=0)
    with use_index(always, provisioner, tmp_path, "b3") as (third, how):
        assert how == "refreshed" and third != first
        # The fetch started from a copy of the last lists, so it asks only for what changed.
        assert (third / "Packages").read_text() == "fetch 2\n"
    # The older generation went once nobody held it.
    assert sorted(p.name for p in third.parent.iterdir()) == sorted(["current", third.name])

    forced = PackageCache(tmp_path / "cache", max_age_s=3600, refresh=True)
    with use_index(forced, provisioner, tmp_path, "b4") as (_, how):
        assert how == "refreshed"
    assert provisioner.fetches == 3


def test_a_generation_in_use_is_not_pruned(tmp_path: Path) -> None:
    provisioner = FetchingProvisioner()
    with use_index(PackageCache(tmp_path / "c"), provisioner, tmp_path, "b1") as (held, _):
        with use_index(PackageCache(tmp_path / "c", max_age_s=0), provisioner, tmp_path, "b2") as (
            newer,
            _,
        ):
            assert held.is_dir() and newer.is_dir() and newer != held
        assert (held / "Packages").read_text() == "fetch 1\n"
    # Pruned by the next fetch, now that nobody holds it.
    with use_index(PackageCache(tmp_path / "c", max_age_s=0), provisioner, tmp_path, "b3"):
        assert not held.exists()


def test_bakes_that_find_no_lists_at_once_wait_for_one_fetch(tmp_path: Path) -> None:
    cache = PackageCache(tmp_path / "cache")
    provisioners = [FetchingProvisioner(fetch_s=0.3) for _ in range(4)]
    seen: list[tuple[str, str]] = []

    def bake(number: int) -> None:
        with use_index(cache, provisioners[number], tmp_path, f"b{number}") as (generation, how):
            seen.append((generation.name, how))

    threads = [threading.Thread(target=bake, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(p.fetches for p in provisioners) == 1
    assert len({name for name, _ in seen}) == 1
    assert sorted(how for _, how in seen) == ["fresh", "fresh", "fresh", "refreshed"]


def test_what_is_derived_from_the_lists_is_kept_per_base_image(tmp_path: Path) -> None:
    cache = PackageCache(tmp_path / "cache")
    layout = PackageCacheLayout(LAYOUT.key, LAYOUT.index, LAYOUT.downloads, "arc", ("cache.bin",))
    provisioner = FetchingProvisioner()
    with use_index(cache, provisioner, tmp_path, "b1", layout):
        assert provisioner.preparations == 1
    with use_index(cache, provisioner, tmp_path, "b2", layout):
        # Offered to the next bake of the base, and not made again.
        assert (provisioner.seen[LAYOUT.downloads] / "cache.bin").read_text() == "derived\n"
        assert provisioner.preparations == 1
    with use_index(cache, provisioner, tmp_path, "b3", layout, base="img-other"):
        assert not (provisioner.seen[LAYOUT.downloads] / "cache.bin").exists()
        assert provisioner.preparations == 2


def test_lists_that_cannot_be_verified_serve_their_bake_only(tmp_path: Path) -> None:
    cache = PackageCache(tmp_path / "cache")
    provisioner = FetchingProvisioner(verifiable=False)
    with use_index(cache, provisioner, tmp_path, "b1") as (private, how):
        assert how == "private" and private.is_relative_to(tmp_path / "b1")
    entry = CacheEntry(cache.directory / f"fake-{key_digest('fake', LAYOUT.key)}")
    assert entry.current() is None
    assert [p.name for p in entry.index.iterdir()] == []


def test_only_regular_vouched_downloads_join_the_cache(tmp_path: Path) -> None:
    entry = CacheEntry(tmp_path / "entry")
    entry.packages.mkdir(parents=True)
    downloaded = tmp_path / "upper"
    downloaded.mkdir()
    (downloaded / "good_1_all.deb").write_bytes(b"good")
    (downloaded / "unvouched_1_all.deb").write_bytes(b"?")
    (downloaded / "link_1_all.deb").symlink_to("/etc/shadow")
    (downloaded / "hard_1_all.deb").hardlink_to(downloaded / "good_1_all.deb")
    (downloaded / "partial").mkdir()
    PackageCache(tmp_path)._keep_downloads(entry, tmp_path, FetchingProvisioner(), downloaded)
    assert sorted(p.name for p in entry.packages.iterdir()) == []  # good has two links now
    (downloaded / "hard_1_all.deb").unlink()
    PackageCache(tmp_path)._keep_downloads(entry, tmp_path, FetchingProvisioner(), downloaded)
    assert [p.name for p in entry.packages.iterdir()] == ["good_1_all.deb"]
    assert (entry.packages / "good_1_all.deb").read_bytes() == b"good"


def test_clear_keeps_what_a_bake_holds(tmp_path: Path) -> None:
    cache = PackageCache(tmp_path / "cache")
    provisioner = FetchingProvisioner()
    with use_index(cache, provisioner, tmp_path, "b1") as (held, _):
        freed, in_use = cache.clear()
        assert in_use == [held] and held.is_dir()
    freed, in_use = cache.clear()
    assert in_use == [] and freed > 0
    assert list(cache.directory.iterdir()) == []
