"""The tray application against the real daemon and the strongSwan lab gateway.

Screenshots land in artifacts/gui/ (git-ignored) for a person to look at: the tray icon
in each state on the panel, the icons on light and dark panels, the status window.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

pytest.importorskip("PySide6")

from PySide6.QtCore import QRect, QSize, Qt  # noqa: E402
from PySide6.QtGui import QColor, QGuiApplication, QImage, QPainter  # noqa: E402
from PySide6.QtWidgets import QDialogButtonBox, QSystemTrayIcon  # noqa: E402

from client.credentials import Credentials, KeyringUnavailable, Kind  # noqa: E402
from client.daemon import authorize  # noqa: E402
from gui.icons import icon  # noqa: E402
from gui.messages import ICON_STATES  # noqa: E402
from gui.tray import TrayApp  # noqa: E402
from tests.lab.profiles import make_profile, write_profile  # noqa: E402

CONN = "eap-mschapv2"


def make_tray(tmp_path: Path, socket: Path, credentials: Credentials | None = None) -> TrayApp:
    config = tmp_path / "config"
    return TrayApp(socket_path=socket, config_dir=config, credentials=credentials)


def action(tray: TrayApp, text: str):
    tray.rebuild_menu()
    for a in tray.menu.actions():
        if a.text() == text:
            return a
    raise AssertionError(f"no menu entry {text!r}: {[a.text() for a in tray.menu.actions()]}")


def titles(tray: TrayApp) -> list[str]:
    return [n.title for n in tray.notifications]


def crop_tray(desktop, tray: TrayApp, path: Path, scale: int = 4) -> Path:
    """The panel around the icon, magnified, from a real screenshot of the X screen."""
    full = desktop.screenshot(path.with_suffix(".full.png"))
    image = QImage(str(full))
    geo = tray.tray.geometry()
    box = QRect(geo.x() - 40, geo.y(), geo.width() + 80, geo.height()).intersected(image.rect())
    part = image.copy(box)
    part = part.scaled(part.width() * scale, part.height() * scale,
                       Qt.AspectRatioMode.KeepAspectRatio, Qt.TransformationMode.FastTransformation)
    assert part.save(str(path)), path
    full.unlink()
    return path


def keyring_credentials(keyring_session) -> Credentials | None:
    if keyring_session is None:
        return None
    creds = Credentials()
    try:
        creds.backend()
    except KeyringUnavailable:
        return None
    return creds


# -- without a daemon ----------------------------------------------------------------
def test_tray_docks_and_shows_each_state(qtbot, desktop, artifacts, tmp_path) -> None:
    assert QSystemTrayIcon.isSystemTrayAvailable()
    tray = make_tray(tmp_path, tmp_path / "no-daemon.sock")
    try:
        qtbot.waitUntil(lambda: not tray.tray.geometry().isEmpty(), timeout=10000)
        geo = tray.tray.geometry()
        assert 16 <= geo.height() <= 32, geo  # docked in the 24-px panel
        for state in ICON_STATES:
            tray._show_state(state)
            qtbot.wait(400)
            shot = crop_tray(desktop, tray, artifacts / f"tray-{state}.png")
            assert QImage(str(shot)).width() > 0
        # Each state icon is different at panel size.
        rendered = {s: icon(s).pixmap(QSize(22, 22)).toImage() for s in ICON_STATES}
        assert len({bytes(img.constBits()) for img in rendered.values()}) == len(ICON_STATES)
        _icons_on_panels(artifacts / "icons-on-panels.png")
    finally:
        tray.quit()


def _icons_on_panels(path: Path) -> None:
    """Every state icon at 16, 22 and 24 px on a light and a dark panel."""
    sizes = (16, 22, 24)
    cell = 40
    image = QImage(cell * len(ICON_STATES), cell * len(sizes) * 2, QImage.Format.Format_RGB32)
    p = QPainter(image)
    for row, (bg, size) in enumerate((bg, s) for bg in ("#f2f2f2", "#262626") for s in sizes):
        p.fillRect(0, row * cell, image.width(), cell, QColor(bg))
        for col, state in enumerate(ICON_STATES):
            pix = icon(state).pixmap(QSize(size, size))
            p.drawPixmap(col * cell + (cell - size) // 2, row * cell + (cell - size) // 2, pix)
    p.end()
    image.scaled(image.width() * 3, image.height() * 3, Qt.AspectRatioMode.KeepAspectRatio,
                 Qt.TransformationMode.FastTransformation).save(str(path))


def test_daemon_not_running_says_how_to_fix_it(qtbot, desktop, tmp_path) -> None:
    tray = make_tray(tmp_path, tmp_path / "run" / "control.sock")
    try:
        qtbot.waitUntil(lambda: bool(tray.notifications), timeout=5000)
        message = tray.notifications[-1]
        assert message.title == "The VPN service is not running"
        assert "systemctl enable --now vpnclient" in message.text
        assert tray.icon_state == "error"
        assert "not running" in tray.tray.toolTip()
        assert action(tray, "How to fix…").isEnabled()
        assert not action(tray, "Connect").isEnabled()
    finally:
        tray.quit()


def test_refused_user_is_told_the_fix(qtbot, desktop, tmp_path) -> None:
    """The daemon's refusal (its exact words for a user outside the group) reaches the
    user; tests/daemon proves that the real daemon refuses such a user."""
    from PySide6.QtNetwork import QLocalServer

    server = QLocalServer()
    assert server.listen(str(tmp_path / "control.sock"))
    refusal = authorize(65534, 65534, "vpnclient")
    assert refusal is not None

    def refuse() -> None:
        conn = server.nextPendingConnection()
        conn.write((json.dumps({"version": 1, "ok": False, "code": 1,
                                "reason": "not-authorized", "error": refusal}) + "\n").encode())
        conn.flush()

    server.newConnection.connect(refuse)
    tray = make_tray(tmp_path, tmp_path / "control.sock")
    try:
        qtbot.waitUntil(lambda: bool(tray.notifications), timeout=5000)
        message = tray.notifications[-1]
        assert message.title == "You may not use the VPN service"
        assert "usermod -aG vpnclient" in message.text
        assert tray.icon_state == "error"
    finally:
        tray.quit()
        server.close()


# -- with the daemon and the lab gateway ------------------------------------------------
@pytest.mark.interop
def test_import_connect_watch_disconnect(qtbot, desktop, artifacts, clean_lab, gui_daemon,
                                         keyring_session, tmp_path) -> None:
    lab = clean_lab
    creds = keyring_credentials(keyring_session)
    tray = make_tray(tmp_path, gui_daemon.socket, creds)
    try:
        qtbot.waitUntil(lambda: tray.link.up, timeout=10000)
        assert tray.icon_state == "disconnected"

        # Import through the file dialog.
        profile = make_profile(lab.pki, CONN)
        path = write_profile(tmp_path / "work.vpnprofile", profile)
        action(tray, "Import profile…").trigger()
        dialog = tray.import_dialog
        qtbot.waitUntil(dialog.isVisible)
        dialog.selectFile(str(path))
        dialog.accept()
        qtbot.waitUntil(lambda: "Profile imported" in titles(tray), timeout=5000)
        assert tray.store.get(profile["uuid"]) is not None
        assert action(tray, "lab eap-mschapv2").isChecked()

        # Connect: the credentials dialog asks for the password.
        action(tray, "Connect").trigger()
        qtbot.waitUntil(lambda: tray.credentials_dialog is not None
                        and tray.credentials_dialog.isVisible())
        dialog = tray.credentials_dialog
        assert dialog.remember.isEnabled() == (creds is not None)
        qtbot.keyClicks(dialog.password, lab.secret(CONN))
        qtbot.mouseClick(dialog.buttons.button(QDialogButtonBox.StandardButton.Ok),
                         Qt.MouseButton.LeftButton)
        qtbot.waitUntil(lambda: tray.status.get("state") == "connected", timeout=30000)
        assert tray.icon_state == "connected"
        qtbot.waitUntil(lambda: "VPN connected" in titles(tray))
        vip = tray.status["virtual_ips"][0]
        assert vip.startswith("198.1") and vip in tray.tray.toolTip()
        assert "lab eap-mschapv2" in tray.tray.toolTip()
        assert lab.gateway.sas_for(CONN)

        # The status window: details, figures that move, the graph, the log.
        action(tray, "Status…").trigger()
        window = tray.status_window
        qtbot.waitUntil(window.isVisible)
        values = window.values
        assert values["state"].text() == "Connected"
        assert vip in values["virtual_ips"].text()
        assert values["gateway"].text().startswith("192.0.2.")
        assert values["remote_id"].text() not in ("", "–")
        assert values["local_id"].text() == "alice"
        assert "aes" in values["esp_proposal"].text().lower() or values["esp_proposal"].text()
        before = tray.status.get("bytes_in", 0)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            lab.ping(count=5, interval=0.2)
            qtbot.wait(1200)
            if tray.status.get("bytes_in", 0) > before and max(window.graph.current()) > 0:
                break
        assert tray.status["bytes_in"] > before, tray.status
        assert tray.status["packets_in"] >= 5
        assert "packets" in values["traffic_in"].text() and values["traffic_in"].text() != "0 B"
        assert window.graph.samples and max(max(s) for s in window.graph.samples) > 0
        log_text = window.log.toPlainText()
        assert "IKE_AUTH request" in log_text and "connected: " in log_text
        assert lab.secret(CONN) not in log_text
        window.copy_button.click()
        assert QGuiApplication.clipboard().text() == log_text
        qtbot.wait(300)
        assert window.grab().save(str(artifacts / "status-window.png"))
        crop_tray(desktop, tray, artifacts / "tray-connected-live.png")

        # Disconnect.
        action(tray, "Disconnect").trigger()
        qtbot.waitUntil(lambda: tray.status.get("state") == "disconnected", timeout=20000)
        qtbot.waitUntil(lambda: "VPN disconnected" in titles(tray))
        assert tray.icon_state == "disconnected"
        assert values["state"].text() == "Disconnected"
        assert lab.leftovers() == []
        if creds is not None:  # "remember in keyring" was ticked
            assert creds.get(profile["uuid"], Kind.PASSWORD) == lab.secret(CONN)
            creds.delete_all(profile["uuid"])
    finally:
        tray.quit()
        tray.status_window.close()


@pytest.mark.interop
def test_wrong_password_shows_the_right_message(qtbot, desktop, clean_lab, gui_daemon,
                                                keyring_session, tmp_path) -> None:
    lab = clean_lab
    creds = keyring_credentials(keyring_session)
    tray = make_tray(tmp_path, gui_daemon.socket, creds)
    try:
        qtbot.waitUntil(lambda: tray.link.up, timeout=10000)
        profile = make_profile(lab.pki, CONN)
        tray.import_file(str(write_profile(tmp_path / "work.vpnprofile", profile)))
        action(tray, "Connect").trigger()
        qtbot.waitUntil(lambda: tray.credentials_dialog is not None)
        dialog = tray.credentials_dialog
        qtbot.keyClicks(dialog.password, "not-the-password")
        dialog.accept()
        qtbot.waitUntil(lambda: "The password was rejected" in titles(tray), timeout=30000)
        assert tray.icon_state == "error"
        # The dialog comes back, saying what happened, to type the password again.
        qtbot.waitUntil(lambda: tray.credentials_dialog is not None
                        and tray.credentials_dialog is not dialog
                        and tray.credentials_dialog.isVisible())
        again = tray.credentials_dialog
        assert again.problem.text() == "The password was rejected"
        assert again.password.text() == ""
        again.reject()
        assert gui_daemon.status()["state"] == "failed"
        if creds is not None:  # a rejected password is never remembered
            assert creds.get(profile["uuid"], Kind.PASSWORD) is None
        assert lab.leftovers() == []
    finally:
        tray.quit()


@pytest.mark.interop
def test_a_kill_switch_left_holding_shows_blocked_and_disconnect_lifts_it(
        qtbot, desktop, artifacts, clean_lab, tmp_path) -> None:
    """The gateway goes away with reconnect off: the tray shows `blocked` (its own icon,
    a notification saying why and what lifts it), and its Disconnect lifts it."""
    from tests.daemon.conftest import DaemonProcess
    from tests.lab.gateway import SCENARIOS
    from tests.lab.topology import ping
    from tests.lab.traffic import silenced_gateway

    lab = clean_lab
    workdir = Path(lab.dir, "g", "ks" + str(int(time.monotonic() * 1000) % 100000))
    workdir.mkdir(parents=True)
    daemon = DaemonProcess(lab, workdir, "vpnclient",
                           {"VPNCLIENT_RETRANSMIT": "timeout=0.5,base=1.5,tries=3"}).start()
    tray = make_tray(tmp_path, daemon.socket)
    outside = SCENARIOS["eap-md5"].addr
    try:
        qtbot.waitUntil(lambda: tray.link.up, timeout=10000)
        profile = {**make_profile(lab.pki, "reconnect"), "kill-switch": True, "dpd": 3,
                   "reconnect": {"auto": False}}
        reply = daemon.call("connect", profile=profile,
                            secrets={"password": lab.secret("reconnect")})
        assert reply["ok"], reply
        qtbot.waitUntil(lambda: tray.icon_state == "connected", timeout=10000)
        with silenced_gateway(lab, SCENARIOS["reconnect"].addr):
            qtbot.waitUntil(lambda: tray.icon_state == "blocked", timeout=40000)
        assert "Traffic is blocked: the VPN is not connected" in titles(tray)
        assert "Disconnect lifts the kill switch" in tray.tray.toolTip()
        crop_tray(desktop, tray, artifacts / "tray-blocked-live.png")
        assert not ping(lab.client_ns, outside, count=1).ok
        disconnect = action(tray, "Disconnect")
        assert disconnect.isEnabled()
        disconnect.trigger()
        qtbot.waitUntil(lambda: tray.status.get("state") == "disconnected", timeout=10000)
        assert tray.icon_state == "disconnected"
        assert ping(lab.client_ns, outside, count=1).ok
        assert lab.leftovers() == [], daemon.log()
    finally:
        tray.quit()
        daemon.stop()
