"""Measuring tools shared by the benchmarks: iperf3, ping RTT, process CPU time and RSS."""

from __future__ import annotations

import os
import re
import statistics
import subprocess
from pathlib import Path

from tests.lab.iperf import parse_result
from tests.lab.netns import Namespace

_RTT = re.compile(r"time=([\d.]+) ms")
CLK_TCK = os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100), nearest rank: a value that was actually measured."""
    ordered = sorted(values)
    rank = max(1, round(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def iperf3(ns: Namespace, server: str, seconds: int, reverse: bool = False,
           port: int = 5201) -> dict:
    """One iperf3 TCP run from `ns` to `server`; reverse: the server sends.

    Returns {"mbps": receiver's goodput, "retransmits": n}.
    """
    argv = ["iperf3", "-c", server, "-p", str(port), "-t", str(seconds), "-J"]
    if reverse:
        argv.append("-R")
    proc = ns.run(argv, check=False, timeout=seconds + 30)
    end = parse_result(proc.stdout)["end"]
    return {"mbps": end["sum_received"]["bits_per_second"] / 1e6,
            "retransmits": end["sum_sent"].get("retransmits", 0)}


def start_iperf3(ns: Namespace, server: str, seconds: int, reverse: bool = False,
                 port: int = 5201) -> subprocess.Popen:
    """iperf3 in the background (load for the "ping under load" figures)."""
    argv = ["iperf3", "-c", server, "-p", str(port), "-t", str(seconds), "-J"]
    if reverse:
        argv.append("-R")
    return ns.popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)


def ping_rtt(ns: Namespace, dest: str, count: int = 100, interval: float = 0.01,
             size: int = 56) -> dict | None:
    """Round-trip times of `count` pings: {"median", "p99", "loss"} in ms; None if no reply."""
    proc = ns.run(["ping", "-n", "-c", str(count), "-i", str(interval), "-s", str(size),
                   "-W", "2", dest], check=False, timeout=count * interval + 30)
    rtts = [float(m) for m in _RTT.findall(proc.stdout)]
    if not rtts:
        return None
    return {"median": statistics.median(rtts), "p99": percentile(rtts, 99),
            "loss": 1 - len(rtts) / count}


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")
