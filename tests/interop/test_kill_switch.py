"""The kill switch (profile `kill-switch`) and `split-tunneling.block-ipv4`/`-ipv6`:
from before the first IKE packet, through connecting, reconnecting, giving up and a crash,
traffic that would leave outside the tunnel is rejected; the tunnel itself, reconnects
and the excluded subnets still work. Only the user lifts it (`vpnclient disconnect`, or
a profile without the kill switch); until then `status` says `blocked`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

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
from tests.lab.profiles import make_profile, write_profile
from tests.lab.topology import CLIENT_ADDR, CLIENT_IF, GW_IF, Lab, PingResult, ping, python_env
from tests.lab.traffic import far_listener, probe, silenced_gateway

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
PATIENT = {"VPNCLIENT_RETRANSMIT": "timeout=1,base=1.2,tries=12"}
EXIT_UNREACHABLE = 5
PROBE_PORT = 40123
LAB_DNS = "192.0.2.53"  # the lab's resolv.conf (tests/lab/netns.py)


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


def held_status(client) -> dict:
    """`status --json` with nothing running: the held kill switch, from its record."""
    result = client.run("status", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout)


def assert_blocked(client, status: dict) -> None:
    assert status["state"] == "blocked", f"{status}\n{client.log_tail()}"
    assert status["kill_switch"] is True and status["blocked_reason"], status
    assert status["lift_with"] == "vpnclient disconnect", status


def lift(lab: Lab, client) -> None:
    result = client.run("disconnect")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "kill switch lifted" in result.stdout, result.stdout
    assert not kill_switch_tables(lab)
    assert held_status(client)["state"] == "disconnected"


def test_nothing_leaves_while_the_gateway_answers_late(clean_lab, new_client) -> None:
    """The gateway is silent for the first seconds of the connect: no probe reaches the
    far side meanwhile (a listener there counts), nor once connected; after disconnect
    it does."""
    lab = clean_lab
    addr = SCENARIOS["reconnect"].addr
    client = new_client(PATIENT)
    with far_listener(lab.gw_ns, OUTSIDE4, PROBE_PORT, str(client.dir / "far.log")) as far:
        with silenced_gateway(lab, addr):
            client.start_connect(lab.profile("reconnect", **{"kill-switch": True}),
                                 lab.secret("reconnect"))
            deadline = time.monotonic() + 15
            while not kill_switch_tables(lab):
                assert time.monotonic() < deadline and client.proc.poll() is None, \
                    client.log_tail()
                time.sleep(0.05)
            for i in range(3):
                probe(lab.client_ns, OUTSIDE4, PROBE_PORT, f"connecting-{i}")
                time.sleep(0.5)
            assert client.status()["state"] == "connecting", client.log_tail()
        client.wait_connected(timeout=40)
        probe(lab.client_ns, OUTSIDE4, PROBE_PORT, "connected")
        assert lab.ping(LAN_HOST, count=2).ok, client.log_tail()
        time.sleep(0.5)
        assert far.received() == [], far.received()

        problems = disconnect_cleanly(lab, client, "reconnect", lab.gateway.log_size())
        assert problems == [], "\n".join(problems) + "\n" + client.log_tail()
        seen = probe(lab.client_ns, OUTSIDE4, PROBE_PORT, "lifted")
        deadline = time.monotonic() + 5
        while len(far.received()) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert sorted(line.split()[0] for line in far.received()) == ["tcp", "udp"], seen


def test_giving_up_keeps_blocking_until_disconnect(clean_lab, run_client) -> None:
    """Reconnect off, the gateway gone: the client gives up (exit 5) and traffic stays
    blocked, `status` says so, and `vpnclient disconnect` lifts it."""
    lab = clean_lab
    addr = SCENARIOS["reconnect"].addr
    profile = lab.profile("reconnect", dpd=DPD, reconnect={"auto": False},
                          **{"kill-switch": True})
    client = run_client(profile, lab.secret("reconnect"), extra_env=FAST)
    with far_listener(lab.gw_ns, OUTSIDE4, PROBE_PORT, str(client.dir / "far.log")) as far:
        with silenced_gateway(lab, addr):
            code = client.wait_exit(DPD + 30)
        assert code == EXIT_UNREACHABLE, f"exit {code}\n{client.log_tail()}"
        assert "kill switch on" in client.log_text(), client.log_tail()
        assert wait_no_client_processes(lab) == []
        assert kill_switch_tables(lab)
        assert_blocked(client, held_status(client))
        probe(lab.client_ns, OUTSIDE4, PROBE_PORT, "given-up")
        time.sleep(0.5)
        assert far.received() == [], far.received()
        assert rejected(lab.ping(OUTSIDE4, count=1))

        lift(lab, client)
        probe(lab.client_ns, OUTSIDE4, PROBE_PORT, "lifted")
        deadline = time.monotonic() + 5
        while not far.received() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert far.received(), "the probe did not get through after the lift"
    assert lab.leftovers() == [], client.log_tail()
    assert runtime_leftovers(client) == []


@contextmanager
def lab_dns(lab: Lab, log: Path, **names: str) -> Iterator[Path]:
    """The DNS server the lab's resolv.conf names (192.0.2.53), on the gateway's side."""
    lab.gw_ns.ip("addr", "add", f"{LAB_DNS}/32", "dev", GW_IF)
    proc = lab.gw_ns.popen([sys.executable, "-m", "tests.lab.dns_server", LAB_DNS, str(log),
                            *(f"{n}={a}" for n, a in names.items())],
                           env=python_env(), stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        yield log
    finally:
        proc.kill()
        proc.wait(5)
        lab.gw_ns.ip("addr", "del", f"{LAB_DNS}/32", "dev", GW_IF, check=False)


def queries(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def test_a_gateway_name_resolves_while_dns_is_blocked(clean_lab, new_client) -> None:
    """A kill switch held (here: a crashed run's) rejects every DNS query but ours:
    `getent` gets no answer and the server never sees it, while the engine resolves the
    gateway's name over its marked socket and connects."""
    lab = clean_lab
    name = "vpn.lab.example"
    crashed = crash_with_kill_switch(lab, new_client())
    lab.gateway.terminate_all()
    with lab_dns(lab, crashed.dir / "dns.log", **{name: SCENARIOS["reconnect"].addr}) as log:
        leak = lab.client_ns.run(["getent", "ahostsv4", name], check=False, timeout=30)
        assert leak.returncode != 0 and queries(log) == [], (leak.stdout, queries(log))

        profile = make_profile(lab.pki, "reconnect")
        profile["remote"]["addr"] = name
        profile["kill-switch"] = True
        path = write_profile(crashed.dir / "named.vpnprofile", profile)
        client = new_client({"VPNCLIENT_RUNTIME_DIR": str(crashed.runtime_dir)})
        client.connect(path, lab.secret("reconnect"), timeout=30)
        assert queries(log) and all(q.startswith(CLIENT_ADDR) for q in queries(log))
        assert lab.ping(LAN_HOST, count=2).ok, client.log_tail()
        assert rejected(lab.ping(OUTSIDE4, count=1)), client.log_tail()
        proc, code = client.disconnect()
        assert proc.returncode == 0 and code == EXIT_OK, client.log_tail()
        assert not kill_switch_tables(lab)
        seen = len(queries(log))
        found = lab.client_ns.run(["getent", "ahostsv4", name], check=False, timeout=30)
        assert found.returncode == 0 and len(queries(log)) > seen, found  # the server works
    assert lab.leftovers() == [], client.log_tail()


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


def test_sigkill_keeps_blocking_through_the_next_start(clean_lab, new_client) -> None:
    """After SIGKILL the next run finds the kill switch held (status: blocked), connects
    under it, and only the user's disconnect lifts it."""
    lab = clean_lab
    crashed = crash_with_kill_switch(lab, new_client())
    assert_blocked(crashed, held_status(crashed))
    lab.gateway.terminate_all()
    assert lab.wait_no_sas("eap-mschapv2")

    client = new_client({"VPNCLIENT_RUNTIME_DIR": str(crashed.runtime_dir)})
    client.connect(lab.profile("eap-mschapv2", **{"kill-switch": True}),
                   lab.secret("eap-mschapv2"))
    assert lab.ping(LAN_HOST, count=1).ok, client.log_tail()
    assert rejected(lab.ping(OUTSIDE4, count=1)), client.log_tail()
    proc, code = client.disconnect()
    assert proc.returncode == 0 and code == EXIT_OK, client.log_tail()
    assert not kill_switch_tables(lab), client.log_tail()
    assert lab.ping(OUTSIDE4, count=1).ok
    assert lab.leftovers() == [], client.log_tail()


def test_a_profile_without_kill_switch_lifts_a_held_one(clean_lab, new_client) -> None:
    lab = clean_lab
    crashed = crash_with_kill_switch(lab, new_client())
    lab.gateway.terminate_all()
    assert lab.wait_no_sas("eap-mschapv2")

    # Turning the kill switch off in the profile is one of the ways to lift it.
    log_offset = lab.gateway.log_size()
    client = new_client({"VPNCLIENT_RUNTIME_DIR": str(crashed.runtime_dir)})
    client.connect(lab.profile("eap-mschapv2"), lab.secret("eap-mschapv2"))
    assert not kill_switch_tables(lab), client.log_tail()
    assert lab.ping(OUTSIDE4, count=1).ok, client.log_tail()
    assert lab.ping(LAN_HOST, count=1).ok, client.log_tail()
    problems = disconnect_cleanly(lab, client, "eap-mschapv2", log_offset)
    assert problems == [], "\n".join(problems) + "\n" + client.log_tail()


def test_a_rejected_password_keeps_blocking_until_disconnect(clean_lab, new_client) -> None:
    """A failed connect leaves no route or DNS change, but the kill switch holds."""
    lab = clean_lab
    client = new_client()
    client.start_connect(lab.profile("eap-mschapv2", **{"kill-switch": True}), "wrong-password")
    code = client.wait_exit(30)
    assert code == EXIT_AUTH, f"exit {code}\n{client.log_tail()}"
    assert kill_switch_tables(lab)
    assert [p for p in lab.leftovers() if "nft" not in p] == [], client.log_tail()
    assert_blocked(client, held_status(client))
    assert rejected(lab.ping(OUTSIDE4, count=1))
    lift(lab, client)
    assert lab.ping(OUTSIDE4, count=1).ok
    assert lab.leftovers() == [], client.log_tail()
    assert runtime_leftovers(client) == []


def test_nft_failure_fails_the_connect(clean_lab, new_client):
    """nft refuses: no connection without the kill switch the user asked for (the
    gateway never hears from us), and nothing of the half-built tunnel left."""
    lab = clean_lab
    fake = lab.dir / "broken-nft"
    fake.mkdir(exist_ok=True)
    (fake / "nft").write_text("#!/bin/sh\necho 'Error: Could not process rule: "
                              "Operation not supported' >&2\nexit 1\n")
    (fake / "nft").chmod(0o755)
    client = new_client({"PATH": f"{fake}:{os.environ['PATH']}"})
    log_offset = lab.gateway.log_size()
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
    assert "IKE_SA_INIT" not in lab.gateway.log_since(log_offset)


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

    lift(lab, crashed)
    assert lab.ping(OUTSIDE4, count=1).ok
    # Nothing more to undo: an ordinary "not connected" from now on.
    again = crashed.run("disconnect")
    assert again.returncode == 1 and "not connected" in again.stderr
    lab.gateway.terminate_all()
    assert lab.wait_no_sas("eap-mschapv2")
