"""The kill switch (profile `kill-switch`) and `split-tunneling.block-ipv4`/`-ipv6`:
while the tunnel is connected or reconnecting, traffic that would leave outside it is
rejected; the tunnel itself, reconnects and the excluded subnets still work; nothing of
it remains after a disconnect, a failed connect, or (at the next start) a crash."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from tests.interop.test_roaming import (  # noqa: F401 - fixtures
    disconnect,
    ike_spis,
    roam_client,
    roam_lab,
)
from tests.lab import roam_lab as roaming
from tests.lab.checks import disconnect_cleanly, runtime_leftovers, wait_no_client_processes
from tests.lab.gateway import LAN6_HOST, LAN_HOST, LAN_TS, OFFLINK_ADDR, SCENARIOS
from tests.lab.topology import CLIENT_IF, GW_IF, Lab, PingResult, ping
from tests.lab.traffic import silenced_gateway

pytestmark = pytest.mark.interop

EXIT_OK, EXIT_FAILURE, EXIT_AUTH = 0, 1, 3
# Outside the tunnel: another of the gateway's outer addresses, reached in clear on the
# client's uplink (the tunnel's IKE/ESP go to a different one).
OUTSIDE4 = SCENARIOS["eap-md5"].addr
# An IPv6 uplink for the test's duration: the lab's own link is IPv4 only.
CLIENT6, OUTSIDE6 = "2001:db8:100::100", "2001:db8:100::1"
SPLIT = {"subnets": [LAN_TS], "excluded": ["198.51.100.0/24"]}
DPD = 3
FAST = {"VPNCLIENT_RETRANSMIT": "timeout=0.5,base=1.5,tries=3"}


def rejected(result: PingResult) -> bool:
    """Not a reply, and rejected on the spot (not dropped somewhere on the way)."""
    return not result.ok and ("filtered" in result.output or "not permitted" in result.output)


def kill_switch_tables(lab: Lab | roaming.RoamLab) -> bool:
    return "vpnclient" in lab.client_ns.run(["nft", "list", "tables"]).stdout


@contextmanager
def ipv6_uplink(lab: Lab) -> Iterator[None]:
    lab.client_ns.ip("-6", "addr", "add", f"{CLIENT6}/64", "dev", CLIENT_IF, "nodad")
    lab.gw_ns.ip("-6", "addr", "add", f"{OUTSIDE6}/64", "dev", GW_IF, "nodad")
    try:
        yield
    finally:
        lab.client_ns.ip("-6", "addr", "del", f"{CLIENT6}/64", "dev", CLIENT_IF, check=False)
        lab.gw_ns.ip("-6", "addr", "del", f"{OUTSIDE6}/64", "dev", GW_IF, check=False)


def not_uplink6(problems: list[str]) -> list[str]:
    """The leftovers but the test's own IPv6 uplink (removed after the check)."""
    return [p for p in problems if CLIENT6.rsplit("::", 1)[0] + "::" not in p]


