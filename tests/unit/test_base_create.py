"""``aminate base create`` asks the plugins' base creators: which one, with which options."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from aminator_debian import bootstrap as debian_bootstrap
from aminator_debian.bootstrap import DebianBaseCreator, DebianBaseOptions
from aminator_ng.api import BaseCreator, BootstrappedRoot, declared, hookimpl
from aminator_ng.commands import cli, setting_options
from aminator_ng.contract.plugins import load_plugins
from aminator_ng.errors import ConfigError
from tests.unit.cli_runs import Aminate, assert_request_error


@dataclass(frozen=True)
class PaintOptions:
    colour: str = declared(str, "white", "The colour of the root.", flag=True)
    coats: int = declared(int, 1, "How many coats.", minimum=1, flag=True)


class PaintedRoots(BaseCreator):
    name = "paint"
    options = PaintOptions

    def bootstrap(self, target: Path, options: PaintOptions) -> BootstrappedRoot:
        raise AssertionError("not called: create_base is replaced in these tests")


class PaintPlugin:
    @hookimpl
    def aminator_base_creator(self) -> BaseCreator:
        return PaintedRoots()


@dataclass
class Asked:
    creator: BaseCreator | None = None
    options: Any = None


@pytest.fixture
def asked(monkeypatch: pytest.MonkeyPatch) -> Iterator[Asked]:
    """What ``base create`` handed to ``create_base``, which then stops the command."""
    seen = Asked()

    def create_base(creator: BaseCreator, *args: Any, options: Any, **kwargs: Any) -> Any:
        seen.creator, seen.options = creator, options
        raise ConfigError("stopped by the test")

    monkeypatch.setattr(cli, "create_base", create_base)
    yield seen
    setting_options.add_creator_options(cli.base_create, load_plugins(environ={}).base_creators)


@pytest.fixture
def with_paint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        cli, "load_plugins", lambda: load_plugins(environ={}, extra=[("paint", PaintPlugin())])
    )


def test_the_only_creator_is_the_default_and_its_options_are_flags(
    aminate: Aminate, asked: Asked
) -> None:
    outcome = aminate("base", "create", "b", "--suite", "trixie", "--include", "jq,curl")
    assert_request_error(outcome, "stopped by the test")
    assert isinstance(asked.creator, DebianBaseCreator)
    assert asked.options == DebianBaseOptions(suite="trixie", include=("jq,curl",))
    helped = aminate("base", "create", "--help")
    assert "--suite SUITE" in helped.stdout
    assert "[default: bookworm]" in helped.stdout


def test_with_two_creators_distro_chooses(aminate: Aminate, asked: Asked, with_paint: None) -> None:
    outcome = aminate("base", "create", "b")
    assert_request_error(outcome, "choose a base creator with --distro: debian, paint")
    outcome = aminate("base", "create", "b", "--distro", "paint", "--colour", "red")
    assert_request_error(outcome, "stopped by the test")
    assert asked.options == PaintOptions(colour="red", coats=1)
    outcome = aminate("base", "create", "b", "--distro", "debian")
    assert_request_error(outcome, "stopped by the test")
    assert asked.options == DebianBaseOptions()


def test_another_creators_option_is_refused(
    aminate: Aminate, asked: Asked, with_paint: None
) -> None:
    outcome = aminate("base", "create", "b", "--distro", "paint", "--suite", "trixie")
    assert_request_error(outcome, "debian's options do not apply to --distro paint")
    assert asked.creator is None
    outcome = aminate("base", "create", "b", "--distro", "nosuch")
    assert_request_error(outcome, "no plugin creates bases for --distro nosuch")
    outcome = aminate("base", "create", "b", "--distro", "paint", "--coats", "0")
    assert_request_error(outcome, "--coats")


def test_the_debian_creator_runs_mmdebstrap_with_the_options(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ran: list[list[str]] = []
    monkeypatch.setattr(debian_bootstrap, "run", lambda argv, **_: ran.append(list(map(str, argv))))
    options = DebianBaseOptions(
        suite="trixie", mirror="http://mirror.example/debian", include=("jq,curl", "jq", "vim")
    )
    made = DebianBaseCreator().bootstrap(tmp_path, options)
    assert made == BootstrappedRoot("trixie base", {"suite": "trixie"})
    (argv,) = ran
    assert argv[0] == "mmdebstrap"
    assert "--include=ca-certificates,jq,curl,vim" in argv
    assert argv[argv.index(str(tmp_path)) - 1] == "trixie"
    assert "deb http://mirror.example/debian trixie-updates main" in argv
    assert "deb http://deb.debian.org/debian-security trixie-security main" in argv
    assert DebianBaseCreator().required_tools() == ["mmdebstrap"]
