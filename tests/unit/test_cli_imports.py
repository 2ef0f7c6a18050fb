"""What the light commands load: `status`, `list` and a `connect` that the daemon carries
out run without the engine, the event loop, the importers or X.509. A connect through
the daemon is all the user waits for before the daemon sends the first IKE packet, so
what its process imports is its start-up time.

Each command runs in a fresh interpreter against a stand-in daemon on a UNIX socket,
which records what it was asked.
"""

from __future__ import annotations

import json
import os
import shutil
import socketserver
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from client import control

REPO = Path(__file__).resolve().parents[2]
PROFILE = REPO / "profiles" / "lab-eap.vpnprofile"  # EAP, no pinned CA
# Modules that only the foreground engine, `import` or a certificate need.
HEAVY = ("asyncio", "client.engine", "client.ikev2.ike_sa", "client.importers",
         "client.mobileconfig", "cryptography.x509")

# Runs `vpnclient ARGS`, then writes the names of the loaded modules to OUT.
RUN = """
import json, sys
from client import cli
code = cli.main(sys.argv[2:])
with open(sys.argv[1], "w") as f:
    json.dump({"code": code, "modules": sorted(sys.modules)}, f)
"""


class FakeDaemon(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def __init__(self, path: Path) -> None:
        self.requests: list[dict[str, Any]] = []
        super().__init__(str(path), _Handler)


class _Handler(socketserver.StreamRequestHandler):
    server: FakeDaemon

    def handle(self) -> None:
        for line in self.rfile:
            request = control.decode(line)
            self.server.requests.append(request)
            state = "connected" if request["command"] == "connect" else "disconnected"
            self.wfile.write(control.encode({"id": request.get("id"), "ok": True,
                                             "server": "daemon", "status": {"state": state}}))


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "run").mkdir(mode=0o700)
    return {**os.environ, "PYTHONPATH": str(REPO),
            "VPNCLIENT_RUNTIME_DIR": str(tmp_path / "run"),
            "VPNCLIENT_CONFIG_DIR": str(tmp_path / "config")}


@pytest.fixture
def daemon(env: dict[str, str]) -> Iterator[FakeDaemon]:
    server = FakeDaemon(control.socket_path(Path(env["VPNCLIENT_RUNTIME_DIR"])))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def vpnclient(env: dict[str, str], tmp_path: Path, *args: str,
              input: str = "") -> tuple[subprocess.CompletedProcess[str], int, set[str]]:
    out = tmp_path / "modules.json"
    proc = subprocess.run([sys.executable, "-c", RUN, str(out), *args], env=env, input=input,
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert out.exists(), proc.stderr
    result = json.loads(out.read_text())
    return proc, result["code"], set(result["modules"])


def test_connect_through_the_daemon_loads_no_engine(env, daemon, tmp_path) -> None:
    proc, code, modules = vpnclient(env, tmp_path, "connect", str(PROFILE),
                                    "--password-stdin", input="s3cret\n")
    assert code == 0, proc.stderr
    connect = [r for r in daemon.requests if r["command"] == "connect"]
    assert len(connect) == 1, daemon.requests
    profile = json.loads(PROFILE.read_text())
    assert connect[0]["profile"]["uuid"] == profile["uuid"]
    assert connect[0]["profile"]["remote"]["addr"] == profile["remote"]["addr"]
    assert connect[0]["secrets"]["password"] == "s3cret"
    assert modules.isdisjoint(HEAVY), sorted(modules & set(HEAVY))


def test_status_loads_neither_profiles_nor_cryptography(env, daemon, tmp_path) -> None:
    proc, code, modules = vpnclient(env, tmp_path, "status")
    assert code == 0 and "state: disconnected" in proc.stdout, proc.stdout + proc.stderr
    assert [r["command"] for r in daemon.requests] == ["status"]
    assert modules.isdisjoint(HEAVY), sorted(modules & set(HEAVY))
    assert not any(m.startswith("cryptography") for m in modules)
    assert "client.profile" not in modules


def test_list_loads_no_importers(env, tmp_path) -> None:
    store = Path(env["VPNCLIENT_CONFIG_DIR"])
    store.mkdir(mode=0o700)
    uuid = json.loads(PROFILE.read_text())["uuid"]
    shutil.copy(PROFILE, store / f"{uuid}.vpnprofile")
    proc, code, modules = vpnclient(env, tmp_path, "list")
    assert code == 0 and uuid in proc.stdout, proc.stdout + proc.stderr
    assert modules.isdisjoint(HEAVY), sorted(modules & set(HEAVY))


def test_the_tray_loads_neither_the_daemon_nor_the_engine_nor_asyncio() -> None:
    """The status shape lives in client.status, so the tray does not pull the daemon,
    the engine and the event loop into a desktop user's process."""
    pytest.importorskip("PySide6")
    code = ("import json, sys, gui.app, gui.tray; "
            "print(json.dumps(sorted(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                         text=True, timeout=60, env={**os.environ, "QT_QPA_PLATFORM": "offscreen"})
    assert out.returncode == 0, out.stderr
    loaded = set(json.loads(out.stdout))
    assert "client.status" in loaded
    assert not loaded & {"asyncio", "client.daemon", "client.engine", "client.ikev2.ike_sa"}, \
        sorted(loaded & {"asyncio", "client.daemon", "client.engine", "client.ikev2.ike_sa"})
