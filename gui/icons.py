"""The state icons (icons/*.svg): from the work tree, or where the package put them."""

from __future__ import annotations

import os
import sys
from functools import cache
from pathlib import Path

from PySide6.QtGui import QIcon

from .messages import ICON_STATES


def icon_dir() -> Path:
    candidates = [
        os.environ.get("VPNCLIENT_ICONS", ""),
        str(Path(__file__).resolve().parents[1] / "icons"),  # a checkout
        "/usr/share/vpnclient/icons",  # the .deb
        str(Path(sys.prefix) / "share" / "vpnclient" / "icons"),
    ]
    for candidate in filter(None, candidates):
        if (Path(candidate) / "connected.svg").is_file():
            return Path(candidate)
    raise FileNotFoundError("the vpnclient icons are not installed (icons/*.svg)")


def icon_path(name: str) -> Path:
    return icon_dir() / f"{name}.svg"


@cache
def icon(name: str) -> QIcon:
    """A state icon (one of messages.ICON_STATES) or "vpnclient", the application's."""
    if name not in (*ICON_STATES, "vpnclient"):
        raise ValueError(f"no icon {name!r}")
    return QIcon(str(icon_path(name)))
