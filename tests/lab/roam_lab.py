"""A lab for roaming: a client with two uplinks through a router to the lab gateway.

    CLIENT  wlan0 203.0.113.10/25  ----veth---- wlan 203.0.113.1/25    ROUTER
            wwan0 203.0.113.130/25 ----veth---- wwan 203.0.113.129/25  (forwards;
            default via 203.0.113.1 metric 100 (preferred)              NAT on demand)
            default via 203.0.113.129 metric 200                  gw0 192.0.2.254/24
                                                                         |
                                               eth0 192.0.2.1-.22/24 ...  GW
                                               lo 198.18.0.1, 198.18.0.53 (the LAN)
                                               charon + kernel-libipsec, every scenario
                                               of tests/lab/gateway.py

Taking wlan0 down withdraws its default route, so the kernel's path to the gateway moves
to wwan0; bringing it back means re-adding the route, as a network manager would
(`uplink_up`). `nat_on_wlan(True)` masquerades whatever comes in over wlan with random
source ports (iptables MASQUERADE --random), so the gateway sees 192.0.2.254:random.
The gateway drops anything for the LAN that arrives in clear, so a reply from the LAN
proves the tunnel. `count_keepalives()` reads an iptables counter on the gateway that
matches NAT-T keepalives (UDP to 4500 with a one-byte payload, 29-byte IP packets).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from tests.lab.gateway import GATEWAY_ADDRS, LAN_HOST, POOL_DNS, SCENARIOS, StrongSwanGateway
from tests.lab.netns import Namespace, add_veth
from tests.lab.pki import TestPKI
from tests.lab.profiles import make_profile, secret_for, write_profile
from tests.lab.topology import NamespaceLab, NsState, PingResult, ping, snapshot

UPLINKS = {
    # name: (client address, router address, route metric)
    "wlan0": ("203.0.113.10", "203.0.113.1", 100),
    "wwan0": ("203.0.113.130", "203.0.113.129", 200),
}
ROUTER_IFS = {"wlan0": "wlan", "wwan0": "wwan"}
PREFIX = 25
ROUTER_GW_ADDR = "192.0.2.254"
CLIENT_NET = "203.0.113.0/24"
SCENARIO = "eap-mschapv2"
GATEWAY_ADDR = SCENARIOS[SCENARIO].addr
CONNTRACK_UDP = {"net.netfilter.nf_conntrack_udp_timeout": 30,
                 "net.netfilter.nf_conntrack_udp_timeout_stream": 120}
KEEPALIVE_LEN = 29  # IPv4 header, UDP header, the 0xFF byte
KEEPALIVE_RULE = ["INPUT", "-i", "eth0", "-p", "udp", "--dport", "4500", "-m", "length",
                  "--length", str(KEEPALIVE_LEN), "-j", "ACCEPT"]


class RoamLab(NamespaceLab):
    """`with RoamLab() as lab:` builds client, router and gateway, and always removes them."""

    label = "roam lab"

    def __init__(self, keep_dir: bool = False) -> None:
        self.keep_dir = keep_dir or bool(os.environ.get("VPNLAB_KEEP"))
        self.dir = Path()
        self.client_ns = Namespace("vpnroam-c")
        self.router_ns = Namespace("vpnroam-r")
        self.gw_ns = Namespace("vpnroam-g")
        self.pki: TestPKI
        self.gateway: StrongSwanGateway | None = None
        self.baseline: NsState | None = None
        self._nat = False

    def _setup(self) -> None:
        self._make_dir("vpnroam-")
        self.pki = TestPKI.create(self.dir / "pki")
        c, r, g = self.client_ns, self.router_ns, self.gw_ns
        for ns in (c, r, g):
            ns.create()
        for uplink, (addr, router_addr, metric) in UPLINKS.items():
            add_veth(c, uplink, r, ROUTER_IFS[uplink])
            c.add_addr(uplink, f"{addr}/{PREFIX}")
            r.add_addr(ROUTER_IFS[uplink], f"{router_addr}/{PREFIX}")
            c.add_route("default", via=router_addr, dev=uplink, metric=metric)
        add_veth(r, "gw0", g, "eth0")
        r.add_addr("gw0", f"{ROUTER_GW_ADDR}/24")
        r.run(["sysctl", "-qw", "net.ipv4.ip_forward=1"])
        for addr in GATEWAY_ADDRS:
            g.add_addr("eth0", f"{addr}/24")
        for addr in (LAN_HOST, POOL_DNS):
            g.add_addr("lo", f"{addr}/32")
        g.add_route(CLIENT_NET, via=ROUTER_GW_ADDR)
        g.run(["iptables", "-w", "-A", "INPUT", "-i", "eth0", "-d", "198.18.0.0/15",
               "-j", "DROP"])
        g.run(["iptables", "-w", "-I", *KEEPALIVE_RULE])
        self.gateway = StrongSwanGateway(g, self.dir / "gateway", self.pki)
        self.gateway.start()
        self.baseline = snapshot(c)

    def teardown(self) -> None:
        self._tear_down((lambda: self.gateway and self.gateway.stop(), self.client_ns.delete,
                         self.router_ns.delete, self.gw_ns.delete))

    # -- the network changes ------------------------------------------------------------
    def uplink_down(self, uplink: str) -> None:
        """The link goes away (Wi-Fi lost): its default route goes with it."""
        self.client_ns.link_down(uplink)

    def uplink_up(self, uplink: str) -> None:
        """The link comes back and gets its default route again (a network manager's job)."""
        _, router_addr, metric = UPLINKS[uplink]
        self.client_ns.link_up(uplink)
        self.client_ns.ip("route", "replace", "default", "via", router_addr, "dev", uplink,
                          "metric", str(metric))

    def nat_on_wlan(self, on: bool) -> None:
        """Masquerade (random ports) what the client sends over wlan0, or stop doing so."""
        if on == self._nat:
            return
        action = "-A" if on else "-D"
        wlan_net = f"{UPLINKS['wlan0'][1]}/{PREFIX}"
        self.router_ns.run(["iptables", "-w", "-t", "nat", action, "POSTROUTING", "-s",
                            wlan_net, "-o", "gw0", "-j", "MASQUERADE", "--random"])
        self._nat = on

    def nat_timeout(self, seconds: int | None) -> None:
        """How long the router's NAT remembers an idle UDP mapping (None: the defaults).
        A short one makes the NAT hand out a new random port: a rebinding."""
        for key, default in CONNTRACK_UDP.items():
            value = default if seconds is None else seconds
            self.router_ns.run(["sysctl", "-qw", f"{key}={value}"])

    def reset_network(self) -> None:
        """Both uplinks up with their routes, no NAT (between tests)."""
        for uplink in UPLINKS:
            self.uplink_up(uplink)
        self.nat_on_wlan(False)
        self.nat_timeout(None)

    # -- what the gateway sees ----------------------------------------------------------
    def count_keepalives(self) -> int:
        """NAT-T keepalives the gateway received so far (an iptables counter)."""
        out = self.gw_ns.run(["iptables", "-w", "-L", "INPUT", "-v", "-x", "-n"]).stdout
        for line in out.splitlines():
            if f"length {KEEPALIVE_LEN}" in line and "dpt:4500" in line:
                return int(line.split()[0])
        raise RuntimeError(f"keepalive counter rule not found:\n{out}")

    def client_sa(self, timeout: float = 5.0) -> dict | None:
        """The gateway's view of the one client IKE SA (swanctl --list-sas), if any."""
        assert self.gateway is not None
        deadline = time.monotonic() + timeout
        while True:
            sas = self.gateway.sas_for(SCENARIO)
            if sas or time.monotonic() > deadline:
                return sas[0] if sas else None
            time.sleep(0.1)

    def wait_client_addr(self, addr: str, timeout: float = 10.0) -> dict | None:
        """The gateway's SA once it names `addr` as the client's address (None: never)."""
        assert self.gateway is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            sas = self.gateway.sas_for(SCENARIO)
            if sas and sas[0].get("remote-host") == addr:
                return sas[0]
            time.sleep(0.1)
        return None

    # -- client side --------------------------------------------------------------------
    def profile(self, **extra) -> Path:
        profile = make_profile(self.pki, SCENARIO, **extra)
        return write_profile(self.dir / f"roam-{profile['uuid'][:8]}.vpnprofile", profile)

    def secret(self) -> str:
        return secret_for(SCENARIO, self.pki)

    def ping(self, count: int = 3) -> PingResult:
        return ping(self.client_ns, LAN_HOST, count, timeout=count * 3 + 10)

    def new_links(self) -> list[str]:
        """Devices in the client namespace that were not there at setup (the TUN)."""
        assert self.baseline is not None
        return sorted(snapshot(self.client_ns).links - self.baseline.links)

    def reset_client(self) -> None:
        self.reset_network()
        super().reset_client()
