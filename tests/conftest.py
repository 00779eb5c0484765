"""Shared test settings.

Privileged tests need root; in CI (CI=true) they must run, and a skip of one counts as a failure.

The suite runs in parallel (pytest-xdist, ``-n auto --dist loadfile``: a file's tests share a
worker, and with it its fixtures). As root, each worker first takes a private mount namespace
of its own: what a test mounts on the host (an exported image it inspects) is then invisible to
the other worker's bakes, whose namespaces would otherwise hold it (and its loop device) until
they end. The session's temporary directories are on an XFS filesystem made for the session
(tests/reflinkfs.py), so that the stores' copies are reflink clones.

Every hook call of the session, in every worker and in every ``aminate`` they start, is recorded
through the engine's hook-call monitoring (``AMINATOR_TRACE_PLUGINS`` naming one file); once
every worker has finished, the controlling process fails the session if a hook was never called
(only when the whole suite ran).

A passed test's temporary directory is removed at its teardown (``tmp_path_retention_policy``):
image files are large, and a suite's worth of them would fill the disk. Before that removal,
nothing may still be mounted (in any mount namespace), attached or running under it. At the end
of the session, nothing the session made may still run: no process may mention, work in or be
rooted in the session's temporary directories (a gpg-agent a fixture never ended, say)."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Generator
from pathlib import Path

import pytest

from aminator_ng.host import sandbox, syscalls
from tests import reflinkfs
from tests.hookrecord import HOOK_RECORD_VARIABLE, hooks_never_called
from tests.hoststate import held_under, processes_left_under, release_everything_under

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


session_resources = pytest.StashKey[contextlib.ExitStack]()


def is_worker(config: pytest.Config) -> bool:
    """An xdist worker (the controlling process sets up and checks the session)."""
    return hasattr(config, "workerinput")


def pytest_configure(config: pytest.Config) -> None:
    resources = config.stash[session_resources] = contextlib.ExitStack()
    if is_worker(config):
        if os.geteuid() == 0:
            # As a bake's namespace is made (also when the suite runs in a chroot, whose root
            # is no mount point); making it may step out of the chroot and back, to "/".
            working_directory = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                syscalls.unshare(syscalls.CLONE_NEWNS)
                sandbox.make_namespace_private()
            finally:
                os.fchdir(working_directory)
                os.close(working_directory)
        return  # the record and the filesystem are the controlling process's, inherited
    record = Path(tempfile.mkdtemp(prefix="aminator-hook-calls-")) / "calls.jsonl"
    record.touch()
    os.environ[HOOK_RECORD_VARIABLE] = str(record)
    resources.callback(_remove_record, record)
    if os.geteuid() == 0 and not config.option.basetemp and reflinkfs.usable():
        filesystem = resources.enter_context(reflinkfs.reflink_filesystem())
        config.option.basetemp = str(filesystem / "pytest")


def _remove_record(record: Path) -> None:
    os.environ.pop(HOOK_RECORD_VARIABLE, None)
    record.unlink(missing_ok=True)
    record.parent.rmdir()


def pytest_unconfigure(config: pytest.Config) -> None:
    if session_resources in config.stash:
        config.stash[session_resources].close()


def whole_suite_selected(config: pytest.Config) -> bool:
    """True when this session runs every test: no -k, -m or narrower paths, nothing deselected."""
    tests_root = Path(__file__).parent
    chosen = [Path(arg.split("::")[0]).resolve() for arg in config.args]
    return (
        all(path in (tests_root, tests_root.parent) for path in chosen)
        and not config.getoption("keyword")
        and not config.getoption("markexpr")
        and not config.getoption("lf", False)
        and not config.getoption("deselect", None)
    )


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Every hookspec is called somewhere in the suite, by the engine, in a real command."""
    config = session.config
    if is_worker(config) or not whole_suite_selected(config) or session.testscollected == 0:
        return
    never_called = hooks_never_called(Path(os.environ[HOOK_RECORD_VARIABLE]))
    if never_called:
        reporter = config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(f"hooks no test exercises: {sorted(never_called)}", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    privileged = [item for item in items if item.get_closest_marker("privileged")]
    if os.geteuid() == 0 or not privileged:
        return
    if IN_CI:
        raise pytest.UsageError("CI=true: the privileged integration tests must run as root")
    for item in privileged:
        item.add_marker(pytest.mark.skip(reason="needs root: loop devices, mounts and chroot"))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if IN_CI and report.skipped and item.get_closest_marker("privileged"):
        report.outcome = "failed"
        report.longrepr = f"privileged test skipped in CI: {report.longrepr}"
    return report


@pytest.fixture(autouse=True)
def nothing_held_under_tmp_path(request: pytest.FixtureRequest) -> Generator[None]:
    """Torn down before ``tmp_path`` is removed: a mount left under it would have the removal
    walk into whatever it binds (a chroot's /dev, say)."""
    if "tmp_path" not in request.fixturenames:
        yield
        return
    root = str(request.getfixturevalue("tmp_path"))
    yield
    held = held_under(root)
    if held:
        release_everything_under(root)
        pytest.fail(f"left held under the test's directory: {held}")


@pytest.fixture(scope="session", autouse=True)
def nothing_outlives_the_session(tmp_path_factory: pytest.TempPathFactory) -> Generator[None]:
    """Set up before every other fixture, so torn down after all of them: what still runs,
    mounts or attaches under the session's directories then has no owner left to end it."""
    roots = [
        str(tmp_path_factory.getbasetemp()),
        str(Path(os.environ[HOOK_RECORD_VARIABLE]).parent),
    ]
    yield
    for root in roots:
        processes_left_under(root, timeout_s=5)  # give a daemon told to stop its moment to end
    held = {root: found for root in roots if (found := held_under(root))}
    for root in held:
        release_everything_under(root)
    if held:
        pytest.fail(f"left running or held after the session, now released: {held}")
