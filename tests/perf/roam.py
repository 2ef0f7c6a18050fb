"""Roaming figures, vpnclient next to strongSwan's client in the same lab and run.

The roaming lab (tests/lab/roam_lab.py): two uplinks, wlan0 preferred, wwan0 as fallback,
through a router to the strongSwan gateway; both clients use MOBIKE. A ping every 20 ms
runs through the tunnel; wlan0 goes down (its default route with it) and, once the
gateway shows the client on wwan0, comes back. Printed per run: the longest stretch
without ping replies after wlan0 went down (the roam gap) and after it came back, and
the pings lost; then the medians. strongSwan's client is charon with kernel-libipsec
(tests/lab/strongswan_client.py), which roams by itself on the kernel's events.

Run as root: `python3 -m tests.perf.roam [--runs 3]`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from tests.lab.roam_lab import SCENARIO, UPLINKS, RoamLab
from tests.lab.strongswan_client import StrongSwanClient
from tests.lab.vpnclient import VpnClient
from tests.perf.common import TimedPing, cannot_measure, reset, stop_vpnclient

INTERVAL = 0.02
SETTLE = 2.0  # seconds of steady traffic before and after each change
STRONGSWAN = "strongSwan 5.9.8"


@dataclass
class Run:
    client: str
    run: int
    loss_gap: float  # seconds without replies after wlan0 went down
    return_gap: float  # ... after it came back
    lost: int
    to_wwan: bool  # the gateway saw the client move to wwan0
    back: bool  # ... and back to wlan0 (strongSwan keeps a path that still works)
    connected: bool  # still connected at the end


def gap_after(times: list[float], t: float, window: float = SETTLE) -> float:
    """The longest stretch without replies that overlaps [t, t + window]."""
    ordered = sorted(times)
    gaps = [b - a for a, b in zip(ordered, ordered[1:], strict=False)
            if b > t and a < t + window]
    return max(gaps, default=float("inf"))


def roam(lab: RoamLab, client: str, run: int, connected: Callable[[], bool]) -> Run:
    wlan, wwan = UPLINKS["wlan0"][0], UPLINKS["wwan0"][0]
    ping = TimedPing(lab.client_ns, INTERVAL)
    time.sleep(SETTLE)
    lost_at = time.time()
    lab.uplink_down("wlan0")
    to_wwan = lab.wait_client_addr(wwan, timeout=10) is not None
    time.sleep(SETTLE)
    back_at = time.time()
    lab.uplink_up("wlan0")
    back = lab.wait_client_addr(wlan, timeout=5) is not None
    time.sleep(SETTLE)
    replies = ping.stop()
    times = [t for t, _ in replies]
    lost = max((seq for _, seq in replies), default=0) - len(replies)  # sent, no reply
    return Run(client, run, gap_after(times, lost_at), gap_after(times, back_at), lost,
               to_wwan, back, connected())


def vpnclient_run(lab: RoamLab, run: int) -> Run:
    client = VpnClient(lab.client_ns, lab.dir / f"vpnclient-{run}")
    try:
        client.connect(lab.profile(), lab.secret())
        return roam(lab, "vpnclient", run,
                    lambda: (client.status() or {}).get("state") == "connected")
    finally:
        stop_vpnclient(client)
        reset(lab)


def strongswan_run(lab: RoamLab, run: int) -> Run:
    client = StrongSwanClient(lab.client_ns, lab.dir / f"sswan-{run}", lab.pki,
                              scenario=SCENARIO)
    client.start()
    try:
        if client.initiate().returncode != 0:
            raise RuntimeError(f"strongSwan's client did not connect:\n{client.log_text()}")
        return roam(lab, STRONGSWAN, run, lambda: lab.ping(count=1).ok)
    finally:
        client.terminate()
        client.stop()
        reset(lab)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m tests.perf.roam")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    if cannot_measure():
        return 2
    runs: list[Run] = []
    with RoamLab() as lab:
        for i in range(1, args.runs + 1):
            runs.append(strongswan_run(lab, i))
            runs.append(vpnclient_run(lab, i))
    print(f"ping every {INTERVAL * 1000:.0f} ms through the tunnel; wlan0 down, then up again")
    print(f"{'client':<18} {'run':>3}  {'gap on loss':>11}  {'gap on return':>13}  "
          f"{'lost':>4}  path")
    for r in runs:
        path = ("wlan0 -> wwan0" if r.to_wwan else "NOT MOVED") + \
            (" -> wlan0" if r.back else " (kept on wlan0's return)")
        if not r.connected:
            path += ", NOT CONNECTED at the end"
        print(f"{r.client:<18} {r.run:>3}  {r.loss_gap * 1000:>8.0f} ms  "
              f"{r.return_gap * 1000:>10.0f} ms  {r.lost:>4}  {path}")
    for name in (STRONGSWAN, "vpnclient"):
        mine = [r for r in runs if r.client == name]
        print(f"{name:<18} median gap on uplink loss "
              f"{statistics.median(r.loss_gap for r in mine) * 1000:.0f} ms, on return "
              f"{statistics.median(r.return_gap for r in mine) * 1000:.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
