"""What the benchmarks that run vpnclient next to strongSwan's client share: whether the
lab can run, a timestamped ping through the tunnel, stopping vpnclient, resetting the lab
between runs, running vpnclient from compiled bytecode."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

from tests.lab.gateway import LAN_HOST
from tests.lab.netns import Namespace, kill_all
from tests.lab.roam_lab import RoamLab
from tests.lab.topology import Lab, lab_unavailable, python_env
from tests.lab.vpnclient import VpnClient

REPLY = re.compile(r"^\[(\d+\.\d+)\] \d+ bytes from .*icmp_seq=(\d+)", re.M)


# Imports every module of the package: their bytecode, and that of the standard library
# and third-party modules they import, lands in the cache.
_IMPORT_ALL = ("import importlib, pkgutil, client\n"
               "for m in pkgutil.walk_packages(client.__path__, 'client.'):\n"
               "    importlib.import_module(m.name)\n")


def bytecode_env(cache: Path, interpreter: str) -> dict[str, str]:
    """Environment under which vpnclient's processes run from compiled bytecode, as an
    installed package does (pip and Debian compile it at install time).

    Without it, a caller with PYTHONDONTWRITEBYTECODE set (or a read-only checkout)
    makes every vpnclient process compile the package from source first: about 100 ms
    on each start that would be counted as vpnclient's. The cache is private (`cache`),
    so the work tree gets no __pycache__; it is filled here, before anything is timed.
    """
    env = {"PYTHONPYCACHEPREFIX": str(cache), "PYTHONDONTWRITEBYTECODE": ""}
    cache.mkdir(parents=True, exist_ok=True)
    subprocess.run([interpreter, "-c", _IMPORT_ALL], check=True, capture_output=True,
                   env={**python_env(), **env}, timeout=300)
    return env


def cannot_measure() -> bool:
    """True, having said why, when the lab cannot run here (not root, no strongSwan)."""
    reason = lab_unavailable()
    if reason:
        print(f"cannot measure: {reason}", file=sys.stderr)
        return True
    return False


class TimedPing:
    """`ping -D` to the protected LAN every `interval` seconds until stopped: when each
    reply came (the wall clock, as time.time())."""

    def __init__(self, ns: Namespace, interval: float) -> None:
        self.proc = ns.popen(["ping", "-4", "-n", "-D", "-i", str(interval), LAN_HOST],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)

    def stop(self) -> list[tuple[float, int]]:
        """The replies as (time, icmp_seq), in the order they came."""
        self.proc.send_signal(signal.SIGINT)
        out, _ = self.proc.communicate(timeout=10)
        return [(float(t), int(seq)) for t, seq in REPLY.findall(out)]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def stop_vpnclient(client: VpnClient) -> None:
    """Disconnect a vpnclient that still runs; kill it if it does not end."""
    if client.proc is not None and client.proc.poll() is None:
        client.run("disconnect", timeout=15)
        try:
            client.proc.wait(10)
        except subprocess.TimeoutExpired:
            client.kill()


def reset(lab: Lab | RoamLab) -> None:
    """No client processes, no SAs on the gateway, the client namespace as it was built."""
    kill_all(lab.client_ns.name)
    assert lab.gateway is not None
    lab.gateway.terminate_all()
    lab.reset_client()
