"""Rekeying against strongSwan while a ping runs through the tunnel every 50 ms: the
gateway rekeys (CHILD_SA ~20 s with PFS, IKE SA ~60 s), then the client does (the
profile's shorter lifetimes), then the gateway's AUTH_LIFETIME makes the client
reauthenticate. Every rekey must happen, and (almost) no packet may be lost.
"""

from __future__ import annotations

import re

import pytest

from tests.lab.checks import disconnect_cleanly
from tests.lab.traffic import BackgroundPing

pytestmark = pytest.mark.interop

INTERVAL = 0.05
DURATION = 66.0  # three CHILD_SA rekeys and one IKE SA rekey at 20 s / 60 s lifetimes
MAX_LOSS = 0.001  # of the pings sent


def child_sa(sa: dict) -> dict:
    """The one CHILD_SA in use; strongSwan keeps a rekeyed one a few seconds longer."""
    (child,) = [c for c in sa["child-sas"].values() if c.get("state") == "INSTALLED"]
    return child


def rekeyed_log(text: str) -> tuple[int, int]:
    """(CHILD_SA rekeys, IKE SA rekeys) the client logged."""
    return (len(re.findall(r"CHILD_SA \S+ \S+ rekeyed|the gateway rekeyed CHILD_SA", text)),
            text.count("IKE_SA rekeyed"))


def run_with_ping(lab, client, scenario: str):
    (before,) = lab.gateway.sas_for(scenario)
    ping = BackgroundPing(lab, count=int(DURATION / INTERVAL), interval=INTERVAL)
    stats = ping.wait()
    print(f"\n{scenario}: {stats.summary()}")
    (after,) = lab.gateway.sas_for(scenario)  # exactly one IKE SA left, nothing redundant
    return before, after, stats


def test_gateway_rekeys_child_and_ike_sa(clean_lab, run_client) -> None:
    lab = clean_lab
    log_offset = lab.gateway.log_size()
    profile = lab.profile("rekey", esp_proposal="aes256gcm16-x25519")
    client = run_client(profile, lab.secret("rekey"))
    before, after, stats = run_with_ping(lab, client, "rekey")
    gw_log = lab.gateway.log_since(log_offset)

    # strongSwan started every rekey; the client answered each one.
    assert gw_log.count("generating CREATE_CHILD_SA request") >= 4, gw_log
    assert re.search(r"IKE_SA rekey\[\d+\] rekeyed between", gw_log), gw_log
    children, ikes = rekeyed_log(client.log_text())
    assert children >= 3 and ikes >= 1, client.log_tail()
    assert client.log_text().count("received CREATE_CHILD_SA request") >= 4
    # New SAs at the gateway: other IKE SA, other CHILD_SA, PFS negotiated.
    assert after["uniqueid"] != before["uniqueid"], lab.gateway.list_sas()
    assert child_sa(after)["spi-in"] != child_sa(before)["spi-in"]
    assert child_sa(after)["dh-group"] == "CURVE_25519", child_sa(after)
    assert after["state"] == "ESTABLISHED"
    assert stats.transmitted > 0 and stats.lost <= MAX_LOSS * stats.transmitted, \
        f"{stats.summary()}\n{client.log_tail()}"
    status = client.status()
    assert status["state"] == "connected" and status["rekeys"] >= 4, status

    problems = disconnect_cleanly(lab, client, "rekey", log_offset)
    assert problems == [], "\n".join(problems) + "\n" + client.log_tail()


def test_client_rekeys_child_and_ike_sa(clean_lab, run_client) -> None:
    lab = clean_lab
    log_offset = lab.gateway.log_size()
    # The gateway's lifetimes are strongSwan's defaults (1 h / 4 h): every rekey is ours.
    profile = lab.profile("eap-mschapv2", lifetimes={"child": 20, "ike": 60})
    client = run_client(profile, lab.secret("eap-mschapv2"))
    before, after, stats = run_with_ping(lab, client, "eap-mschapv2")
    gw_log = lab.gateway.log_since(log_offset)

    assert "generating CREATE_CHILD_SA request" not in gw_log, gw_log
    assert gw_log.count("parsed CREATE_CHILD_SA request") >= 4, gw_log
    children, ikes = rekeyed_log(client.log_text())
    assert children >= 3 and ikes >= 1, client.log_tail()
    assert after["uniqueid"] != before["uniqueid"], lab.gateway.list_sas()
    assert child_sa(after)["spi-in"] != child_sa(before)["spi-in"]
    assert after["state"] == "ESTABLISHED"
    assert stats.transmitted > 0 and stats.lost <= MAX_LOSS * stats.transmitted, \
        f"{stats.summary()}\n{client.log_tail()}"
    status = client.status()
    assert status["state"] == "connected" and status["rekeys"] >= 4, status

    problems = disconnect_cleanly(lab, client, "eap-mschapv2", log_offset)
    assert problems == [], "\n".join(problems) + "\n" + client.log_tail()


def test_auth_lifetime_reauthenticates_make_before_break(clean_lab, run_client) -> None:
    lab = clean_lab
    log_offset = lab.gateway.log_size()
    client = run_client(lab.profile("reauth"), lab.secret("reauth"))
    first = client.status()
    (before,) = lab.gateway.sas_for("reauth")
    ping = BackgroundPing(lab, count=int(40 / INTERVAL), interval=INTERVAL)
    stats = ping.wait()
    print(f"\nreauth: {stats.summary()}")

    assert "reauthenticated" in client.log_text(), client.log_tail()
    (after,) = lab.gateway.sas_for("reauth")  # the old IKE SA is gone, the new one alone
    assert after["uniqueid"] != before["uniqueid"], lab.gateway.list_sas()
    status = client.status()
    assert status["state"] == "connected" and status["virtual_ips"] == first["virtual_ips"]
    # Make-before-break: the ping hardly notices.
    assert stats.lost <= 0.01 * stats.transmitted, f"{stats.summary()}\n{client.log_tail()}"

    problems = disconnect_cleanly(lab, client, "reauth", log_offset)
    assert problems == [], "\n".join(problems) + "\n" + client.log_tail()
