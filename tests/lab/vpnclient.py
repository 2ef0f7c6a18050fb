"""Driving the client under test (`vpnclient`, CLI.md) inside the lab's client namespace.

The command defaults to `python3 -m client.cli` from this work tree; set
VPNCLIENT_CMD (e.g. "vpnclient") to test an installed build instead.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

from tests.lab.netns import Namespace
from tests.lab.topology import python_env

CONNECTED = "connected"


class ClientError(AssertionError):
    """The client did not do what the contract says; the message carries its log."""


def client_command() -> list[str]:
    override = os.environ.get("VPNCLIENT_CMD")
    return shlex.split(override) if override else [sys.executable, "-m", "client.cli"]


class VpnClient:
    """One client instance: its own config/runtime dirs and log under `workdir`."""

    def __init__(self, ns: Namespace, workdir: Path, extra_env: dict[str, str] | None = None,
                 runtime_dir: Path | None = None):
        self.ns = ns
        self.dir = Path(workdir)
        self.config_dir = self.dir / "config"
        self.runtime_dir = Path(runtime_dir) if runtime_dir else self.dir / "run"
        self.log_path = self.dir / "client.log"
        self.stderr_path = self.dir / "client.stderr"  # only with separate_stderr
        for d in (self.config_dir, self.runtime_dir):
            d.mkdir(parents=True, exist_ok=True)
            d.chmod(0o700)
        self.extra_env = dict(extra_env or {})
        self.proc: subprocess.Popen | None = None

    def env(self) -> dict[str, str]:
        env = python_env()
        env["VPNCLIENT_CONFIG_DIR"] = str(self.config_dir)
        env["VPNCLIENT_RUNTIME_DIR"] = str(self.runtime_dir)
        env.update(self.extra_env)
        return env

    def run(self, *args: str, input: str | None = None, timeout: float = 30.0):
        """Run one short vpnclient command (status, disconnect, ...) in the namespace."""
        return self.ns.run([*client_command(), *args], check=False, input=input,
                           env=self.env(), timeout=timeout)

    # -- connect / disconnect ------------------------------------------------------
    def start_connect(self, profile: Path | str, secret: str | None,
                      extra_args: tuple[str, ...] = (), verbose: int = 2,
                      separate_stderr: bool = False) -> subprocess.Popen:
        """Start `vpnclient connect PROFILE --password-stdin -v -v` (foreground, root).

        With separate_stderr, standard error goes to `stderr_path` (and standard output
        to the log), so a test can check what the contract says is on stderr.
        """
        argv = [*client_command(), "connect", str(profile), *(["-v"] * verbose), *extra_args]
        if secret is not None:
            argv.append("--password-stdin")
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        err = open(self.stderr_path, "ab") if separate_stderr else None  # noqa: SIM115
        try:
            self.proc = self.ns.popen(argv, stdin=subprocess.PIPE, stdout=log,
                                      stderr=err or subprocess.STDOUT, env=self.env())
        finally:
            log.close()
            if err is not None:
                err.close()
        assert self.proc.stdin is not None
        try:
            if secret is not None:
                self.proc.stdin.write(secret.encode() + b"\n")
            self.proc.stdin.close()
        except BrokenPipeError:
            pass
        return self.proc

    def status(self) -> dict | None:
        """`vpnclient status --json` as a dict; None if it failed or printed no JSON."""
        proc = self.run("status", "--json", timeout=10)
        if proc.returncode != 0:
            return None
        try:
            data = json.loads(proc.stdout)
        except json.JSONDecodeError:
            return None
        return data if isinstance(data, dict) else None

    def wait_connected(self, timeout: float = 20.0, poll: float = 0.1) -> dict:
        deadline = time.monotonic() + timeout
        last: dict | None = None
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise ClientError(
                    f"vpnclient connect exited {self.proc.returncode} before connecting"
                    f"\n{self.log_tail()}"
                )
            last = self.status()
            if last and last.get("state") == CONNECTED:
                return last
            time.sleep(poll)
        raise ClientError(f"not connected after {timeout} s (last status {last})"
                          f"\n{self.log_tail()}")

    def connect(self, profile: Path | str, secret: str | None, timeout: float = 20.0) -> dict:
        self.start_connect(profile, secret)
        return self.wait_connected(timeout)

    def wait_exit(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired as exc:
            raise ClientError(f"vpnclient connect still running after {timeout} s"
                              f"\n{self.log_tail()}") from exc

    def disconnect(self, timeout: float = 15.0) -> tuple[subprocess.CompletedProcess, int]:
        """`vpnclient disconnect`, then the connect process's exit code."""
        proc = self.run("disconnect", timeout=timeout)
        return proc, self.wait_exit(timeout)

    def send_signal(self, sig: int) -> None:
        """Signal the connect process itself (`ip netns exec` execs into it)."""
        assert self.proc is not None
        self.proc.send_signal(sig)

    def kill(self) -> None:
        """Last resort cleanup: SIGTERM, then SIGKILL the connect process group."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stderr_text(self) -> str:
        if not self.stderr_path.exists():
            return ""
        return self.stderr_path.read_text(errors="replace")

    def log_tail(self, chars: int = 6000) -> str:
        text = f"--- client log ({self.log_path}) ---\n{self.log_text()[-chars:]}"
        if self.stderr_path.exists():
            text += f"\n--- client stderr ---\n{self.stderr_text()[-chars:]}"
        return text
