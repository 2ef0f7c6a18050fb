"""GUI fixtures: a desktop (Xvfb + trayer), a keyring, the lab and a daemon in it."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.interop.conftest import clean_lab, lab  # noqa: F401 - fixtures used here
from tests.lab.topology import REPO_ROOT

from .desktop import Desktop, Keyring, missing_tools

ARTIFACTS = REPO_ROOT / "artifacts" / "gui"


@pytest.fixture(scope="session")
def desktop() -> Iterator[Desktop]:
    reason = missing_tools()
    if reason:
        pytest.skip(reason)
    session = Desktop().start()
    os.environ["DISPLAY"] = session.display
    os.environ["QT_QPA_PLATFORM"] = "xcb"
    try:
        yield session
    finally:
        session.stop()


@pytest.fixture(scope="session")
def qapp(desktop: Desktop):
    """pytest-qt's application, created on the Xvfb display (a tray needs xcb)."""
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication(["vpnclient-gui-tests"])
    app.setQuitOnLastWindowClosed(False)
    yield app
    # Let go of the X connection before Xvfb goes, or Qt ends the process when it dies.
    app.closeAllWindows()
    app.processEvents()
    app.shutdown()


@pytest.fixture(scope="module")
def keyring_session() -> Iterator[object | None]:
    """A real Secret Service: the session's (.ci/test starts one), else a private one for
    this module; None where neither can run."""
    import shutil

    from client.credentials import Credentials, KeyringUnavailable

    if os.environ.get("DBUS_SESSION_BUS_ADDRESS"):
        try:
            Credentials().backend()
            yield "session"
            return
        except KeyringUnavailable:
            pass
    if shutil.which("gnome-keyring-daemon") is None or shutil.which("dbus-daemon") is None:
        yield None
        return
    ring = Keyring().start()
    old = os.environ.get("DBUS_SESSION_BUS_ADDRESS")
    os.environ["DBUS_SESSION_BUS_ADDRESS"] = ring.address
    try:
        yield ring
    finally:
        if old is None:
            os.environ.pop("DBUS_SESSION_BUS_ADDRESS", None)
        else:
            os.environ["DBUS_SESSION_BUS_ADDRESS"] = old
        ring.stop()


@pytest.fixture
def gui_daemon(clean_lab):  # noqa: F811 - the fixture
    """The real daemon in the lab's client namespace (the GUI test runs as root, which
    the daemon always admits; tests/daemon checks who else it admits)."""
    from tests.daemon.conftest import DaemonProcess

    workdir = Path(clean_lab.dir, "g", secrets.token_hex(3))
    workdir.mkdir(parents=True)
    daemon = DaemonProcess(clean_lab, workdir, "vpnclient", {}).start()
    yield daemon
    daemon.stop()


@pytest.fixture
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS
