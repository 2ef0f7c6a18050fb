"""The tray app's only connection to the outside: the daemon's control socket.

One QLocalSocket carries the subscription (events) and every request (responses are
matched by `id`). When the daemon is not there, or refuses this user, `availability`
says so in words with the fix, and the link keeps retrying in the background.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, QTimer, Signal
from PySide6.QtNetwork import QLocalSocket

from client import control

RETRY_MS = 2000
REFUSED_RETRY_MS = 10000  # group membership changes rarely
Callback = Callable[[dict[str, Any]], None]


class DaemonLink(QObject):
    event = Signal(dict)  # a pushed event (state, stats, rekey, roam, log)
    subscribed = Signal(dict)  # the subscribe response: current status and recent log
    availability = Signal(bool, str)  # up, and if not: why, with the fix

    def __init__(self, path: Path | None = None, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.path = path or control.daemon_socket_path()
        self.socket = QLocalSocket(self)
        self.socket.connected.connect(self._on_connected)
        self.socket.disconnected.connect(self._on_disconnected)
        self.socket.errorOccurred.connect(self._on_error)
        self.socket.readyRead.connect(self._on_ready_read)
        self.retry = QTimer(self)
        self.retry.setSingleShot(True)
        self.retry.timeout.connect(self.start)
        self._ids = itertools.count(1)
        self._pending: dict[int, Callback | None] = {}
        self._buffer = b""
        self.up = False
        self.problem = ""
        self.refused = False  # the daemon (or the socket's permissions) turned us away

    # -- connection -------------------------------------------------------------------
    def start(self) -> None:
        if self.socket.state() != QLocalSocket.LocalSocketState.UnconnectedState:
            return
        self._buffer = b""
        self.socket.connectToServer(str(self.path))

    def stop(self) -> None:
        self.retry.stop()
        self.socket.abort()

    def _on_connected(self) -> None:
        self.request("subscribe", self._on_subscribe)

    def _on_subscribe(self, reply: dict[str, Any]) -> None:
        if reply.get("ok"):
            self._set(True, "")
            self.subscribed.emit(reply)

    def _on_disconnected(self) -> None:
        for callback in self._pending.values():
            if callback is not None:
                callback(control.error("failed", "the VPN service went away"))
        self._pending.clear()
        if self.up:
            self._set(False, f"the VPN service stopped ({self.path}); start it with "
                             "`sudo systemctl start vpnclient`")
        self._schedule(RETRY_MS)

    def _on_error(self, err: QLocalSocket.LocalSocketError) -> None:
        E = QLocalSocket.LocalSocketError
        if err in (E.ServerNotFoundError, E.ConnectionRefusedError):
            self._set(False, f"the VPN service is not running ({self.path}); start it with "
                             "`sudo systemctl enable --now vpnclient`")
            self._schedule(RETRY_MS)
        elif err == E.SocketAccessError:
            self._set(False, f"not allowed to reach the VPN service at {self.path}: ask an "
                             "administrator to add you to the group 'vpnclient' (sudo usermod "
                             "-aG vpnclient $USER), then log in again", refused=True)
            self._schedule(REFUSED_RETRY_MS)
        elif err != E.PeerClosedError:
            self._set(False, f"the VPN service at {self.path}: {self.socket.errorString()}")
            self._schedule(RETRY_MS)

    def _schedule(self, ms: int) -> None:
        if not self.retry.isActive():
            self.retry.start(ms)

    def _set(self, up: bool, problem: str, refused: bool = False) -> None:
        self.refused = refused
        changed = (up, problem) != (self.up, self.problem)
        self.up, self.problem = up, problem
        if changed:
            self.availability.emit(up, problem)

    # -- messages ---------------------------------------------------------------------
    def request(self, command: str, callback: Callback | None = None, **args: Any) -> bool:
        """Send a request; `callback` gets its response. False if the link is down."""
        if self.socket.state() != QLocalSocket.LocalSocketState.ConnectedState:
            if callback is not None:
                callback(control.error("failed", self.problem or "the VPN service is not "
                                                                 "reachable"))
            return False
        request_id = next(self._ids)
        self._pending[request_id] = callback
        self.socket.write(control.encode({"id": request_id, "command": command, **args}))
        self.socket.flush()
        return True

    def _on_ready_read(self) -> None:
        # All complete lines split off at once (splitting one at a time re-copied the rest
        # of the buffer per line: quadratic); only the line still arriving is bounded.
        *lines, self._buffer = (self._buffer + bytes(self.socket.readAll().data())).split(b"\n")
        if len(self._buffer) > control.MAX_LINE:
            self.socket.abort()
            return
        for line in lines:
            if not line.strip():
                continue
            try:
                message = control.decode(line)
            except (control.ProtocolError, json.JSONDecodeError):
                continue
            self._dispatch(message)

    def _dispatch(self, message: dict[str, Any]) -> None:
        if "event" in message:
            self.event.emit(message)
            return
        if message.get("reason") == "not-authorized":
            # Written before anything was read: the daemon refuses this user outright.
            self._pending.clear()
            self._set(False, message.get("error", "not allowed to use the VPN service"),
                      refused=True)
            self.socket.abort()
            self.retry.start(REFUSED_RETRY_MS)
            return
        callback = self._pending.pop(message.get("id"), None)
        if callback is not None:
            callback(message)
