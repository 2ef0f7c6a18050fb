"""Connect-time reference figures: strongSwan's client vs vpnclient (3 runs each).

Measures, in the lab, the time from starting the connect (`swanctl --initiate` or
`vpnclient connect`) to the first ping reply from the protected LAN through the tunnel
(ping every 10 ms, timestamps from `ping -D`). Run as root: `python3 -m tests.perf.ref_connect`.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from dataclasses import dataclass

from tests.lab.strongswan_client import StrongSwanClient
from tests.lab.topology import Lab
from tests.lab.vpnclient import VpnClient
from tests.perf.common import TimedPing, cannot_measure, reset, stop_vpnclient


@dataclass
class Run:
    client: str
    run: int
    up_ms: float | None  # connect command start -> it reported "up"
    ping_ms: float | None  # connect command start -> first ping reply
    note: str = ""


def start_ping(lab: Lab) -> TimedPing:
    return TimedPing(lab.client_ns, 0.01)


def first_reply(ping: TimedPing, t0: float) -> float | None:
    replies = ping.stop()
    return (replies[0][0] - t0) * 1000 if replies else None


def measure_strongswan(lab: Lab, run: int) -> Run:
    client = StrongSwanClient(lab.client_ns, lab.dir / f"sswan-{run}", lab.pki)
    client.start()
    ping = start_ping(lab)
    time.sleep(0.1)  # ping is up and sending before the clock starts
    try:
        t0 = time.time()
        proc = subprocess.run(client.initiate_argv(), capture_output=True, text=True,
                              timeout=30)
        up = (time.time() - t0) * 1000
        time.sleep(0.3)
        ping_ms = first_reply(ping, t0)
        if proc.returncode != 0:
            return Run("strongSwan 5.9.8", run, None, None, "initiate failed")
        return Run("strongSwan 5.9.8", run, up, ping_ms)
    finally:
        ping.close()
        client.terminate()
        client.stop()
        lab.reset_client()


def measure_vpnclient(lab: Lab, run: int) -> Run:
    client = VpnClient(lab.client_ns, lab.dir / f"vpnclient-{run}")
    ping = start_ping(lab)
    time.sleep(0.1)
    up: float | None = None
    note = ""
    try:
        t0 = time.time()
        client.start_connect(lab.profile("eap-mschapv2"), lab.secret("eap-mschapv2"))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if client.proc is not None and client.proc.poll() is not None:
                note = f"failed (exit {client.proc.returncode})"
                break
            status = client.status()
            if status and status.get("state") == "connected":
                up = (time.time() - t0) * 1000
                break
            time.sleep(0.01)
        else:
            note = "failed (not connected after 30 s)"
        time.sleep(0.3)
        ping_ms = first_reply(ping, t0) if up is not None else None
        if up is not None and ping_ms is None:
            note = "failed (no ping reply)"
        return Run("vpnclient", run, up, ping_ms, note)
    finally:
        ping.close()
        stop_vpnclient(client)
        reset(lab)


def fmt(value: float | None) -> str:
    return f"{value:.1f}" if value is not None else "-"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m tests.perf.ref_connect")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--skip-vpnclient", action="store_true")
    args = parser.parse_args(argv)
    if cannot_measure():
        return 2
    runs: list[Run] = []
    with Lab() as lab:
        for i in range(1, args.runs + 1):
            runs.append(measure_strongswan(lab, i))
        if not args.skip_vpnclient:
            for i in range(1, args.runs + 1):
                runs.append(measure_vpnclient(lab, i))
    print(f"{'client':<18} {'run':>3} {'connect->up ms':>15} {'connect->1st ping reply ms':>27}"
          "  note")
    for r in runs:
        print(f"{r.client:<18} {r.run:>3} {fmt(r.up_ms):>15} {fmt(r.ping_ms):>27}  {r.note}")
    return 0 if all(r.ping_ms is not None for r in runs if r.client != "vpnclient") else 1


if __name__ == "__main__":
    sys.exit(main())
