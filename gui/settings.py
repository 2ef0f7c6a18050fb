"""The tray app's own settings: `gui.json` next to the profiles (VPNCLIENT_CONFIG_DIR)."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from client.store import default_config_dir

FILENAME = "gui.json"


@dataclass
class GuiSettings:
    connect_at_login: str | None = None  # a profile uuid, connected when started at login
    reconnect: bool = True  # connect again when the connection drops unexpectedly
    reconnect_attempts: int = 3
    last_profile: str | None = None  # the profile selected in the menu

    @classmethod
    def load(cls, directory: Path | None = None) -> GuiSettings:
        path = (directory or default_config_dir()) / FILENAME
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            return cls()
        if not isinstance(data, dict):
            return cls()
        out = cls()
        for key, default in asdict(out).items():
            value = data.get(key, default)
            if isinstance(default, bool) and not isinstance(value, bool):
                continue
            if isinstance(default, int) and not isinstance(default, bool):
                if not isinstance(value, int) or not 0 <= value <= 100:
                    continue
            setattr(out, key, value)
        return out

    def save(self, directory: Path | None = None) -> None:
        directory = directory or default_config_dir()
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".gui-", suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump(asdict(self), f, indent=2)
        os.replace(tmp, directory / FILENAME)
