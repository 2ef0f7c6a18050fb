"""The tray icon, its menu, and the connect flow; everything goes through DaemonLink."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, QTimer
from PySide6.QtGui import QAction, QActionGroup
from PySide6.QtWidgets import QFileDialog, QMenu, QMessageBox, QSystemTrayIcon

from client.credentials import Credentials, KeyringUnavailable, Kind
from client.importers import commit, read_import_file, secret_kinds
from client.profile import Profile, ProfileError
from client.status import idle_status
from client.store import ProfileStore

from .dialogs import CredentialsDialog, SettingsDialog
from .icons import icon
from .link import DaemonLink
from .messages import (
    STATE_ICONS,
    STATE_LABELS,
    Message,
    blocked,
    daemon_problem,
    failure,
)
from .settings import GuiSettings
from .status_window import StatusWindow

NOTIFY_MS = 8000
RECONNECT_DELAY_MS = 3000
IMPORT_FILTER = "VPN profiles (*.vpnprofile *.sswan *.mobileconfig);;All files (*)"
Info = QSystemTrayIcon.MessageIcon.Information
Critical = QSystemTrayIcon.MessageIcon.Critical


@dataclass
class Attempt:
    """One connect the tray app asked for, and what to do once it is answered."""

    profile: Profile
    values: dict[Kind, str] = field(default_factory=dict, repr=False)
    from_keyring: set[Kind] = field(default_factory=set)
    remember: bool = False
    new_username: bool = False


class TrayApp(QObject):
    def __init__(self, socket_path: Path | None = None, config_dir: Path | None = None,
                 credentials: Credentials | None = None, autostart: bool = False) -> None:
        super().__init__()
        self.config_dir = config_dir
        self.store = ProfileStore(config_dir)
        self.creds = credentials or Credentials()
        self.settings = GuiSettings.load(config_dir)
        self.autostart = autostart
        self.status: dict[str, Any] = idle_status()
        self.icon_state = "disconnected"
        self.notifications: list[Message] = []  # every notification shown, newest last
        self.profiles: list[Profile] = []
        self.selected_uuid: str | None = self.settings.last_profile
        self.attempt: Attempt | None = None
        self.last_attempt: Attempt | None = None  # for reconnecting
        self.was_connected = False
        self.user_disconnect = False
        self.reconnects_left = self.settings.reconnect_attempts
        self.credentials_dialog: CredentialsDialog | None = None
        self.import_dialog: QFileDialog | None = None
        self.settings_dialog: SettingsDialog | None = None

        self.status_window = StatusWindow()
        self.tray = QSystemTrayIcon(icon("disconnected"))
        self.menu = QMenu()
        self.menu.aboutToShow.connect(self.rebuild_menu)
        self.tray.setContextMenu(self.menu)
        self.tray.activated.connect(self._on_activated)

        self.link = DaemonLink(socket_path, self)
        self.link.availability.connect(self._on_availability)
        self.link.subscribed.connect(self._on_subscribed)
        self.link.event.connect(self._on_event)
        self.uptime_timer = QTimer(self)
        self.uptime_timer.timeout.connect(self._update_tooltip)
        self.uptime_timer.start(1000)

        self.rebuild_menu()
        self._show_state("disconnected")
        self.tray.show()
        self.link.start()

    # -- the menu ----------------------------------------------------------------------
    def rebuild_menu(self) -> None:
        self.profiles = self._scan()
        m = self.menu
        m.clear()
        header = m.addAction(self._headline())
        header.setEnabled(False)
        if not self.link.up and self.link.problem:
            fix = m.addAction("How to fix…")
            fix.triggered.connect(self.show_problem)
        m.addSeparator()
        group = QActionGroup(m)
        group.setExclusive(True)
        active = self.status.get("uuid") if self._busy() else None
        self.profile_actions: dict[str, QAction] = {}
        for p in self.profiles:
            label = p.name + ("  (connected)" if p.uuid == active
                              and self.status.get("state") == "connected" else "")
            action = m.addAction(label)
            action.setCheckable(True)
            action.setChecked(p.uuid == (active or self.selected_uuid))
            action.setEnabled(not self._busy())
            action.triggered.connect(lambda _=False, uuid=p.uuid: self.select(uuid))
            group.addAction(action)
            self.profile_actions[p.uuid] = action
        if not self.profiles:
            none = m.addAction("No profiles: import one")
            none.setEnabled(False)
        m.addSeparator()
        self.connect_action = m.addAction("Connect")
        self.connect_action.setEnabled(self.link.up and not self._busy()
                                       and self._selected() is not None)
        self.connect_action.triggered.connect(self.connect_selected)
        # Disconnect also lifts a kill switch left holding (state "blocked").
        self.disconnect_action = m.addAction("Disconnect")
        self.disconnect_action.setEnabled(self.link.up and (
            self._busy() or self.status.get("state") == "blocked"))
        self.disconnect_action.triggered.connect(self.disconnect)
        m.addSeparator()
        m.addAction("Import profile…").triggered.connect(self.open_import_dialog)
        m.addAction("Status…").triggered.connect(self.show_status)
        m.addAction("Settings…").triggered.connect(self.open_settings)
        m.addSeparator()
        m.addAction("Quit").triggered.connect(self.quit)

    def _scan(self) -> list[Profile]:
        profiles, _ = self.store.scan()
        return profiles

    def _headline(self) -> str:
        if not self.link.up:
            if not self.link.problem:
                return "Contacting the VPN service…"
            return daemon_problem(self.link.problem, self.link.refused).title
        state = self.status.get("state", "disconnected")
        label = STATE_LABELS.get(state, state)
        if state in ("connected", "connecting", "reconnecting") and self.status.get("profile"):
            return f"{label}: {self.status['profile']}"
        return label

    def _busy(self) -> bool:
        return self.status.get("state") in ("connecting", "connected", "reconnecting",
                                            "disconnecting")

    def _selected(self) -> Profile | None:
        for p in self.profiles:
            if p.uuid == self.selected_uuid:
                return p
        return self.profiles[0] if len(self.profiles) == 1 else None

    def select(self, uuid: str) -> None:
        self.selected_uuid = uuid
        self.settings.last_profile = uuid
        self._save_settings()
        self.rebuild_menu()

    # -- state display -------------------------------------------------------------------
    def _show_state(self, name: str) -> None:
        """Show one of the icon states (messages.ICON_STATES)."""
        self.icon_state = name
        self.tray.setIcon(icon(name))
        self._update_tooltip()

    def _update_tooltip(self) -> None:
        if not self.link.up:
            problem = self.link.problem
            text = "VPN: " + (daemon_problem(problem, self.link.refused).title if problem
                              else "contacting the VPN service")
        else:
            s = self.status
            state = s.get("state", "disconnected")
            text = f"VPN: {STATE_LABELS.get(state, state)}"
            if s.get("profile") and state != "disconnected":
                text += f"\n{s['profile']}"
            if state == "connected":
                if s.get("virtual_ips"):
                    text += f"\nAddress: {', '.join(s['virtual_ips'])}"
                text += f"\nUp {self.status_window._uptime(s.get('established_at'))}"
            if state == "failed" and s.get("last_error"):
                text += f"\n{s['last_error']}"
            if state == "blocked":
                text += f"\n{s.get('blocked_reason') or ''}\nDisconnect lifts the kill switch"
        if self.tray.toolTip() != text:
            self.tray.setToolTip(text)

    def notify(self, message: Message, kind=Info) -> None:
        self.notifications.append(message)
        self.tray.showMessage(message.title, message.text, kind, NOTIFY_MS)

    def show_problem(self) -> None:
        message = daemon_problem(self.link.problem, self.link.refused)
        QMessageBox.information(None, message.title, message.text)

    # -- from the daemon -------------------------------------------------------------------
    def _on_availability(self, up: bool, problem: str) -> None:
        if up:
            return  # _on_subscribed follows with the status
        self._show_state("error")
        if problem:
            self.notify(daemon_problem(problem, self.link.refused), Critical)
        self.rebuild_menu()

    def _on_subscribed(self, reply: dict[str, Any]) -> None:
        self.status = reply.get("status") or idle_status()
        self.status_window.set_status(self.status)
        for entry in reply.get("log", []):
            self.status_window.add_log(entry)
        self.was_connected = self.status.get("state") == "connected"
        self._show_state(STATE_ICONS.get(self.status.get("state", ""), "disconnected"))
        self.rebuild_menu()
        if self.autostart and self.settings.connect_at_login and not self._busy():
            self.autostart = False
            self.selected_uuid = self.settings.connect_at_login
            self.connect_selected()

    def _on_event(self, event: dict[str, Any]) -> None:
        kind = event.get("event")
        if kind == "log":
            self.status_window.add_log(event)
        elif kind == "stats":
            self.status.update({k: v for k, v in event.items() if k not in ("event",
                                                                             "version")})
            self.status_window.add_stats(event)
        elif kind == "state":
            self._on_state(event)
        elif kind == "roam":
            self.status = event.get("status", self.status)
            self.notify(Message("Roamed to another network",
                                f"The VPN connection moved to {event.get('local_address')} "
                                "without interruption."))
        elif kind == "rekey":
            self.status = event.get("status", self.status)
        self.status_window.set_status(self.status)

    def _on_state(self, event: dict[str, Any]) -> None:
        self.status = event.get("status") or self.status
        state = event.get("state", self.status.get("state"))
        self._show_state(STATE_ICONS.get(state, "disconnected"))
        if state == "connected":
            self.was_connected = True
            self.reconnects_left = self.settings.reconnect_attempts
            vips = ", ".join(self.status.get("virtual_ips") or [])
            self.notify(Message("VPN connected",
                                f"{self.status.get('profile')}: your address is {vips}"))
        if "code" in event:  # the connection ended
            self._on_ended(event)
        if state == "blocked":
            self.notify(blocked(self.status), Critical)
        self.rebuild_menu()

    def _on_ended(self, event: dict[str, Any]) -> None:
        reason = event.get("reason")
        was_connected, self.was_connected = self.was_connected, False
        if reason is None:
            if was_connected:
                self.notify(Message("VPN disconnected",
                                    f"{self.status.get('profile')} is no longer connected."))
            return
        if not was_connected:
            return  # a failed connect: its reply tells the user
        message = failure(reason, event.get("error"))
        self.notify(Message(f"VPN connection lost: {message.title}", message.text), Critical)
        if (self.settings.reconnect and not self.user_disconnect and self.reconnects_left > 0
                and reason in ("unreachable", "failed") and self.last_attempt is not None):
            self.reconnects_left -= 1
            self._show_state("reconnecting")
            attempt = self.last_attempt
            QTimer.singleShot(RECONNECT_DELAY_MS, lambda: self._send_connect(attempt))

    # -- connect / disconnect ------------------------------------------------------------
    def connect_selected(self) -> None:
        profile = self._selected()
        if profile is None:
            self.notify(Message("No profile chosen",
                                "Import a profile (Import profile…) or choose one in the "
                                "menu, then Connect."))
            return
        self.start_connect(profile)

    def start_connect(self, profile: Profile, problem: Message | None = None,
                      attempt: Attempt | None = None) -> None:
        kinds = secret_kinds(profile)
        attempt = attempt or Attempt(profile)
        keyring_ok = self._keyring_ok()
        if problem is None and keyring_ok:
            for kind in kinds:
                try:
                    value = self.creds.get(profile.uuid, kind)
                except KeyringUnavailable:
                    keyring_ok = False
                    break
                if value is not None:
                    attempt.values[kind] = value
                    attempt.from_keyring.add(kind)
        if Kind.PASSWORD in kinds and Kind.PASSWORD not in attempt.values \
                and profile.shared_secret is not None:
            attempt.values[Kind.PASSWORD] = profile.shared_secret
        eap = profile.type in ("ikev2-eap", "ikev2-cert-eap")
        need_username = eap and (not profile.eap_id or (problem is not None
                                                        and Kind.PASSWORD in kinds))
        if problem is not None:
            wrong_p12 = "passphrase" in problem.title
            retype = {Kind.P12} if wrong_p12 else {Kind.PASSWORD} & set(kinds)
            for kind in retype:
                attempt.values.pop(kind, None)
                attempt.from_keyring.discard(kind)
        missing = [k for k in kinds if k not in attempt.values]
        if not missing and not need_username:
            self._send_connect(attempt)
            return
        dialog = CredentialsDialog(
            profile, need_username, Kind.PASSWORD in missing, Kind.P12 in missing,
            keyring_ok, problem.title if problem else "")
        dialog.accepted.connect(lambda: self._on_credentials(dialog, attempt))
        self.credentials_dialog = dialog
        dialog.open()

    def _on_credentials(self, dialog: CredentialsDialog, attempt: Attempt) -> None:
        need_username, need_password, need_p12 = dialog.need
        if need_username:
            username = dialog.username.text().strip()
            attempt.new_username = username != (attempt.profile.eap_id or "")
            attempt.profile = dataclasses.replace(attempt.profile, eap_id=username or None)
        if need_password:
            attempt.values[Kind.PASSWORD] = dialog.password.text()
            attempt.from_keyring.discard(Kind.PASSWORD)
        if need_p12:
            attempt.values[Kind.P12] = dialog.p12.text()
            attempt.from_keyring.discard(Kind.P12)
        attempt.remember = dialog.remember.isChecked()
        self.credentials_dialog = None
        self._send_connect(attempt)

    def _send_connect(self, attempt: Attempt) -> None:
        self.attempt = attempt
        self.user_disconnect = False
        self.select(attempt.profile.uuid)
        secrets = {"password": attempt.values.get(Kind.PASSWORD),
                   "p12_passphrase": attempt.values.get(Kind.P12)}
        self.link.request("connect", lambda reply: self._on_connect_reply(reply, attempt),
                          profile=attempt.profile.to_dict(), secrets=secrets, wait=True)

    def _on_connect_reply(self, reply: dict[str, Any], attempt: Attempt) -> None:
        if self.attempt is attempt:
            self.attempt = None
        if reply.get("ok"):
            self.last_attempt = attempt  # kept in memory for reconnects only
            self._remember(attempt)
            return
        reason = reply.get("reason")
        if reason == "cancelled":
            return
        message = failure(reason, reply.get("error"))
        self.notify(message, Critical)
        self._show_state("error")
        self.rebuild_menu()
        if reason == "auth" or (reason == "profile" and "passphrase" in message.title):
            self.start_connect(attempt.profile, problem=message,
                               attempt=Attempt(attempt.profile, dict(attempt.values),
                                               set(attempt.from_keyring)))

    def _remember(self, attempt: Attempt) -> None:
        if attempt.new_username:
            try:
                self.store.save(attempt.profile)
            except OSError as exc:
                self.notify(Message("The username was not saved", str(exc)))
        if not attempt.remember:
            return
        for kind, value in attempt.values.items():
            if kind in attempt.from_keyring:
                continue
            try:
                self.creds.set(attempt.profile.uuid, kind, value)
            except KeyringUnavailable as exc:
                self.notify(Message("The password was not remembered", str(exc)))
                return

    def _keyring_ok(self) -> bool:
        try:
            self.creds.backend()
            return True
        except KeyringUnavailable:
            return False

    def disconnect(self) -> None:
        self.user_disconnect = True
        self.last_attempt = None  # forget the secrets kept for reconnecting
        self.link.request("disconnect", self._on_disconnect_reply, wait=True)

    def _on_disconnect_reply(self, reply: dict[str, Any]) -> None:
        if not reply.get("ok") and reply.get("reason") != "not-connected":
            self.notify(failure(reply.get("reason"), reply.get("error")), Critical)

    # -- import, status, settings, quit ----------------------------------------------------
    def open_import_dialog(self) -> None:
        dialog = QFileDialog(None, "Import VPN profile", str(Path.home()), IMPORT_FILTER)
        dialog.setFileMode(QFileDialog.FileMode.ExistingFile)
        dialog.setOption(QFileDialog.Option.DontUseNativeDialog, True)
        dialog.fileSelected.connect(self.import_file)
        self.import_dialog = dialog
        dialog.open()

    def import_file(self, path: str) -> list[Profile]:
        notices: list[str] = []
        try:
            items = read_import_file(path)
            results = commit(items, self.store, self.creds, notices.append)
        except (ProfileError, OSError, KeyringUnavailable) as exc:
            self.notify(Message("The profile could not be imported",
                                f"{exc}. Ask your VPN administrator for a valid profile."),
                        Critical)
            return []
        imported = [r.profile for r in results]
        if imported:
            self.select(imported[0].uuid)
        names = ", ".join(f"'{p.name}'" for p in imported)
        text = f"{names} can be used now: choose Connect in the VPN menu."
        if notices:
            text += " " + " ".join(notices)
        self.notify(Message("Profile imported", text))
        self.rebuild_menu()
        return imported

    def show_status(self) -> None:
        self.status_window.set_status(self.status)
        self.status_window.show()
        self.status_window.raise_()
        self.status_window.activateWindow()

    def open_settings(self) -> None:
        dialog = SettingsDialog(self.settings, self._scan())
        dialog.accepted.connect(lambda: self._on_settings(dialog))
        self.settings_dialog = dialog
        dialog.open()

    def _on_settings(self, dialog: SettingsDialog) -> None:
        self.settings = dialog.result_settings()
        self._save_settings()

    def _save_settings(self) -> None:
        try:
            self.settings.save(self.config_dir)
        except OSError as exc:
            self.notify(Message("The settings were not saved", str(exc)))

    def _on_activated(self, reason: QSystemTrayIcon.ActivationReason) -> None:
        if reason == QSystemTrayIcon.ActivationReason.Trigger:
            self.show_status()

    def quit(self) -> None:
        # The connection stays up: the daemon owns it, not this desktop session.
        from PySide6.QtWidgets import QApplication

        self.link.stop()
        self.tray.hide()
        QApplication.quit()
