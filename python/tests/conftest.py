import os
import random

import pytest


@pytest.fixture
def seed(request):
    """A fresh seed per test, printed (and reproducible with MOERUN_TEST_SEED)."""
    value = int(os.environ.get("MOERUN_TEST_SEED", random.SystemRandom().randrange(2**31)))
    print(f"[   SEED   ] {request.node.name}: {value}")
    return value


def pytest_runtest_makereport(item, call):
    """MOERUN_NO_SKIPS=1 (the device script): a skipped test fails, so nothing passes unseen."""
    if os.environ.get("MOERUN_NO_SKIPS") != "1":
        return None
    from _pytest.runner import TestReport

    report = TestReport.from_item_and_call(item, call)
    if report.skipped:
        report.outcome = "failed"
        report.longrepr = f"skipped under MOERUN_NO_SKIPS=1: {report.longrepr}"
    return report


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs torch with a CUDA device (scripts/device-python.sh)")
