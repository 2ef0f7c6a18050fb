"""iperf3 in the lab: a server that is listening before any client starts, and results
that fail loudly.

Two traps this module exists for: `iperf3 -s` returns from fork long before its socket
listens, so a client started at once may be refused; and iperf3 3.12 with `-J` exits 0
even then, printing {"intervals": [], "error": "unable to connect ..."}.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager

from tests.lab.netns import Namespace


class IperfError(RuntimeError):
    """iperf3 reported an error or printed no result."""


def _listening(ns: Namespace, host: str, port: int) -> bool:
    out = ns.run(["ss", "-H", "-l", "-t", "-n", f"src {host}:{port}"], check=False).stdout
    return bool(out.strip())


@contextmanager
def iperf3_server(ns: Namespace, host: str, port: int = 5201, once: bool = False,
                  timeout: float = 10.0) -> Iterator[subprocess.Popen]:
    """`iperf3 -s` bound to host:port in `ns`, yielded once it listens; killed on exit."""
    argv = ["iperf3", "-s", "-B", host, "-p", str(port)] + (["-1"] if once else [])
    proc = ns.popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + timeout
        while not _listening(ns, host, port):
            if proc.poll() is not None:
                raise IperfError(f"iperf3 server exited {proc.returncode}: "
                                 f"{proc.stderr.read() if proc.stderr else ''}")
            if time.monotonic() > deadline:
                raise IperfError(f"iperf3 server not listening on {host}:{port} "
                                 f"after {timeout} s")
            time.sleep(0.02)
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def parse_result(stdout: str) -> dict:
    """The JSON of `iperf3 -J`; IperfError if it reports an error or has no end summary
    (3.12 exits 0 on errors, so the return code alone proves nothing)."""
    try:
        data = json.loads(stdout)
    except ValueError as exc:
        raise IperfError(f"iperf3 printed no JSON: {stdout[-1500:]!r}") from exc
    if data.get("error"):
        raise IperfError(f"iperf3: {data['error']}")
    if not data.get("end", {}).get("sum_received"):
        raise IperfError(f"iperf3 printed no end summary: {stdout[-1500:]!r}")
    return data
