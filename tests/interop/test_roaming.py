"""Roaming against strongSwan (tests/lab/roam_lab.py): a client with two uplinks, wlan0
preferred, wwan0 as fallback, through a router to the gateway.

With MOBIKE the IKE SA follows the network (UPDATE_SA_ADDRESSES): strongSwan's
`swanctl --list-sas` shows the new client address with the same SPIs, while a ping every
20 ms runs through the tunnel; the ping gaps are printed, not asserted. Both uplinks gone
for 10 s: the same SA resumes. Behind a NAT that rewrites ports, keepalives reach the
gateway while (and only while) there is a NAT, and a NAT that rebinds us to another port
is followed. Without MOBIKE a new IKE SA is built on the new path, the TUN device stays.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.lab.checks import runtime_leftovers
from tests.lab.netns import kill_all
from tests.lab.roam_lab import ROUTER_GW_ADDR, SCENARIO, UPLINKS, RoamLab
from tests.lab.topology import lab_unavailable
from tests.lab.traffic import BackgroundPing, PingStats
from tests.lab.vpnclient import VpnClient

pytestmark = pytest.mark.interop

WLAN, WWAN = UPLINKS["wlan0"][0], UPLINKS["wwan0"][0]
PING_INTERVAL = 0.02
# How long the client may take to complete a move on its side: the gateway's response to
# UPDATE_SA_ADDRESSES can be lost on a path that just came up (the router's ARP entry for
# an address that was gone may still be failing), and then the first retransmission,
# 4 s later, carries it.
MOVE_DONE = 15.0


@pytest.fixture(scope="module")
def roam_lab() -> Iterator[RoamLab]:
    reason = lab_unavailable()
    if reason:
        pytest.skip(reason)
    with RoamLab() as lab:
        yield lab


@pytest.fixture
def roam_client(roam_lab: RoamLab, request: pytest.FixtureRequest
                ) -> Iterator[Callable[..., VpnClient]]:
    made: list[VpnClient] = []

    def connect(profile: Path, extra_env: dict[str, str] | None = None) -> VpnClient:
        workdir = Path(roam_lab.dir, "clients", f"{request.node.name}-{len(made)}")
        client = VpnClient(roam_lab.client_ns, workdir, extra_env)
        made.append(client)
        client.connect(profile, roam_lab.secret())
        return client

    yield connect
    for client in made:
        client.kill()
    kill_all(roam_lab.client_ns.name)
    assert roam_lab.gateway is not None
    roam_lab.gateway.terminate_all()
    roam_lab.reset_client()


def ike_spis(sa: dict | None) -> tuple[str, str, str] | None:
    if sa is None:
        return None
    return sa.get("uniqueid", ""), sa.get("initiator-spi", ""), sa.get("responder-spi", "")


def wait_for(check: Callable[[], object], timeout: float) -> object:
    deadline = time.monotonic() + timeout
    while not (result := check()) and time.monotonic() < deadline:
        time.sleep(0.1)
    return result


def roamed_to(client: VpnClient, addr: str, roams: int) -> Callable[[], dict | None]:
    """A check: the client says it is connected from `addr` after `roams` moves."""
    def check() -> dict | None:
        status = client.status() or {}
        done = status.get("state") == "connected" and status.get("local_address") == addr
        return status if done and status.get("roams", 0) >= roams else None
    return check


def gap_after(stats: PingStats, t: float, window: float = 2.0) -> float:
    """The longest stretch without replies that overlaps [t, t + window]."""
    times = sorted(r for _, r in stats.replies)
    gaps = [b - a for a, b in zip(times, times[1:], strict=False) if b > t and a < t + window]
    return max(gaps, default=float("inf"))


def finish(ping: BackgroundPing) -> PingStats:
    """Stop the ping now (SIGINT: it still prints its summary) and read it."""
    ping.proc.send_signal(signal.SIGINT)
    return ping.wait()


def disconnect(lab: RoamLab, client: VpnClient, abandoned: str | None = None) -> list[str]:
    """Disconnect; what went wrong. `abandoned`: the uniqueid of an IKE SA the client
    gave up without a word (the lab's gateway keeps it until its own DPD)."""
    problems = []
    proc, code = client.disconnect()
    if proc.returncode != 0 or code != 0:
        problems.append(f"disconnect exited {proc.returncode}, connect exited {code}")
    assert lab.gateway is not None

    def gone() -> bool:
        return all(sa.get("uniqueid") == abandoned for sa in lab.gateway.sas_for(SCENARIO))

    if not wait_for(gone, 5.0):
        problems.append(f"the gateway still lists an SA:\n{lab.gateway.list_sas()}")
    lab.reset_network()  # the test's own changes are not leftovers
    return problems + lab.leftovers() + runtime_leftovers(client)


def test_mobike_follows_the_uplinks(roam_lab, roam_client) -> None:
    lab = roam_lab
    client = roam_client(lab.profile())
    status = client.status()
    assert status["mobike"] and status["local_address"] == WLAN, status
    first = lab.client_sa()
    assert first is not None and first["remote-host"] == WLAN, lab.gateway.list_sas()
    links = lab.new_links()

    # The uplink not in use goes and comes: only our address list changes (RFC 4555).
    offset = lab.gateway.log_size()
    lab.uplink_down("wwan0")
    assert wait_for(lambda: "N(NO_ADD_ADDR)" in lab.gateway.log_since(offset), 5.0), \
        client.log_tail()
    lab.uplink_up("wwan0")
    assert wait_for(lambda: "N(ADD_4_ADDR)" in lab.gateway.log_since(offset), 5.0), \
        client.log_tail()
    assert ike_spis(lab.client_sa()) == ike_spis(first)
    assert lab.client_sa()["remote-host"] == WLAN and client.status()["roams"] == 0

    # Long enough for every wait below at its longest; finish() ends it.
    ping = BackgroundPing(lab, count=int(90 / PING_INTERVAL), interval=PING_INTERVAL)
    time.sleep(2.0)

    # wlan0 goes away: the same IKE SA moves to wwan0.
    lost_wlan = time.time()
    lab.uplink_down("wlan0")
    moved = lab.wait_client_addr(WWAN)
    assert moved is not None, f"{lab.gateway.list_sas()}\n{client.log_tail()}"
    assert ike_spis(moved) == ike_spis(first)
    assert wait_for(roamed_to(client, WWAN, 1), MOVE_DONE), client.log_tail()
    time.sleep(3.0)

    # wlan0 comes back: the tunnel returns to the preferred path.
    back_wlan = time.time()
    lab.uplink_up("wlan0")
    returned = lab.wait_client_addr(WLAN)
    assert returned is not None, f"{lab.gateway.list_sas()}\n{client.log_tail()}"
    assert ike_spis(returned) == ike_spis(first)
    assert wait_for(roamed_to(client, WLAN, 2), MOVE_DONE), client.log_tail()
    time.sleep(3.0)

    # Both uplinks gone for 10 s, then wwan0 alone: the same SA resumes.
    lab.uplink_down("wlan0")
    lab.uplink_down("wwan0")
    time.sleep(2.0)
    assert client.status()["state"] == "reconnecting", client.log_tail()
    time.sleep(8.0)
    outage_end = time.time()
    lab.uplink_up("wwan0")
    resumed = lab.wait_client_addr(WWAN)
    assert resumed is not None, f"{lab.gateway.list_sas()}\n{client.log_tail()}"
    assert ike_spis(resumed) == ike_spis(first)
    time.sleep(3.0)
    stats = finish(ping)

    print(f"\nping every {PING_INTERVAL * 1000:.0f} ms: {stats.summary()}")
    print(f"gap on wlan0 loss: {gap_after(stats, lost_wlan) * 1000:.0f} ms; "
          f"on wlan0 return: {gap_after(stats, back_wlan) * 1000:.0f} ms; "
          f"after the 10 s outage, from wwan0's return to traffic: "
          f"{(min(t for _, t in stats.replies if t > outage_end) - outage_end) * 1000:.0f} ms")
    for t in (lost_wlan, back_wlan, outage_end):  # traffic came back after each change
        assert any(r > t + 0.5 for _, r in stats.replies), stats.summary()
    assert wait_for(roamed_to(client, WWAN, 3), MOVE_DONE), \
        f"{client.status()}\n{client.log_tail()}"
    assert lab.new_links() == links  # the same TUN device all along
    assert len(lab.gateway.sas_for(SCENARIO)) == 1, lab.gateway.list_sas()
    assert lab.ping().ok, client.log_tail()
    problems = disconnect(lab, client)
    assert problems == [], "\n".join(problems) + "\n" + client.log_tail()


def test_nat_comes_and_goes_and_keepalives_follow(roam_lab, roam_client) -> None:
    lab = roam_lab
    lab.nat_on_wlan(True)
    client = roam_client(lab.profile(**{"nat-keepalive": 10}))
    first = lab.client_sa()
    assert first is not None and first["remote-host"] == ROUTER_GW_ADDR, first
    assert client.status()["nat_detected"] is True
    before = lab.count_keepalives()
    time.sleep(12.0)
    behind_nat = lab.count_keepalives() - before
    assert behind_nat >= 1, client.log_tail()

    lab.uplink_down("wlan0")  # to wwan0: no NAT
    assert lab.wait_client_addr(WWAN) is not None, client.log_tail()
    assert wait_for(lambda: client.status()["nat_detected"] is False, 5), client.status()
    before = lab.count_keepalives()
    time.sleep(12.0)
    without_nat = lab.count_keepalives() - before
    assert without_nat == 0, client.log_tail()
    assert lab.ping().ok, client.log_tail()

    lab.uplink_up("wlan0")  # behind the NAT again, on another random port
    again = lab.wait_client_addr(ROUTER_GW_ADDR)
    assert again is not None, client.log_tail()
    assert ike_spis(again) == ike_spis(first)
    assert wait_for(lambda: client.status()["nat_detected"] is True, 5), client.status()
    assert lab.ping().ok, client.log_tail()
    print(f"\nkeepalives seen by the gateway in 12 s: {behind_nat} behind the NAT, "
          f"{without_nat} without; NAT ports {first['remote-port']} then "
          f"{again['remote-port']}")
    problems = disconnect(lab, client)
    assert problems == [], "\n".join(problems) + "\n" + client.log_tail()


def test_a_nat_rebinding_is_followed(roam_lab, roam_client) -> None:
    """The NAT forgets the mapping and hands out another port: the gateway would keep
    sending to the old one; the liveness check's NAT-D shows the change and MOBIKE moves
    the SA to the new port."""
    lab = roam_lab
    lab.nat_on_wlan(True)
    client = roam_client(lab.profile(dpd=3))
    first = lab.client_sa()
    assert first is not None and first["remote-host"] == ROUTER_GW_ADDR
    lab.nat_timeout(1)  # idle mappings vanish; the next packet gets a new random port

    def rebound() -> dict | None:
        sa = lab.client_sa()
        return sa if sa and sa["remote-port"] != first["remote-port"] else None

    moved = wait_for(rebound, 20.0)
    lab.nat_timeout(None)
    assert moved is not None, f"{lab.gateway.list_sas()}\n{client.log_tail()}"
    assert ike_spis(moved) == ike_spis(first)
    assert "NAT mapping changed" in client.log_text(), client.log_tail()
    # Once the NAT keeps its mapping again, the tunnel works both ways.
    assert wait_for(lambda: lab.ping(count=2).ok, 20.0), client.log_tail()
    problems = disconnect(lab, client)
    assert problems == [], "\n".join(problems) + "\n" + client.log_tail()


def test_without_mobike_a_new_sa_is_built_on_the_new_path(roam_lab, roam_client) -> None:
    lab = roam_lab
    client = roam_client(lab.profile(mobike=False))
    assert client.status()["mobike"] is False
    first = lab.client_sa()
    links = lab.new_links()
    ping = BackgroundPing(lab, count=int(8 / PING_INTERVAL), interval=PING_INTERVAL)
    time.sleep(2.0)
    lost = time.time()
    lab.uplink_down("wlan0")
    rebuilt = lab.wait_client_addr(WWAN)
    assert rebuilt is not None, f"{lab.gateway.list_sas()}\n{client.log_tail()}"
    assert ike_spis(rebuilt) != ike_spis(first)  # a new IKE SA, not a moved one
    stats = ping.wait()
    print(f"\nwithout MOBIKE: {stats.summary()}; gap on wlan0 loss "
          f"{gap_after(stats, lost) * 1000:.0f} ms")
    assert any(r > lost + 0.5 for _, r in stats.replies), stats.summary()
    assert wait_for(lambda: len(lab.gateway.sas_for(SCENARIO)) == 1, 5.0), \
        lab.gateway.list_sas()  # the old one was deleted
    status = wait_for(roamed_to(client, WWAN, 1), MOVE_DONE)
    assert status and status["roams"] == 1, f"{client.status()}\n{client.log_tail()}"
    assert lab.new_links() == links  # TUN, routes and DNS stayed
    problems = disconnect(lab, client)
    assert problems == [], "\n".join(problems) + "\n" + client.log_tail()


def test_no_path_beyond_the_grace_period_reconnects(roam_lab, roam_client) -> None:
    lab = roam_lab
    client = roam_client(lab.profile(), extra_env={"VPNCLIENT_ROAM_GRACE": "3"})
    first = lab.client_sa()
    links = lab.new_links()
    lab.uplink_down("wlan0")
    lab.uplink_down("wwan0")
    assert wait_for(lambda: "reconnecting" in client.log_text(), 15.0), client.log_tail()
    assert "no network path to the gateway for 3 s" in client.log_text()
    time.sleep(2.0)  # failed attempts meanwhile
    lab.uplink_up("wwan0")
    assert wait_for(lambda: client.status()["state"] == "connected", 20.0), client.log_tail()
    again = lab.client_sa()
    assert again is not None and again["remote-host"] == WWAN
    assert ike_spis(again) != ike_spis(first)  # from scratch
    assert lab.new_links() == links
    assert wait_for(lambda: lab.ping(count=2).ok, 10.0), client.log_tail()
    problems = disconnect(lab, client, abandoned=first["uniqueid"])
    assert problems == [], "\n".join(problems) + "\n" + client.log_tail()
