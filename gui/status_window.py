"""Status…: everything about the connection, a live throughput graph and the log."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import (
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from .graph import ThroughputGraph
from .icons import icon
from .messages import STATE_LABELS, format_bytes, format_duration

LOG_LINES = 2000

# (status key, label) in the order shown
FIELDS = (
    ("state", "State"),
    ("profile", "Profile"),
    ("gateway", "Gateway"),
    ("local_address", "Local address"),
    ("local_id", "Our identity"),
    ("remote_id", "Gateway identity"),
    ("virtual_ips", "Virtual IPs"),
    ("dns", "DNS servers"),
    ("routes", "Routes"),
    ("ike_proposal", "IKE proposal"),
    ("esp_proposal", "ESP proposal"),
    ("uptime", "Connected for"),
    ("traffic_in", "Received"),
    ("traffic_out", "Sent"),
    ("rekeys_roams", "Rekeys / roams"),
    ("last_error", "Last error"),
)


class StatusWindow(QWidget):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent, Qt.WindowType.Window)
        self.setWindowTitle("VPN status")
        self.setWindowIcon(icon("vpnclient"))
        self.status: dict[str, Any] = {}
        self.values: dict[str, QLabel] = {}
        details = QGroupBox("Connection")
        form = QFormLayout(details)
        for key, label in FIELDS:
            value = QLabel("–")
            value.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            value.setWordWrap(True)
            self.values[key] = value
            form.addRow(f"{label}:", value)
        self.graph = ThroughputGraph()
        graph_box = QGroupBox("Throughput")
        QVBoxLayout(graph_box).addWidget(self.graph)
        self.log = QPlainTextEdit()
        self.log.setReadOnly(True)
        self.log.setMaximumBlockCount(LOG_LINES)
        self.log.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        self.copy_button = QPushButton("Copy log")
        self.copy_button.clicked.connect(self.copy_log)
        log_box = QGroupBox("Log")
        log_layout = QVBoxLayout(log_box)
        log_layout.addWidget(self.log)
        row = QHBoxLayout()
        row.addStretch()
        row.addWidget(self.copy_button)
        log_layout.addLayout(row)
        top = QHBoxLayout()
        top.addWidget(details, 1)
        top.addWidget(graph_box, 1)
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(log_box, 1)
        self.resize(900, 640)

    # -- updates from the daemon -----------------------------------------------------
    def set_status(self, status: dict[str, Any]) -> None:
        if status.get("state") == "connecting" and self.status.get("state") != "connecting":
            self.graph.reset()
        self.status = dict(status)
        self._render()

    def add_stats(self, stats: dict[str, Any]) -> None:
        for key in ("bytes_in", "bytes_out", "packets_in", "packets_out", "rekeys", "roams"):
            if key in stats:
                self.status[key] = stats[key]
        self.graph.add_stats(float(stats.get("uptime", 0)), int(stats.get("bytes_in", 0)),
                             int(stats.get("bytes_out", 0)))
        self._render()

    def add_log(self, entry: dict[str, Any]) -> None:
        when = str(entry.get("time", ""))[11:23]
        level = str(entry.get("level", "")).upper()[:4]
        self.log.appendPlainText(f"{when} {level:<4} {entry.get('message', '')}")

    def copy_log(self) -> None:
        QGuiApplication.clipboard().setText(self.log.toPlainText())

    def _render(self) -> None:
        s = self.status
        shown = {
            "state": STATE_LABELS.get(s.get("state", ""), s.get("state") or "–"),
            "uptime": self._uptime(s.get("established_at")) if s.get("state") == "connected"
            else "–",
            "traffic_in": f"{format_bytes(s.get('bytes_in') or 0)} in "
                          f"{s.get('packets_in') or 0} packets",
            "traffic_out": f"{format_bytes(s.get('bytes_out') or 0)} in "
                           f"{s.get('packets_out') or 0} packets",
            "rekeys_roams": f"{s.get('rekeys') or 0} / {s.get('roams') or 0}",
        }
        for key, label in self.values.items():
            value = shown[key] if key in shown else s.get(key)
            if isinstance(value, list):
                value = ", ".join(map(str, value))
            label.setText(str(value) if value not in (None, "", []) else "–")

    @staticmethod
    def _uptime(established_at: str | None) -> str:
        if not established_at:
            return "–"
        try:
            since = datetime.fromisoformat(established_at)
        except ValueError:
            return "–"
        return format_duration((datetime.now(UTC) - since).total_seconds())
