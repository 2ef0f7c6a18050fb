"""The network monitor (rtnetlink) and path selection: message filtering on crafted
input, and for real in a namespace with two uplinks and a TUN device."""

from __future__ import annotations

import json
import struct

from client.netmon import (
    NLMSG_OVERRUN,
    RTA_OIF,
    RTA_TABLE,
    RTM_DELADDR,
    RTM_NEWLINK,
    RTM_NEWROUTE,
    relevant,
)
from tests.unit.test_netconf import netns, run_in

TUN, ETH, OUR_TABLE = 7, 2, 22096


def nlmsg(mtype: int, body: bytes) -> bytes:
    length = 16 + len(body)
    padded = body + b"\0" * (-len(body) % 4)
    return struct.pack("=IHHII", length, mtype, 0, 0, 0) + padded


def link(ifindex: int) -> bytes:
    return nlmsg(RTM_NEWLINK, struct.pack("=BxHiII", 0, 1, ifindex, 0, 0))


def addr(ifindex: int) -> bytes:
    return nlmsg(RTM_DELADDR, struct.pack("=BBBBi", 2, 24, 0, 0, ifindex))


def route(table: int, oif: int | None = None) -> bytes:
    body = struct.pack("=BBBBBBBBI", 2, 0, 0, 0, min(table, 252), 3, 0, 1, 0)
    body += struct.pack("=HHI", 8, RTA_TABLE, table)
    if oif is not None:
        body += struct.pack("=HHI", 8, RTA_OIF, oif)
    return nlmsg(RTM_NEWROUTE, body)


def test_changes_of_real_interfaces_count() -> None:
    for msg in (link(ETH), addr(ETH), route(254, ETH), route(254)):
        assert relevant(msg, {TUN}, {OUR_TABLE})


def test_our_tun_device_and_our_table_do_not_count() -> None:
    for msg in (link(TUN), addr(TUN), route(254, TUN), route(255, TUN),
                route(OUR_TABLE, ETH), route(OUR_TABLE)):
        assert not relevant(msg, {TUN}, {OUR_TABLE})
    # ... but one relevant message in the same datagram does.
    assert relevant(link(TUN) + route(OUR_TABLE) + addr(ETH), {TUN}, {OUR_TABLE})


def test_overrun_counts_and_garbage_never_raises() -> None:
    assert relevant(nlmsg(NLMSG_OVERRUN, b""), {TUN}, {OUR_TABLE})
    good = link(ETH)
    for bad in (b"", b"\x01", good[:15], good[:-1], struct.pack("=IHHII", 4, 16, 0, 0, 0),
                struct.pack("=IHHII", 9999, 16, 0, 0, 0) + b"\0" * 20,
                nlmsg(RTM_NEWLINK, b"\0\0"), nlmsg(RTM_NEWROUTE, b"\0" * 12 + b"\xff" * 8)):
        relevant(bad, {TUN}, {OUR_TABLE})  # no exception, whatever it decides
    # A route whose attribute claims more than there is: the header's table still counts.
    truncated = nlmsg(RTM_NEWROUTE, struct.pack("=BBBBBBBBI", 2, 0, 0, 0, 254, 3, 0, 1, 0)
                      + struct.pack("=HHI", 200, RTA_OIF, TUN))
    assert relevant(truncated, {TUN}, {OUR_TABLE})


LIVE = """
import asyncio, json, socket
from client.netmon import NetMonitor
from client.pathsel import local_addresses, source_towards
from client.netconf.routes import DEFAULT_FWMARK, DEFAULT_TABLE
for i, (me, router, metric) in enumerate((("203.0.113.10", "203.0.113.1", 100),
                                          ("203.0.113.130", "203.0.113.129", 200))):
    sh("ip", "link", "add", f"up{i}", "type", "veth", "peer", "name", f"up{i}p")
    sh("ip", "addr", "add", f"{me}/25", "dev", f"up{i}")
    for dev in (f"up{i}", f"up{i}p"):
        sh("ip", "link", "set", dev, "up")
    sh("ip", "route", "add", "default", "via", router, "dev", f"up{i}", "metric", str(metric))
sh("ip", "tuntap", "add", "mode", "tun", "name", "vpn9")
sh("ip", "link", "set", "vpn9", "up")
GW = ("192.0.2.1", 4500)
seen = []

async def main():
    loop = asyncio.get_running_loop()
    tun = {socket.if_nametoindex("vpn9")}
    mon = NetMonitor(loop, lambda: seen.append(source_towards(GW, DEFAULT_FWMARK)),
                     lambda: tun, {DEFAULT_TABLE})
    mon.start()
    out = {"start": source_towards(GW, DEFAULT_FWMARK),
           "addresses": local_addresses({"vpn9"})}

    async def step(name, *commands):
        await asyncio.sleep(0.2)
        seen.clear()
        for command in commands:
            sh(*command)
        await asyncio.sleep(0.3)
        out[name] = list(seen)

    # The tunnel's own device, its table and a rule that sends everything unmarked there.
    await step("tunnel", ["ip", "addr", "add", "198.19.0.5/32", "dev", "vpn9"],
               ["ip", "route", "add", "default", "dev", "vpn9", "table", str(DEFAULT_TABLE)],
               ["ip", "route", "add", "192.0.2.0/24", "dev", "up1", "table",
                str(DEFAULT_TABLE)],
               ["ip", "rule", "add", "not", "fwmark", hex(DEFAULT_FWMARK), "table",
                str(DEFAULT_TABLE)])
    out["marked"] = source_towards(GW, DEFAULT_FWMARK)
    await step("down", ["ip", "link", "set", "up0", "down"])
    await step("up", ["ip", "link", "set", "up0", "up"],
               ["ip", "route", "replace", "default", "via", "203.0.113.1", "dev", "up0",
                "metric", "100"])
    await step("none", ["ip", "link", "set", "up0", "down"], ["ip", "link", "set", "up1", "down"])
    out["left"] = local_addresses({"vpn9"})
    out["events"] = mon.events
    mon.stop()
    print(json.dumps(out))

asyncio.run(main())
"""


def test_the_kernels_path_is_followed_for_real() -> None:
    with netns("vpnmon") as ns:
        out = json.loads(run_in(ns, LIVE).strip().splitlines()[-1])
    assert out["start"] == "203.0.113.10"
    assert out["addresses"] == ["203.0.113.10", "203.0.113.130"]
    assert out["tunnel"] == []  # our TUN device and our table: no callback
    assert out["marked"] == "203.0.113.10"  # the mark keeps the tunnel's table out
    # A link going down is one burst of messages, and one callback, with the new path.
    assert out["down"] == ["203.0.113.130"]
    assert out["up"] and out["up"][-1] == "203.0.113.10"
    assert out["none"] and out["none"][-1] is None
    assert out["left"] == []
