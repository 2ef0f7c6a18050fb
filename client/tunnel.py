"""The tunnel on this machine: TUN device, routes, DNS and data plane of an established
CHILD_SA (and the kill switch's way through it), what they are configured with, and
their bring-up, move and teardown."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, ip_interface, ip_network
from pathlib import Path

from .dataplane import DataPlane
from .esp.sa import EspInbound, EspOutbound
from .esp.selectors import InboundPolicy
from .ikev2.events import ChildSaEstablished, ChildSaKeys, ChildSaRekeyed, IpInterface, IpNetwork
from .netconf.dns import DnsManager
from .netconf.firewall import KillSwitch
from .netconf.routes import RouteManager
from .profile import Profile
from .tun import TunDevice

log = logging.getLogger(__name__)

DEFAULT_MTU = 1400  # fits ESP-in-UDP overhead on a 1500-byte path, as strongSwan's Android client


@dataclass(frozen=True)
class TunnelSettings:
    """What the tunnel is configured with, from the profile and the gateway's CHILD_SA."""

    mtu: int
    vips: list[IpInterface]
    routes: list[IpNetwork]
    excluded: list[IpNetwork]
    dns: list[IPv4Address | IPv6Address]
    domains: list[str]
    # IP versions whose traffic outside the tunnel is rejected (kill-switch: both).
    block: frozenset[int] = frozenset()

    @classmethod
    def of(cls, p: Profile, ev: ChildSaEstablished) -> TunnelSettings:
        # Host addresses: what reaches the tunnel is decided by the routes, not by the
        # prefix length the gateway happened to send with an IPv6 address.
        vips = [ip_interface(a.ip) for a in ev.virtual_ips]
        families = {a.version for a in vips}
        routes = list(p.split_subnets) or list(ev.remote_ts)
        return cls(
            mtu=p.mtu or DEFAULT_MTU, vips=vips,
            routes=[r for r in routes if r.version in families],
            excluded=list(p.split_excluded),
            dns=list(p.dns_servers) or list(ev.dns_servers),
            domains=list(p.dns_domains) or list(ev.dns_domains),
            block=blocked_versions(p),
        )


def blocked_versions(p: Profile) -> frozenset[int]:
    if p.kill_switch:
        return frozenset({4, 6})
    return frozenset(v for v, on in ((4, p.block_ipv4), (6, p.block_ipv6)) if on)


def inbound_policy(ev: ChildSaEstablished) -> InboundPolicy:
    """What the CHILD_SA may deliver: sources in its TSr, destinations our virtual IPs
    (or, without any, our TSi)."""
    ours = [ip_network(a.ip) for a in ev.virtual_ips] or list(ev.local_ts)
    return InboundPolicy(ev.remote_ts, ours)


def esp_sas(k: ChildSaKeys) -> tuple[EspOutbound, EspInbound]:
    return (
        EspOutbound(k.spi_out, k.encr_id, k.key_bits, k.encr_key_out, k.integ_id, k.integ_key_out),
        EspInbound(k.spi_in, k.encr_id, k.key_bits, k.encr_key_in, k.integ_id, k.integ_key_in),
    )


