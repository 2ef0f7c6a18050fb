"""Daemon fixtures: the lab (as in tests/interop), throw-away users, a running daemon."""

from __future__ import annotations

import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from client import control
from tests.interop.conftest import clean_lab, lab  # noqa: F401 - fixtures used here
from tests.lab.topology import Lab, python_env

from .users import TestUsers, test_users


@pytest.fixture(scope="session")
def users(lab: Lab) -> Iterator[TestUsers]:  # noqa: F811 - the fixture
    with test_users() as made:
        yield made


class DaemonProcess:
    """`python -m client.daemon` inside the lab's client namespace."""

    def __init__(self, lab: Lab, workdir: Path, group: str, env: dict[str, str]) -> None:  # noqa: F811
        self.lab = lab
        self.dir = workdir
        self.rdir = workdir / "run"
        self.log_path = workdir / "daemon.log"
        self.group = group
        self.extra_env = env
        self.proc: subprocess.Popen | None = None

    @property
    def socket(self) -> Path:
        return control.socket_path(self.rdir)

    def env(self) -> dict[str, str]:
        env = python_env()
        env["VPNCLIENT_RUNTIME_DIR"] = str(self.rdir)
        env.update(self.extra_env)
        return env

    def start(self, timeout: float = 15.0) -> DaemonProcess:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dir.chmod(0o755)
        with open(self.log_path, "ab") as log:
            self.proc = self.lab.client_ns.popen(
                [sys.executable, "-m", "client.daemon", "--group", self.group, "-vv"],
                env=self.env(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"the daemon exited {self.proc.returncode}\n{self.log()}")
            try:
                with control.ControlClient.open(self.socket, 2.0) as client:
                    if client.call("status").get("ok"):
                        return self
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"the daemon did not answer within {timeout} s\n{self.log()}")

    def call(self, command: str, timeout: float = 30.0, **args) -> dict:
        """One request as root."""
        with control.ControlClient.open(self.socket, timeout) as client:
            return client.call(command, **args)

    def status(self) -> dict:
        return self.call("status")["status"]

    def wait_state(self, state: str, timeout: float = 30.0) -> dict:
        deadline = time.monotonic() + timeout
        status: dict = {}
        while time.monotonic() < deadline:
            status = self.status()
            if status["state"] == state:
                return status
            time.sleep(0.1)
        raise AssertionError(f"state {status.get('state')!r}, not {state!r}\n{self.log()}")

    def stop(self, timeout: float = 30.0) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        raise AssertionError(f"the daemon ignored SIGTERM for {timeout} s\n{self.log()}")

    def log(self, chars: int = 8000) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return f"--- daemon log ({self.log_path}) ---\n{text[-chars:]}"


@pytest.fixture
def start_daemon(clean_lab: Lab, users: TestUsers,  # noqa: F811
                 request: pytest.FixtureRequest) -> Iterator:
    made: list[DaemonProcess] = []
    test_id = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)

    def start(env: dict[str, str] | None = None) -> DaemonProcess:
        # Short: a UNIX socket path has at most 107 bytes.
        workdir = Path(clean_lab.dir, "d", f"{len(made)}{secrets.token_hex(3)}")
        workdir.mkdir(parents=True)
        (workdir / "test").write_text(test_id + "\n")
        daemon = DaemonProcess(clean_lab, workdir, users.group, env or {})
        made.append(daemon)
        return daemon.start()

    yield start
    for daemon in made:
        daemon.stop()


@pytest.fixture
def daemon(start_daemon) -> DaemonProcess:
    return start_daemon()
