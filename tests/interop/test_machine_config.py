"""While connected the machine is configured for the tunnel; afterwards it is as before.

DNS from the gateway in resolv.conf, routes through the TUN device, and a full tunnel
that takes everything except the client's own (fwmark-marked) IKE/ESP packets.
"""

from __future__ import annotations

import re
import time

import pytest

from tests.lab.checks import check_status, disconnect_cleanly
from tests.lab.gateway import LAN6_HOST, LAN_HOST, LAN_TS, OFFLINK_ADDR, POOL_DNS, SCENARIOS
from tests.lab.profiles import gateway_addr
from tests.lab.topology import CLIENT_IF

pytestmark = pytest.mark.interop

# client/netconf/routes.py DEFAULT_FWMARK: what the client's own sockets carry.
CLIENT_FWMARK = 0x5650
UPLINK_GATEWAY = SCENARIOS["eap-mschapv2"].addr  # the client namespace's default route
OUTSIDE_HOST = "203.0.113.1"  # not on any lab link: only a default route reaches it


def nameservers(resolv_conf: bytes) -> list[str]:
    return re.findall(r"^\s*nameserver\s+(\S+)", resolv_conf.decode(errors="replace"), re.M)


def test_leftovers_sees_resolv_conf_bytes(clean_lab) -> None:
    """The lab check itself: one changed byte (a CRLF) or mode in resolv.conf is a leftover."""
    lab = clean_lab
    original = lab.client_ns.resolv_conf.read_bytes()
    assert lab.leftovers() == []
    lab.client_ns.resolv_conf.write_bytes(original.replace(b"\n", b"\r\n", 1))
    assert any("resolv.conf changed" in x for x in lab.leftovers())
    lab.client_ns.resolv_conf.write_bytes(original)
    mode = lab.client_ns.resolv_conf.stat().st_mode & 0o7777
    lab.client_ns.resolv_conf.chmod(mode ^ 0o004)
    assert any("resolv.conf mode changed" in x for x in lab.leftovers())
    lab.client_ns.resolv_conf.chmod(mode)
    assert lab.leftovers() == []


def test_dns_and_routes_while_connected(clean_lab, run_client) -> None:
    lab = clean_lab
    resolv_before = lab.client_ns.resolv_conf.read_bytes()
    log_offset = lab.gateway.log_size()
    client = run_client(lab.profile("eap-mschapv2"), lab.secret("eap-mschapv2"))
    status = client.status()
    assert status is not None, client.log_tail()
    assert status["dns"] == [POOL_DNS], status

    # What the client namespace's programs read (ip netns exec mounts this file).
    seen = lab.client_ns.run(["cat", "/etc/resolv.conf"]).stdout.encode()
    assert seen == lab.client_ns.resolv_conf.read_bytes()
    assert nameservers(seen)[:1] == [POOL_DNS], seen

    (tun,) = lab.new_links()
    routes = lab.client_ns.run(["ip", "-4", "route", "show", "table", "all"]).stdout
    assert re.search(rf"^{re.escape(LAN_TS)} dev {re.escape(tun)}\b", routes, re.M), routes
    route = lab.route_get(LAN_HOST)
    assert route.get("dev") == tun, route
    assert route.get("src") == status["virtual_ips"][0].split("/")[0], (route, status)
    # Outside the tunneled networks nothing changed.
    assert lab.route_get(OUTSIDE_HOST).get("dev") == CLIENT_IF

    problems = disconnect_cleanly(lab, client, "eap-mschapv2", log_offset)
    assert problems == [], "\n".join(problems) + "\n" + client.log_tail()
    assert lab.client_ns.resolv_conf.read_bytes() == resolv_before


def wait_dpd_answers(lab, offset: int, count: int, timeout: float) -> int:
    """How many DPD exchanges the gateway completed since `offset` (waits for `count`)."""
    deadline = time.monotonic() + timeout
    while True:
        answered = lab.gateway.log_since(offset).count("parsed INFORMATIONAL response")
        if answered >= count or time.monotonic() > deadline:
            return answered
        time.sleep(0.2)


def test_full_tunnel(clean_lab, run_client) -> None:
    lab = clean_lab
    log_offset = lab.gateway.log_size()
    client = run_client(lab.profile("full"), lab.secret("full"))
    status = client.status()
    assert status is not None, client.log_tail()
    assert check_status(status, gateway_addr("full")) == [], status
    assert set(status["routes"]) == {"0.0.0.0/0", "::/0"}, status
    (tun,) = lab.new_links()

    # Everything goes into the tunnel, the gateway itself included...
    for dest in (OUTSIDE_HOST, OFFLINK_ADDR, LAN_HOST, LAN6_HOST):
        route = lab.route_get(dest)
        assert route.get("dev") == tun, (dest, route)
    # ...except the client's own marked packets, which take the uplink.
    for dest in (OFFLINK_ADDR, UPLINK_GATEWAY):
        route = lab.route_get(dest, mark=CLIENT_FWMARK)
        assert route.get("dev") == CLIENT_IF, (dest, route)
    assert lab.route_get(OFFLINK_ADDR, mark=CLIENT_FWMARK).get("via") == UPLINK_GATEWAY

    ping = lab.ping(LAN_HOST, count=3)
    assert ping.ok, f"{ping.output}\n{client.log_tail()}"
    ping6 = lab.ping(LAN6_HOST, count=2)
    assert ping6.ok, f"{ping6.output}\n{client.log_tail()}"

    # IKE still flows outside the tunnel: the gateway's DPD (every second on this
    # connection) gets answers, and the same IKE SA stays up.
    (sa,) = lab.gateway.sas_for("full")
    dpd_offset = lab.gateway.log_size()
    answered = wait_dpd_answers(lab, dpd_offset, count=2, timeout=8)
    assert answered >= 2, lab.gateway.log_since(dpd_offset) + client.log_tail()
    (sa_after,) = lab.gateway.sas_for("full")
    assert sa_after["uniqueid"] == sa["uniqueid"]
    assert client.status()["state"] == "connected"

    problems = disconnect_cleanly(lab, client, "full", log_offset)
    assert problems == [], "\n".join(problems) + "\n" + client.log_tail()
