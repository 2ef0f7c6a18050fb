"""Conditions from issue 3 that users hit on bad networks: a lossy uplink while
connecting, and rekeys while the tunnel is busy with a bulk TCP transfer."""

from __future__ import annotations

import pytest

from tests.interop.test_rekey import MAX_LOSS, child_sa
from tests.lab.checks import disconnect_cleanly
from tests.lab.gateway import LAN_HOST
from tests.lab.iperf import iperf3_server, parse_result
from tests.lab.traffic import BackgroundPing

pytestmark = pytest.mark.interop

LOSS_RULE = ["OUTPUT", "-o", "eth0", "-m", "statistic", "--mode", "random",
             "--probability", "0.3", "-j", "DROP"]
# The connect's first packet is always lost too: a connect is only a handful of packets,
# and 30 % random loss alone dropped none of them in about one run of ten (0.7^6).
FIRST_LOST = ["OUTPUT", "-o", "eth0", "-m", "statistic", "--mode", "nth",
              "--every", "1000000", "--packet", "0", "-j", "DROP"]
# Retransmission fast enough for a test, with room for many lost requests: 0.5 s
# growing by 1.5, 8 retransmissions per request (~77 s budget for each one).
LOSSY_RETRANSMIT = {"VPNCLIENT_RETRANSMIT": "timeout=0.5,base=1.5,tries=8"}


def test_connects_through_30_percent_loss(clean_lab, new_client) -> None:
    """30 % of the client's outgoing packets dropped at random during the connect."""
    lab = clean_lab
    log_offset = lab.gateway.log_size()
    lab.client_ns.run(["iptables", "-A", *FIRST_LOST], check=True)
    lab.client_ns.run(["iptables", "-A", *LOSS_RULE], check=True)
    try:
        client = new_client(LOSSY_RETRANSMIT)
        client.start_connect(lab.profile("eap-mschapv2"), lab.secret("eap-mschapv2"))
        client.wait_connected(timeout=240)
        dropped = lab.client_ns.run(["iptables", "-L", "OUTPUT", "-v", "-n", "-x"]).stdout
    finally:
        lab.client_ns.run(["iptables", "-D", *LOSS_RULE], check=True)
        lab.client_ns.run(["iptables", "-D", *FIRST_LOST], check=True)
    # The rules really dropped packets of this connect, so retransmissions carried it.
    counts = [int(line.split()[0]) for line in dropped.splitlines()
              if "statistic" in line]
    assert len(counts) == 2 and counts[0] == 1, dropped
    assert "retransmit" in client.log_text(), client.log_tail()
    assert lab.ping(count=3).ok, client.log_tail()
    assert disconnect_cleanly(lab, client, "eap-mschapv2", log_offset) == []


DURATION = 90


def test_gateway_rekeys_under_tcp_load(clean_lab, run_client) -> None:
    """CHILD_SA (~20 s) and IKE SA (~60 s) rekeys by the gateway during a 90 s iperf3
    upload, with a ping alongside: every rekey happens, the TCP stream never stops for
    a whole second, and the ping loses (almost) nothing."""
    lab = clean_lab
    log_offset = lab.gateway.log_size()
    client = run_client(lab.profile("rekey", esp_proposal="aes256gcm16-x25519"),
                        lab.secret("rekey"))
    (before,) = lab.gateway.sas_for("rekey")
    with iperf3_server(lab.gw_ns, LAN_HOST, once=True):
        ping = BackgroundPing(lab, count=int(DURATION / 0.1), interval=0.1)
        # A bounded rate keeps the ping's queueing delay sane while the tunnel is busy.
        iperf = lab.client_ns.run(
            ["iperf3", "-c", LAN_HOST, "-t", str(DURATION), "-b", "100M", "-J",
             "--connect-timeout", "5000"],
            check=False, timeout=DURATION + 60)
        stats = ping.wait()
    assert iperf.returncode == 0, iperf.stdout[-2000:] + iperf.stderr
    intervals = parse_result(iperf.stdout)["intervals"]
    stalled = [round(i["sum"]["start"]) for i in intervals if i["sum"]["bytes"] == 0]
    print(f"\niperf3 intervals: {len(intervals)}, stalled seconds: {stalled}; "
          f"ping: {stats.summary()}")
    assert len(intervals) >= DURATION - 1 and stalled == [], stalled
    assert stats.transmitted > 0 and stats.lost <= max(1, MAX_LOSS * stats.transmitted), \
        stats.summary()

    gw_log = lab.gateway.log_since(log_offset)
    (after,) = lab.gateway.sas_for("rekey")
    assert gw_log.count("generating CREATE_CHILD_SA request") >= 5, gw_log[-3000:]
    assert after["uniqueid"] != before["uniqueid"]  # the IKE SA was rekeyed too
    assert child_sa(after)["spi-in"] != child_sa(before)["spi-in"]
    assert disconnect_cleanly(lab, client, "rekey", log_offset) == []
