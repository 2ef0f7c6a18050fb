"""The credentials and settings dialogs."""

from __future__ import annotations

from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QLabel,
    QLineEdit,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from client.profile import Profile

from .icons import icon
from .settings import GuiSettings


class CredentialsDialog(QDialog):
    """Username, password (or PSK), PKCS#12 passphrase, and "remember in keyring".

    Only the fields the profile needs are shown; `problem` (e.g. "The password was
    rejected") is shown on top when the dialog comes back after a failure.
    """

    def __init__(self, profile: Profile, need_username: bool, need_password: bool,
                 need_p12: bool, keyring_ok: bool, problem: str = "",
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.profile = profile
        self.setWindowTitle(f"Connect to {profile.name}")
        self.setWindowIcon(icon("vpnclient"))
        layout = QVBoxLayout(self)
        self.problem = QLabel(problem)
        self.problem.setStyleSheet("color: #b3261e; font-weight: bold")
        self.problem.setWordWrap(True)
        self.problem.setVisible(bool(problem))
        layout.addWidget(self.problem)
        form = QFormLayout()
        layout.addLayout(form)
        self.username = QLineEdit(profile.eap_id or "")
        self.password = QLineEdit()
        self.password.setEchoMode(QLineEdit.EchoMode.Password)
        self.p12 = QLineEdit()
        self.p12.setEchoMode(QLineEdit.EchoMode.Password)
        if need_username:
            form.addRow("Username:", self.username)
        if need_password:
            form.addRow("Pre-shared key:" if profile.type == "ikev2-psk" else "Password:",
                        self.password)
        if need_p12:
            form.addRow("Certificate passphrase:", self.p12)
        self.remember = QCheckBox("Remember in keyring")
        self.remember.setChecked(keyring_ok)
        self.remember.setEnabled(keyring_ok)
        if not keyring_ok:
            self.remember.setToolTip("No keyring is available in this desktop session")
        layout.addWidget(self.remember)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok
                                        | QDialogButtonBox.StandardButton.Cancel)
        self.buttons.button(QDialogButtonBox.StandardButton.Ok).setText("Connect")
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        layout.addWidget(self.buttons)
        self.need = (need_username, need_password, need_p12)
        first = next((w for w, n in zip((self.username, self.password, self.p12), self.need,
                                        strict=True) if n), None)
        if first is not None:
            first.setFocus()


class SettingsDialog(QDialog):
    def __init__(self, settings: GuiSettings, profiles: list[Profile],
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("VPN settings")
        self.setWindowIcon(icon("vpnclient"))
        self.settings = settings
        form = QFormLayout(self)
        self.login_profile = QComboBox()
        self.login_profile.addItem("Do not connect", None)
        for p in profiles:
            self.login_profile.addItem(p.name, p.uuid)
        index = self.login_profile.findData(settings.connect_at_login)
        self.login_profile.setCurrentIndex(max(0, index))
        form.addRow("Connect at login:", self.login_profile)
        self.reconnect = QCheckBox("Connect again when the connection drops")
        self.reconnect.setChecked(settings.reconnect)
        form.addRow("Reconnect:", self.reconnect)
        self.attempts = QSpinBox()
        self.attempts.setRange(1, 20)
        self.attempts.setValue(max(1, settings.reconnect_attempts))
        self.attempts.setEnabled(settings.reconnect)
        self.reconnect.toggled.connect(self.attempts.setEnabled)
        form.addRow("Attempts:", self.attempts)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Save
                                   | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form.addRow(buttons)

    def result_settings(self) -> GuiSettings:
        s = self.settings
        s.connect_at_login = self.login_profile.currentData()
        s.reconnect = self.reconnect.isChecked()
        s.reconnect_attempts = self.attempts.value()
        return s
