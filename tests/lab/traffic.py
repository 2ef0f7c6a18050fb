"""Traffic that runs while something happens to the tunnel: a ping with timestamps, a
TCP transfer in a thread, and a silenced gateway (iptables drops everything).

What they measure are counts and gaps for the tests and the benchmark to report; the
tests assert counts (packets lost), never how fast something was.
"""

from __future__ import annotations

import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from tests.lab.gateway import LAN_HOST
from tests.lab.topology import CLIENT_ADDR, Lab

_REPLY = re.compile(r"^\[(\d+\.\d+)\] \d+ bytes from [^:]+: icmp_seq=(\d+) ")
_SUMMARY = re.compile(r"(\d+) packets transmitted, (\d+) received")


@dataclass
class PingStats:
    transmitted: int
    received: int
    replies: list[tuple[int, float]] = field(default_factory=list)  # (icmp_seq, time)
    output: str = ""

    @property
    def lost(self) -> int:
        return self.transmitted - self.received

    @property
    def lost_seqs(self) -> list[int]:
        seen = {seq for seq, _ in self.replies}
        return [seq for seq in range(1, self.transmitted + 1) if seq not in seen]

    def longest_gap(self) -> tuple[float, float]:
        """(seconds, start time) of the longest stretch without a reply."""
        times = sorted(t for _, t in self.replies)
        gaps = [(b - a, a) for a, b in zip(times, times[1:], strict=False)]
        return max(gaps, default=(0.0, 0.0))

    def summary(self) -> str:
        gap, _ = self.longest_gap()
        return (f"{self.transmitted} sent, {self.received} received, {self.lost} lost "
                f"(seqs {self.lost_seqs[:20]}), longest gap {gap:.2f} s")


class BackgroundPing:
    """`ping -D -c COUNT -i INTERVAL` in the client namespace, running until wait()."""

    def __init__(self, lab: Lab, count: int, interval: float = 0.05, dest: str = LAN_HOST,
                 wait: float = 2.0) -> None:
        self.proc = lab.client_ns.popen(
            ["ping", "-4", "-n", "-D", "-c", str(count), "-i", str(interval), "-W", str(wait),
             dest],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        self.timeout = count * interval + wait + 60

    def wait(self) -> PingStats:
        try:
            out, _ = self.proc.communicate(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
        replies = []
        for line in out.splitlines():
            m = _REPLY.match(line)
            if m:
                replies.append((int(m.group(2)), float(m.group(1))))
        m = _SUMMARY.search(out)
        sent, received = (int(m.group(1)), int(m.group(2))) if m else (0, len(replies))
        return PingStats(sent, received, replies, out)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()


class BackgroundTransfer:
    """Lab.transfer() in a thread: send `nbytes` through the tunnel to the LAN sink."""

    def __init__(self, lab: Lab, nbytes: int, timeout: float = 180.0) -> None:
        self.result: dict | None = None
        self._thread = threading.Thread(
            target=lambda: setattr(self, "result", lab.transfer(nbytes, timeout)), daemon=True)
        self._thread.start()

    def wait(self, timeout: float = 240.0) -> dict:
        self._thread.join(timeout)
        return self.result or {"error": "the transfer did not finish"}


@contextmanager
def silenced_gateway(lab: Lab, gateway_addr: str) -> Iterator[None]:
    """The gateway drops everything to and from the client on `gateway_addr`, silently."""
    rules = [["INPUT", "-s", CLIENT_ADDR, "-d", gateway_addr],
             ["OUTPUT", "-s", gateway_addr, "-d", CLIENT_ADDR]]
    for rule in rules:
        lab.gw_ns.run(["iptables", "-w", "-I", *rule, "-j", "DROP"])
    try:
        yield
    finally:
        for rule in rules:
            lab.gw_ns.run(["iptables", "-w", "-D", *rule, "-j", "DROP"], check=False)


# -- leak probes ------------------------------------------------------------------------
# A listener on the far side records what really arrived, so a leak test does not rest
# on what the client side believes it sent.
_LISTENER = r"""
import selectors, socket, sys
addr, port, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); udp.bind((addr, port))
tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); tcp.bind((addr, port)); tcp.listen(8)
sel = selectors.DefaultSelector()
sel.register(udp, selectors.EVENT_READ, "udp"); sel.register(tcp, selectors.EVENT_READ, "tcp")
print("ready", flush=True)
with open(out, "a", buffering=1) as log:
    while True:
        for key, _ in sel.select():
            if key.data == "udp":
                data, peer = udp.recvfrom(2048)
                log.write(f"udp {peer[0]} {data[:64].decode(errors='replace')}\n")
            else:
                conn, peer = tcp.accept()
                log.write(f"tcp {peer[0]}\n")
                conn.close()
"""
_PROBE = r"""
import socket, sys
addr, port, tag = sys.argv[1], int(sys.argv[2]), sys.argv[3]
try:
    socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(tag.encode(), (addr, port))
except OSError as e:
    print("udp", e)
try:
    socket.create_connection((addr, port), timeout=1.5).close(); print("tcp connected")
except OSError as e:
    print("tcp", e)
"""


class FarListener:
    """UDP and TCP on `addr`:`port` in `ns` (the far side of the client's uplink)."""

    def __init__(self, ns, addr: str, port: int, out: str) -> None:
        self.out = out
        self.proc = ns.popen([sys.executable, "-c", _LISTENER, addr, str(port), out],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert self.proc.stdout is not None and self.proc.stdout.readline().strip() == "ready"

    def received(self) -> list[str]:
        try:
            with open(self.out) as f:
                return f.read().splitlines()
        except FileNotFoundError:
            return []

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(5)


@contextmanager
def far_listener(ns, addr: str, port: int, out: str) -> Iterator[FarListener]:
    listener = FarListener(ns, addr, port, out)
    try:
        yield listener
    finally:
        listener.stop()


def probe(ns, addr: str, port: int, tag: str) -> str:
    """One UDP datagram (payload `tag`) and one TCP connect from `ns`; what it saw."""
    return ns.run([sys.executable, "-c", _PROBE, addr, str(port), tag], check=False,
                  timeout=15).stdout
