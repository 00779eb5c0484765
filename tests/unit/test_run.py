"""The command runner: a fixed environment, proxies passed through, one clear error."""

from __future__ import annotations

import gc
import logging
import warnings
from pathlib import Path

import pytest

from aminator_ng.contract.plugins import load_plugins
from aminator_ng.errors import BakeTimeoutError, CommandError, HostError
from aminator_ng.host import run as run_module
from aminator_ng.host.run import SEARCH_PATH, commands_bounded, find_tool, mask_credentials, run

PROXY = "http://proxyuser:s3cret-pw@proxy.example.org:3128"


def environment_of(output: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in output.splitlines() if "=" in line)


# failures


def test_a_failing_command_raises_with_exit_code_and_stderr_tail() -> None:
    script = "echo to-stdout; for n in $(seq 1 30); do echo line-$n >&2; done; exit 3"
    with pytest.raises(CommandError) as raised:
        run(["sh", "-c", script], what="run the script", hint="read the log")
    error = raised.value
    assert error.returncode == 3
    assert error.argv == ["sh", "-c", script]
    assert error.stderr_tail.splitlines()[-1] == "line-30"
    assert "line-30" in error.message and "exit 3" in error.message
    assert error.message.startswith("run the script failed")
    assert "line-1\n" not in error.stderr_tail  # only the end
    assert error.hint == "read the log"
    assert error.exit_code == 1


def test_a_short_stderr_is_quoted_whole() -> None:
    with pytest.raises(CommandError) as raised:
        run(["sh", "-c", "echo 'E: Unable to locate package nope' >&2; exit 100"])
    assert raised.value.message.endswith("failed (exit 100): E: Unable to locate package nope")


def test_check_false_returns_the_failure() -> None:
    completed = run(["sh", "-c", "echo out; echo err >&2; exit 4"], check=False)
    assert (completed.returncode, completed.stdout, completed.stderr) == (4, "out\n", "err\n")


def test_input_reaches_the_command_and_stdin_is_otherwise_empty() -> None:
    assert run(["cat"], input="hello\n").stdout == "hello\n"
    assert run(["cat"]).stdout == ""


def test_a_command_that_does_not_exist_is_a_host_error() -> None:
    with pytest.raises(HostError, match="no-such-tool-anywhere") as raised:
        run(["no-such-tool-anywhere", "--version"])
    assert raised.value.exit_code == 2


def test_the_pipes_of_a_command_are_closed() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run(["true"])
        gc.collect()
    assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)] == []


def test_a_command_that_takes_too_long_times_out() -> None:
    with pytest.raises(BakeTimeoutError, match="did not finish"):
        run(["sleep", "30"], timeout=0.2, what="sleep")


# the environment


def test_the_environment_is_the_fixed_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/somewhere/else")
    monkeypatch.setenv("LANG", "de_DE.ISO-8859-1")
    monkeypatch.setenv("SECRET_OF_THE_CALLER", "do-not-leak")
    for name in run_module.PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    env = environment_of(run(["/usr/bin/env"]).stdout)
    assert env["LANG"] == "C.UTF-8"
    assert env["PATH"] == SEARCH_PATH
    assert "SECRET_OF_THE_CALLER" not in env
    assert not set(env) & set(run_module.PROXY_VARIABLES)


