"""IPv6 inside the tunnel: a virtual IP of each family, the IPv6 LAN reached through it."""

from __future__ import annotations

import ipaddress

import pytest

from tests.lab.checks import check_status, disconnect_cleanly
from tests.lab.gateway import LAN6_HOST, LAN6_TS, LAN_HOST, LAN_TS, POOL4, POOL6
from tests.lab.profiles import gateway_addr

pytestmark = pytest.mark.interop


def test_dual_stack_tunnel(clean_lab, run_client) -> None:
    lab = clean_lab
    log_offset = lab.gateway.log_size()
    client = run_client(lab.profile("ipv6"), lab.secret("ipv6"))

    status = client.status()
    assert status is not None, client.log_tail()
    assert check_status(status, gateway_addr("ipv6")) == [], status
    vips = [ipaddress.ip_address(v.split("/")[0]) for v in status["virtual_ips"]]
    assert sorted(v.version for v in vips) == [4, 6], status
    assert all(v in ipaddress.ip_network(POOL4 if v.version == 4 else POOL6) for v in vips)
    assert LAN6_TS in status["routes"] and LAN_TS in status["routes"], status

    (sa,) = lab.gateway.sas_for("ipv6")
    assert {ipaddress.ip_address(v) for v in sa["remote-vips"]} == set(vips), sa

    # The kernel picks the IPv6 virtual IP as source and the TUN as device...
    (tun,) = lab.new_links()
    route = lab.route_get(LAN6_HOST)
    assert route.get("dev") == tun, route
    assert ipaddress.ip_address(route.get("src", "::")) in vips, route
    # ...and the reply proves the path: the gateway drops the LAN's traffic in clear.
    ping6 = lab.ping(LAN6_HOST, count=3)
    assert ping6.received == 3, f"{ping6.output}\n{client.log_tail()}"
    ping4 = lab.ping(LAN_HOST, count=2)
    assert ping4.ok, f"{ping4.output}\n{client.log_tail()}"

    # While connected the lab sees the IPv6 policy rule and route: so the clean check
    # below does cover IPv6.
    connected = lab.leftovers()
    assert any(x.startswith("ip rule added: -6 ") for x in connected), connected
    assert any(x.startswith("route added: -6 ") and LAN6_TS in x for x in connected), connected

    problems = disconnect_cleanly(lab, client, "ipv6", log_offset)
    assert problems == [], "\n".join(problems) + "\n" + client.log_tail()
