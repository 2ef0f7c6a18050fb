"""Suite-wide checks.

With VPNCLIENT_REQUIRE_LAB=1 (set by .ci/test, README's test command) a machine that
lacks anything the lab, the desktop or the package tests need stops the run at once with
one line naming the Debian package, instead of skipping those tests: a green run must
mean they ran.
"""

from __future__ import annotations

import os

import pytest

from tests.lab import prereqs


def pytest_sessionstart(session: pytest.Session) -> None:
    if os.environ.get("VPNCLIENT_REQUIRE_LAB") != "1":
        return
    if os.geteuid() != 0:
        pytest.exit("VPNCLIENT_REQUIRE_LAB=1: the lab needs root (network namespaces)", 3)
    reason = prereqs.unavailable(prereqs.ALL)
    if reason:
        pytest.exit(reason, 3)