def test_proxy_variables_pass_through(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("http_proxy", PROXY)
    monkeypatch.setenv("https_proxy", PROXY)
    monkeypatch.setenv("no_proxy", "localhost,169.254.169.254")
    env = environment_of(run(["env"]).stdout)
    assert env["http_proxy"] == PROXY
    assert env["https_proxy"] == PROXY
    assert env["no_proxy"] == "localhost,169.254.169.254"
    assert env["LANG"] == "C.UTF-8"


def test_extra_variables_are_added() -> None:
    env = environment_of(run(["env"], env={"DEBIAN_FRONTEND": "noninteractive"}).stdout)
    assert env["DEBIAN_FRONTEND"] == "noninteractive"
    assert env["PATH"] == SEARCH_PATH


def test_credentials_never_reach_the_log(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="aminator_ng")
    run(["true", PROXY], env={"http_proxy": PROXY})
    assert "proxy.example.org" in caplog.text
    assert "s3cret-pw" not in caplog.text


# mask_credentials


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        (PROXY, "http://***@proxy.example.org:3128"),
        ("https://token@git.example.org/repo.git", "https://***@git.example.org/repo.git"),
        (
            "http_proxy=http://a:b@p1:3128 https_proxy=http://c:d@p2:3128",
            "http_proxy=http://***@p1:3128 https_proxy=http://***@p2:3128",
        ),
        ("http://proxy.example.org:3128", "http://proxy.example.org:3128"),
        ("mail me at someone@example.org", "mail me at someone@example.org"),
    ],
)
def test_mask_credentials(text: str, masked: str) -> None:
    assert mask_credentials(text) == masked


def test_mask_credentials_hides_a_password_with_an_at_sign() -> None:
    masked = mask_credentials("http://user:p@ssw0rd@proxy.example.org:3128")
    assert "ssw0rd" not in masked


# find_tool


def test_find_tool_finds_a_tool_on_the_search_path() -> None:
    found = find_tool("sh")
    assert Path(found).is_absolute()
    assert Path(found).name == "sh"


@pytest.mark.parametrize(
    ("os_release", "hint"),
    [
        ({"ID": "debian"}, "install it with: apt-get install util-linux"),
        ({"ID": "ubuntu", "ID_LIKE": "debian"}, "install it with: apt-get install util-linux"),
        ({"ID": "fedora"}, "install it with: dnf install util-linux"),
        ({"ID": "arch"}, None),
    ],
)
def test_a_missing_tool_names_the_hosts_package_as_the_plugins_say(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    os_release: dict[str, str],
    hint: str | None,
) -> None:
    monkeypatch.setattr(run_module, "SEARCH_PATH", str(tmp_path))
    monkeypatch.setattr(run_module, "_host_packages", run_module.HostPackages())
    run_module.know_host_packages(load_plugins(environ={}).host_packages(os_release))
    with pytest.raises(HostError) as raised:
        find_tool("partx")
    assert raised.value.exit_code == 2
    assert "partx" in raised.value.message
    assert raised.value.hint == hint


def test_a_plugins_own_tool_on_another_familys_host_names_its_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(run_module, "SEARCH_PATH", str(tmp_path))
    monkeypatch.setattr(run_module, "_host_packages", run_module.HostPackages())
    run_module.know_host_packages(load_plugins(environ={}).host_packages({"ID": "debian"}))
    with pytest.raises(HostError) as raised:
        find_tool("createrepo_c")
    assert raised.value.hint == "install it with: apt-get install createrepo-c"


def test_a_missing_unknown_tool_has_no_package_hint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(run_module, "SEARCH_PATH", str(tmp_path))
    with pytest.raises(HostError, match="frobnicate") as raised:
        find_tool("frobnicate")
    assert raised.value.hint is None


def test_commands_in_a_bounded_part_end_by_its_deadline() -> None:
    with commands_bounded(30, "the install"):
        assert run(["true"]).returncode == 0
    with (
        pytest.raises(
            BakeTimeoutError, match=r"^the install took longer than 0.5 s: sleep"
        ) as raised,
        commands_bounded(0.5, "the install", hint="raise the bound"),
    ):
        run(["sleep", "30"], what="sleep")
    assert raised.value.hint == "raise the bound"
    # A command's own, shorter timeout still says it is its own.
    with (
        pytest.raises(BakeTimeoutError, match=r"^nap did not finish in 0.2 s"),
        commands_bounded(30, "the install"),
    ):
        run(["sleep", "30"], what="nap", timeout=0.2)