def wait_state(client, wanted: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while (status := client.status()) is None or status.get("state") != wanted:
        assert time.monotonic() < deadline, f"never {wanted!r} (last {status})\n" \
            f"{client.log_tail()}"
        assert client.proc.poll() is None, client.log_tail()
        time.sleep(0.1)


def test_kill_switch_with_a_split_tunnel(clean_lab, run_client) -> None:
    lab = clean_lab
    with ipv6_uplink(lab):
        assert lab.ping(OUTSIDE4, count=1).ok and lab.ping(OUTSIDE6, count=1).ok
        log_offset = lab.gateway.log_size()
        profile = lab.profile("eap-mschapv2", **{"kill-switch": True,
                                                   "split-tunneling": SPLIT})
        client = run_client(profile, lab.secret("eap-mschapv2"))
        assert kill_switch_tables(lab), client.log_tail()
        assert lab.ping(LAN_HOST, count=3).received == 3, client.log_tail()
        # Outside the tunnel: rejected, IPv4 and IPv6 alike; the excluded subnet is not.
        for dest in (OUTSIDE4, OUTSIDE6):
            result = lab.ping(dest, count=1)
            assert rejected(result), f"{dest}: {result.output}\n{client.log_tail()}"
        assert lab.ping(OFFLINK_ADDR, count=1).ok, client.log_tail()

        problems = not_uplink6(disconnect_cleanly(lab, client, "eap-mschapv2", log_offset))
        assert lab.ping(OUTSIDE4, count=1).ok and lab.ping(OUTSIDE6, count=1).ok
    assert problems == [], "\n".join(problems) + "\n" + client.log_tail()
    assert lab.leftovers() == []


def test_kill_switch_holds_while_reconnecting(clean_lab, run_client) -> None:
    lab = clean_lab
    addr = SCENARIOS["reconnect"].addr
    profile = lab.profile("reconnect", dpd=DPD, **{"kill-switch": True, "split-tunneling": SPLIT})
    client = run_client(profile, lab.secret("reconnect"), extra_env=FAST)
    assert rejected(lab.ping(OUTSIDE4, count=1)), client.log_tail()
    with silenced_gateway(lab, addr):
        wait_state(client, "reconnecting", 30)
        assert kill_switch_tables(lab), client.log_tail()
        for _ in range(3):  # the reconnect attempts fail meanwhile; nothing gets out
            result = lab.ping(OUTSIDE4, count=1)
            assert rejected(result), f"{result.output}\n{client.log_tail()}"
            time.sleep(1.0)
        assert client.status()["state"] == "reconnecting", client.log_tail()
    # The reconnect's IKE (marked) passed the kill switch; ESP flows again.
    wait_state(client, "connected", 60)
    assert lab.ping(LAN_HOST, count=3).ok, client.log_tail()
    assert rejected(lab.ping(OUTSIDE4, count=1)), client.log_tail()

    problems = disconnect_cleanly(lab, client, "reconnect", lab.gateway.log_size())
    assert problems == [], "\n".join(problems) + "\n" + client.log_tail()
    assert lab.ping(OUTSIDE4, count=1).ok


def crash_with_kill_switch(lab, client):
    """Connect `client` with the kill switch on, SIGKILL it; the crashed run's kill
    switch still blocks (fail closed)."""
    client.connect(lab.profile("eap-mschapv2", **{"kill-switch": True}),
                   lab.secret("eap-mschapv2"))
    client.send_signal(signal.SIGKILL)
    assert client.wait_exit(5) == -signal.SIGKILL
    assert wait_no_client_processes(lab) == []
    assert kill_switch_tables(lab)
    assert rejected(lab.ping(OUTSIDE4, count=1))
    return client


def test_sigkill_keeps_blocking_until_the_next_start(clean_lab, new_client) -> None:
    lab = clean_lab
    crashed = crash_with_kill_switch(lab, new_client())
    lab.gateway.terminate_all()
    assert lab.wait_no_sas("eap-mschapv2")

    # The next start, without a kill switch, undoes it first.
    log_offset = lab.gateway.log_size()
    client = new_client({"VPNCLIENT_RUNTIME_DIR": str(crashed.runtime_dir)})
    client.connect(lab.profile("eap-mschapv2"), lab.secret("eap-mschapv2"))
    assert not kill_switch_tables(lab), client.log_tail()
    assert lab.ping(OUTSIDE4, count=1).ok, client.log_tail()
    assert lab.ping(LAN_HOST, count=1).ok, client.log_tail()
    problems = disconnect_cleanly(lab, client, "eap-mschapv2", log_offset)
    assert problems == [], "\n".join(problems) + "\n" + client.log_tail()


def test_failed_connect_leaves_no_kill_switch(clean_lab, new_client) -> None:
    lab = clean_lab
    client = new_client()
    client.start_connect(lab.profile("eap-mschapv2", **{"kill-switch": True}), "wrong-password")
    code = client.wait_exit(30)
    assert code == EXIT_AUTH, f"exit {code}\n{client.log_tail()}"
    assert not kill_switch_tables(lab)
    assert lab.leftovers() == [], client.log_tail()
    assert runtime_leftovers(client) == []


def test_nft_failure_fails_the_connect(clean_lab, new_client):
    """nft refuses: no connection without the kill switch the user asked for, and
    nothing of the half-built tunnel left."""
    lab = clean_lab
    fake = lab.dir / "broken-nft"
    fake.mkdir(exist_ok=True)
    (fake / "nft").write_text("#!/bin/sh\necho 'Error: Could not process rule: "
                              "Operation not supported' >&2\nexit 1\n")
    (fake / "nft").chmod(0o755)
    client = new_client({"PATH": f"{fake}:{os.environ['PATH']}"})
    client.start_connect(lab.profile("eap-mschapv2", **{"kill-switch": True}),
                         lab.secret("eap-mschapv2"))
    code = client.wait_exit(30)
    assert code == EXIT_FAILURE, f"exit {code}\n{client.log_tail()}"
    assert "kill switch: cannot install the firewall" in client.log_text(), client.log_tail()
    assert "connected:" not in client.log_text(), client.log_tail()
    assert wait_no_client_processes(lab) == []
    assert lab.leftovers() == [], client.log_tail()
    assert runtime_leftovers(client) == []
    assert lab.wait_no_sas("eap-mschapv2"), lab.gateway.list_sas()


def test_block_ipv6_blocks_only_ipv6_outside_the_tunnel(clean_lab, run_client) -> None:
    lab = clean_lab
    with ipv6_uplink(lab):
        log_offset = lab.gateway.log_size()
        client = run_client(lab.profile("ipv6", **{"split-tunneling": {"block-ipv6": True}}),
                            lab.secret("ipv6"))
        assert lab.ping(LAN6_HOST, count=2).ok, client.log_tail()  # IPv6 in the tunnel
        assert lab.ping(LAN_HOST, count=2).ok, client.log_tail()
        result = lab.ping(OUTSIDE6, count=1)
        assert rejected(result), f"{result.output}\n{client.log_tail()}"
        assert lab.ping(OUTSIDE4, count=2).ok, client.log_tail()  # IPv4 is not blocked

        problems = not_uplink6(disconnect_cleanly(lab, client, "ipv6", log_offset))
        assert lab.ping(OUTSIDE6, count=1).ok
    assert problems == [], "\n".join(problems) + "\n" + client.log_tail()
    assert lab.leftovers() == []


def test_kill_switch_lets_keepalives_and_mobike_through(roam_lab, roam_client) -> None:  # noqa: F811
    """Behind a NAT: the (marked) NAT keepalives reach the gateway; an uplink lost: the
    same IKE SA moves to the other (MOBIKE) while everything outside stays blocked."""
    lab = roam_lab
    lab.nat_on_wlan(True)
    client = roam_client(lab.profile(**{"kill-switch": True, "nat-keepalive": 10}))
    first = lab.client_sa()
    assert first is not None and client.status()["nat_detected"], client.log_tail()
    before = lab.count_keepalives()
    time.sleep(12.0)
    assert lab.count_keepalives() > before, client.log_tail()
    wlan_router, wwan_router = roaming.UPLINKS["wlan0"][1], roaming.UPLINKS["wwan0"][1]
    assert rejected(ping(lab.client_ns, wlan_router, count=1)), client.log_tail()

    lab.uplink_down("wlan0")
    moved = lab.wait_client_addr(roaming.UPLINKS["wwan0"][0])
    assert moved is not None and ike_spis(moved) == ike_spis(first), client.log_tail()
    assert lab.ping().ok, client.log_tail()
    assert rejected(ping(lab.client_ns, wwan_router, count=1)), client.log_tail()
    assert kill_switch_tables(lab)

    problems = disconnect(lab, client)
    assert problems == [], "\n".join(problems) + "\n" + client.log_tail()
    assert ping(lab.client_ns, wlan_router, count=1).ok


def test_disconnect_after_a_crash_gives_the_network_back(clean_lab, new_client) -> None:
    """After SIGKILL nothing runs to answer `disconnect`; it restores what the crashed
    run left (the kill switch, routes, DNS) instead of only saying "not connected"."""
    lab = clean_lab
    crashed = crash_with_kill_switch(lab, new_client())

    result = crashed.run("disconnect")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "restored" in result.stdout
    assert not kill_switch_tables(lab)
    assert lab.ping(OUTSIDE4, count=1).ok
    # Nothing more to undo: an ordinary "not connected" from now on.
    again = crashed.run("disconnect")
    assert again.returncode == 1 and "not connected" in again.stderr
    lab.gateway.terminate_all()
    assert lab.wait_no_sas("eap-mschapv2")
