"""Shared test settings: privileged tests need root; in CI (CI=true) they must run, and a skip of
one counts as a failure."""

from __future__ import annotations

import os
from collections.abc import Generator

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


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
