"""Recovery figures, vpnclient next to strongSwan's client in the same lab and run.

gateway restart: a ping every 20 ms runs through the tunnel while the gateway restarts
    (SIGTERM: charon deletes its IKE SAs, then it starts again and loads its config).
    Printed: the longest stretch without ping replies, and the time from the gateway
    being back (restart done) to the first reply through a new tunnel.
rekeys (--rekey): the "rekey" scenario (the gateway rekeys the CHILD_SA every ~20 s with
    PFS, the IKE SA every ~60 s) for 66 s with a ping every 50 ms. Printed: pings lost.

strongSwan's client reconnects with keyingtries = 0 and close_action/dpd_action set to
start again, its usual road-warrior configuration. Run as root:
`python3 -m tests.perf.recovery [--runs 3] [--rekey]`.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass

from tests.lab.gateway import LAN_HOST
from tests.lab.strongswan_client import StrongSwanClient
from tests.lab.topology import Lab
from tests.lab.traffic import BackgroundPing
from tests.lab.vpnclient import VpnClient
from tests.perf.common import TimedPing, cannot_measure, reset, stop_vpnclient

RECONNECTING = (("keyingtries = 0",), ("close_action = start", "dpd_action = restart"))


@dataclass
class Result:
    client: str
    what: str
    run: int
    figure: str
    note: str = ""


def restart_figures(lab: Lab, replies_before: TimedPing, wait_back) -> tuple[str, str]:
    time.sleep(2.0)
    assert lab.gateway is not None
    lab.gateway.restart()
    back = time.time()
    wait_back()
    time.sleep(2.0)
    times = [t for t, _ in replies_before.stop()]
    after = [t for t in times if t > back]
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    gap = f"{max(gaps, default=0):.2f} s without replies"
    first = f"{after[0] - back:.2f} s from gateway back to first reply" if after else \
        "no reply after the restart"
    return gap, first


def vpnclient_restart(lab: Lab, run: int) -> list[Result]:
    client = VpnClient(lab.client_ns, lab.dir / f"vpnclient-restart-{run}")
    try:
        client.connect(lab.profile("reconnect"), lab.secret("reconnect"))
        ping = TimedPing(lab.client_ns, 0.02)

        def wait_back() -> None:
            deadline = time.monotonic() + 60
            seen_reconnecting = False
            while time.monotonic() < deadline:
                state = (client.status() or {}).get("state")
                seen_reconnecting |= state == "reconnecting"
                if state == "connected" and seen_reconnecting:
                    return
                time.sleep(0.05)

        gap, first = restart_figures(lab, ping, wait_back)
        return [Result("vpnclient", "gateway restart", run, gap),
                Result("vpnclient", "gateway restart", run, first)]
    finally:
        _stop_vpnclient(lab, client)


def strongswan_restart(lab: Lab, run: int) -> list[Result]:
    conn, child = RECONNECTING
    client = StrongSwanClient(lab.client_ns, lab.dir / f"sswan-restart-{run}", lab.pki,
                              scenario="reconnect", conn_extra=conn, child_extra=child)
    client.start()
    try:
        if client.initiate().returncode != 0:
            return [Result("strongSwan 5.9.8", "gateway restart", run, "-", "initiate failed")]
        ping = TimedPing(lab.client_ns, 0.02)

        def wait_back() -> None:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                if lab.ping(LAN_HOST, count=1, wait=0.5).ok:
                    return
                time.sleep(0.05)

        gap, first = restart_figures(lab, ping, wait_back)
        return [Result("strongSwan 5.9.8", "gateway restart", run, gap),
                Result("strongSwan 5.9.8", "gateway restart", run, first)]
    finally:
        client.terminate()
        client.stop()
        reset(lab)


def rekey_loss(lab: Lab, client_name: str) -> Result:
    duration, interval = 66.0, 0.05
    if client_name == "vpnclient":
        client = VpnClient(lab.client_ns, lab.dir / "vpnclient-rekey")
        try:
            client.connect(lab.profile("rekey", esp_proposal="aes256gcm16-x25519"),
                           lab.secret("rekey"))
            stats = BackgroundPing(lab, int(duration / interval), interval).wait()
        finally:
            _stop_vpnclient(lab, client)
    else:
        sswan = StrongSwanClient(lab.client_ns, lab.dir / "sswan-rekey", lab.pki,
                                 scenario="rekey", esp_proposals="aes256gcm16-x25519")
        sswan.start()
        try:
            sswan.initiate()
            stats = BackgroundPing(lab, int(duration / interval), interval).wait()
        finally:
            sswan.terminate()
            sswan.stop()
            reset(lab)
    return Result(client_name, "rekeys, 66 s", 1,
                  f"{stats.lost} of {stats.transmitted} pings lost")


def _stop_vpnclient(lab: Lab, client: VpnClient) -> None:
    stop_vpnclient(client)
    reset(lab)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m tests.perf.recovery")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rekey", action="store_true", help="also measure loss in rekeys")
    args = parser.parse_args(argv)
    if cannot_measure():
        return 2
    results: list[Result] = []
    with Lab() as lab:
        for i in range(1, args.runs + 1):
            results += strongswan_restart(lab, i)
            results += vpnclient_restart(lab, i)
        if args.rekey:
            results.append(rekey_loss(lab, "strongSwan 5.9.8"))
            results.append(rekey_loss(lab, "vpnclient"))
    print(f"{'client':<18} {'what':<16} {'run':>3}  figure")
    for r in results:
        print(f"{r.client:<18} {r.what:<16} {r.run:>3}  {r.figure}  {r.note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