class Tunnel:
    """The TUN device, routes, DNS and data plane of one established
    CHILD_SA, and the ESP SAs the data plane uses."""

    def __init__(self, rdir: Path, killswitch: KillSwitch) -> None:
        self.rdir = rdir  # where the netconf journal and saved DNS state live
        # Engaged and lifted by the engine, not here: it outlives the tunnel (fail closed).
        self.killswitch = killswitch
        self.tun: TunDevice | None = None
        self.routes: RouteManager | None = None
        self.dns: DnsManager | None = None
        self.dataplane: DataPlane | None = None
        # ESP SAs of the tunnel and their traffic selectors by inbound SPI, and the one
        # our packets leave on.
        self.esp: dict[int, tuple[EspOutbound, EspInbound, InboundPolicy]] = {}
        self.out_spi: int | None = None

    def open(self, s: TunnelSettings, loop: asyncio.AbstractEventLoop,
             send_esp: Callable[[bytes], None],
             natt_socket: Callable[[], socket.socket | None]) -> None:
        """TUN device, routes and DNS; the data plane is created but not
        started, so the caller installs the first ESP SAs before packets flow."""
        self.tun = TunDevice.open(mtu=s.mtu)
        # The kill switch, engaged since before the first IKE packet, now lets the
        # tunnel's own device through.
        if s.block:
            self.killswitch.attach(self.tun.name)
        self.routes = RouteManager(self.tun.name, runtime_dir=self.rdir)
        self.routes.apply(s.vips, s.routes, s.excluded, s.mtu)
        if s.dns:
            self.dns = DnsManager(self.rdir)
            self.dns.apply(s.dns, s.domains, self.tun.name)
        # The socket getter lets the data plane send bursts with UDP GSO; it follows the
        # NAT-T socket of the moment (a reconnect replaces it).
        self.dataplane = DataPlane(loop, self.tun, send_esp, natt_socket)

    def move(self, s: TunnelSettings, old: TunnelSettings | None) -> None:
        """Reconfigure the open tunnel for `s`: the TUN device and kill switch stay;
        addresses, routes and DNS are redone only where they differ from `old`."""
        assert self.tun is not None and self.routes is not None
        if old is None or (s.vips, s.routes) != (old.vips, old.routes):
            self.routes.restore()
            self.routes.apply(s.vips, s.routes, s.excluded, s.mtu)
        if old is None or (s.dns, s.domains) != (old.dns, old.domains):
            if self.dns is not None:
                self.dns.restore()
            if s.dns:
                self.dns = self.dns or DnsManager(self.rdir)
                self.dns.apply(s.dns, s.domains, self.tun.name)

    # -- ESP SAs ------------------------------------------------------------------------
    def install_child(self, ev: ChildSaEstablished) -> bool:
        """A new CHILD_SA, sent on from now on; True if it replaces the outbound SA."""
        self.esp[ev.keys.spi_in] = (*esp_sas(ev.keys), inbound_policy(ev))
        return self.use_outbound(ev.keys.spi_in)

    def use_outbound(self, spi_in: int) -> bool:
        """Send on the ESP SA of CHILD_SA `spi_in` from now on; True if that replaces
        another outbound SA (a rekey)."""
        dp = self.dataplane
        if dp is None or spi_in not in self.esp:
            return False
        dp.install(*self.esp[spi_in])
        replaced = self.out_spi is not None and self.out_spi != spi_in
        self.out_spi = spi_in
        return replaced

    def child_rekeyed(self, ev: ChildSaRekeyed) -> bool:
        """A rekeyed CHILD_SA: accept its inbound packets at once; send on it now (we
        rekeyed) or when the old one is deleted (the gateway did, RFC 7296 2.8). True if
        the outbound SA changed."""
        dp = self.dataplane
        assert dp is not None
        out, inbound = esp_sas(ev.keys)
        # A rekey keeps the selectors (RFC 7296 1.3.3); without a predecessor to take
        # them from, nothing is admitted.
        old = self.esp.get(ev.old_spi_in)
        policy = old[2] if old is not None else InboundPolicy([], [])
        if old is None:
            log.warning("rekeyed CHILD_SA %08x replaces none of ours: its inbound traffic "
                        "is dropped", ev.keys.spi_in)
        self.esp[ev.keys.spi_in] = (out, inbound, policy)
        if ev.outbound or self.out_spi not in self.esp:
            return self.use_outbound(ev.keys.spi_in)
        dp.install(self.esp[self.out_spi][0], inbound, policy)  # one more inbound
        return False

    def remove_inbound(self, spi_in: int) -> None:
        if self.dataplane is not None:
            self.dataplane.remove_inbound(spi_in)
        self.esp.pop(spi_in, None)

    def close(self) -> None:
        # Reverse order of setup; each step guarded so one failure cannot strand the rest.
        steps = (
            ("data plane", lambda: self.dataplane and self.dataplane.stop()),
            ("DNS", lambda: self.dns and self.dns.restore()),
            ("routes", lambda: self.routes and self.routes.restore()),
            ("TUN device", lambda: self.tun and self.tun.close()),
        )
        for what, step in steps:
            try:
                step()
            except Exception:
                log.exception("restoring %s failed", what)
        self.dataplane = self.dns = self.routes = self.tun = None
