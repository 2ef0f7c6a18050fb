"""Traffic that runs while something happens to the tunnel: a ping with timestamps, a
TCP transfer in a thread, and a silenced gateway (iptables drops everything).

What they measure are counts and gaps for the tests and the benchmark to report; the
tests assert counts (packets lost), never how fast something was.
"""

from __future__ import annotations

import re
import subprocess
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
