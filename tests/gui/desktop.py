"""A desktop session for GUI tests: Xvfb, a tray host (trayer), a Secret Service keyring.

LAB.md: with Xvfb and trayer, QSystemTrayIcon docks; `import -window root` (imagemagick)
takes a screenshot of the whole screen.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from tests.lab import prereqs

SCREEN = "1024x600x24"
TRAY_HEIGHT = 24


def missing_tools() -> str | None:
    reason = prereqs.unavailable(prereqs.DESKTOP)
    if reason:
        return reason
    try:
        import PySide6  # noqa: F401
        import pytestqt  # noqa: F401
    except ImportError as exc:
        return f"{exc.name} is not installed (pip install -e '.[gui,test]')"
    return None


def _free_display() -> int:
    for n in range(77, 177):
        if not Path(f"/tmp/.X11-unix/X{n}").exists() and not Path(f"/tmp/.X{n}-lock").exists():
            return n
    raise RuntimeError("no free X display number")


class Desktop:
    def __init__(self) -> None:
        self.display = ""
        self.procs: list[subprocess.Popen] = []
        self.dir = Path(tempfile.mkdtemp(prefix="vpngui-"))

    def start(self) -> Desktop:
        n = _free_display()
        self.display = f":{n}"
        log = open(self.dir / "xvfb.log", "wb")  # noqa: SIM115 - handed to the child
        self.procs.append(subprocess.Popen(
            ["Xvfb", self.display, "-screen", "0", SCREEN, "-nolisten", "tcp"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
        deadline = time.monotonic() + 15
        while not Path(f"/tmp/.X11-unix/X{n}").exists():
            if time.monotonic() > deadline or self.procs[0].poll() is not None:
                raise RuntimeError(f"Xvfb did not start: {(self.dir / 'xvfb.log').read_text()}")
            time.sleep(0.05)
        env = {**os.environ, "DISPLAY": self.display}
        self.procs.append(subprocess.Popen(
            ["trayer", "--edge", "top", "--align", "right", "--widthtype", "request",
             "--height", str(TRAY_HEIGHT), "--transparent", "false", "--tint", "0x303030",
             "--SetDockType", "true"],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
        # trayer's window ("panel") exists once it can take icons.
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            tree = subprocess.run(["xwininfo", "-display", self.display, "-root", "-tree"],
                                  capture_output=True, text=True, env=env)
            if '"panel"' in tree.stdout:
                break
            time.sleep(0.1)
        return self

    def screenshot(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["import", "-display", self.display, "-window", "root", str(path)],
                       check=True, capture_output=True, timeout=30)
        return path

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(5)
        shutil.rmtree(self.dir, ignore_errors=True)


class Keyring:
    """A session D-Bus with gnome-keyring's Secret Service, unlocked (LAB.md)."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="vpnkeyring-"))
        self.bus: subprocess.Popen | None = None
        self.address = ""
        self.keyring_pid = 0

    def start(self) -> Keyring:
        self.bus = subprocess.Popen(
            ["dbus-daemon", "--session", "--nofork", "--print-address=1"],
            stdout=subprocess.PIPE, text=True, start_new_session=True)
        assert self.bus.stdout is not None
        self.address = self.bus.stdout.readline().strip()
        env = {**os.environ, "DBUS_SESSION_BUS_ADDRESS": self.address,
               "XDG_DATA_HOME": str(self.dir / "data"), "HOME": str(self.dir)}
        (self.dir / "data").mkdir()
        out = subprocess.run(
            ["gnome-keyring-daemon", "--unlock", "--components=secrets"], input="ci",
            capture_output=True, text=True, env=env, timeout=30)
        for line in out.stdout.splitlines():
            if line.startswith("GNOME_KEYRING_PID="):
                self.keyring_pid = int(line.split("=", 1)[1])
        return self

    def stop(self) -> None:
        if self.keyring_pid:
            try:
                os.kill(self.keyring_pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        if self.bus is not None and self.bus.poll() is None:
            self.bus.terminate()
            self.bus.wait(5)
        shutil.rmtree(self.dir, ignore_errors=True)
