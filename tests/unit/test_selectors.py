"""The inbound traffic-selector check (RFC 4301 section 5.2): the matcher on its own, then
in the data plane and the tunnel, with packets sealed by the SA's own keys, so only the
selectors can stop them: a spoofed source or a foreign destination is dropped and counted
(`dropped_selector`, one log line per interval), a packet inside the selectors passes,
and a rekeyed CHILD_SA keeps its predecessor's selectors."""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Iterator
from ipaddress import ip_interface, ip_network
from pathlib import Path

import pytest

from client import dataplane
from client.dataplane import DataPlane
from client.esp.sa import EspInbound, EspOutbound
from client.esp.selectors import MAX_EXACT, InboundPolicy, describe
from client.ikev2.constants import EncrId
from client.ikev2.events import ChildSaEstablished, ChildSaKeys, ChildSaRekeyed
from client.netconf.firewall import KillSwitch
from client.tunnel import Tunnel, inbound_policy

KEY = bytes(range(36))
VIP = "198.51.100.7"
VIP6 = "2001:db8:1::7"


def v4(src: str, dst: str, size: int = 40) -> bytes:
    """An IPv4 packet (UDP-like payload) of `size` bytes from `src` to `dst`."""
    head = struct.pack(">BBHHHBBH4s4s", 0x45, 0, size, 0, 0, 64, 17, 0,
                       ip_interface(src).ip.packed, ip_interface(dst).ip.packed)
    return head + bytes(size - 20)


def v6(src: str, dst: str, size: int = 60) -> bytes:
    head = struct.pack(">IHBB16s16s", 6 << 28, size - 40, 17, 64,
                       ip_interface(src).ip.packed, ip_interface(dst).ip.packed)
    return head + bytes(size - 40)


# -- the matcher ------------------------------------------------------------------------
def test_full_tunnel_checks_only_the_destination():
    p = InboundPolicy(["0.0.0.0/0", "::/0"], [VIP, VIP6])
    assert p.admits(v4("203.0.113.9", VIP))
    assert p.admits(v4("0.0.0.0", VIP)) and p.admits(v4("255.255.255.255", VIP))
    assert p.admits(v6("2001:db8:ffff::1", VIP6))
    assert not p.admits(v4("203.0.113.9", "198.51.100.8"))  # not our address
    assert not p.admits(v4("203.0.113.9", "198.51.100.6"))
    assert not p.admits(v6("2001:db8:ffff::1", "2001:db8:1::8"))


def test_split_tunnel_checks_source_ranges_of_both_families():
    p = InboundPolicy(["192.0.2.0/25", "192.0.2.128/26", "198.18.4.0/24", "2001:db8:5::/48"],
                      [VIP, VIP6])
    for src in ("192.0.2.0", "192.0.2.127", "192.0.2.128", "192.0.2.191", "198.18.4.255"):
        assert p.admits(v4(src, VIP)), src
    for src in ("192.0.2.192", "192.0.1.255", "198.18.5.0", "203.0.113.1", "0.0.0.0"):
        assert not p.admits(v4(src, VIP)), src
    assert p.admits(v6("2001:db8:5:ffff::1", VIP6))
    assert not p.admits(v6("2001:db8:6::1", VIP6))
    assert not p.admits(v6("::", VIP6))


def test_a_family_without_selectors_or_addresses_is_refused():
    only4 = InboundPolicy(["0.0.0.0/0", "::/0"], [VIP])  # no IPv6 virtual IP
    assert not only4.admits(v6("2001:db8::1", VIP6))
    no6_ts = InboundPolicy(["0.0.0.0/0"], [VIP, VIP6])  # TSr has no IPv6 range
    assert not no6_ts.admits(v6("2001:db8::1", VIP6))
    nothing = InboundPolicy([], [])
    assert not nothing.admits(v4("192.0.2.1", VIP)) and not nothing.admits(b"")


def test_destination_ranges_when_we_have_no_virtual_ip():
    # TSi as the gateway narrowed it, wider than MAX_EXACT addresses: checked as a range.
    p = InboundPolicy(["192.0.2.0/24"], ["198.51.100.0/24"])
    assert 256 > MAX_EXACT
    assert p.admits(v4("192.0.2.1", "198.51.100.255"))
    assert not p.admits(v4("192.0.2.1", "198.51.101.0"))
    assert not p.admits(v4("203.0.113.1", "198.51.100.1"))
    wide = InboundPolicy(["0.0.0.0/0"], ["198.51.100.0/24"])
    assert wide.admits(v4("203.0.113.1", "198.51.100.3"))
    assert not wide.admits(v4("203.0.113.1", "198.51.99.3"))


@pytest.mark.parametrize("policy", [
    InboundPolicy(["0.0.0.0/0", "::/0"], [VIP, VIP6]),
    InboundPolicy(["198.18.0.0/15", "2001:db8::/32"], [VIP, VIP6]),
    InboundPolicy(["0.0.0.0/0", "::/0"], ["198.51.100.0/24", "2001:db8::/32"]),
    InboundPolicy(["198.18.0.0/15", "2001:db8::/32"], ["198.51.100.0/24", "2001:db8::/32"]),
])
def test_truncated_headers_and_other_versions_never_pass(policy):
    good4, good6 = v4("198.18.0.1", VIP), v6("2001:db8::1", VIP6)
    assert policy.admits(good4) and policy.admits(good6)
    for n in range(1, 20):
        assert not policy.admits(good4[:n]), n
    for n in range(1, 40):
        assert not policy.admits(good6[:n]), n
    for version in (0, 5, 7, 15):
        assert not policy.admits(bytes([version << 4 | 5]) + good4[1:]), version


def test_overlapping_selectors_are_merged():
    p = InboundPolicy(["192.0.2.0/24", "192.0.2.64/26", "192.0.2.0/25"], [VIP])
    assert p.admits(v4("192.0.2.200", VIP)) and not p.admits(v4("192.0.3.0", VIP))


def test_describe_names_the_addresses():
    assert describe(v4("203.0.113.5", VIP)) == f"203.0.113.5 -> {VIP}"
    assert describe(v6("2001:db8::5", VIP6)) == f"2001:db8::5 -> {VIP6}"
    assert "truncated" in describe(v4("203.0.113.5", VIP)[:12])


# -- in the data plane ------------------------------------------------------------------
class FakeTun:
    fd = -1

    def __init__(self) -> None:
        self.written: list[bytes] = []

    def write_batch(self, packets: list[bytes]) -> tuple[int, int, None]:
        self.written.extend(packets)
        return 0, 0, None


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def keys(spi_in: int, spi_out: int) -> ChildSaKeys:
    return ChildSaKeys(spi_in, spi_out, EncrId.AES_GCM_16, 256, None, KEY, b"", KEY, b"")


def gateway_sa(spi: int) -> EspOutbound:
    """The gateway's side of our inbound SA `spi`: it seals with the SA's real keys."""
    return EspOutbound(spi, EncrId.AES_GCM_16, 256, KEY)


def test_spoofed_source_is_dropped_counted_and_logged_once(loop, caplog):
    tun = FakeTun()
    dp = DataPlane(loop, tun, lambda p: None)  # type: ignore[arg-type]
    dp.install(EspOutbound(0x51, EncrId.AES_GCM_16, 256, KEY),
               EspInbound(0x52, EncrId.AES_GCM_16, 256, KEY),
               InboundPolicy(["192.0.2.0/24"], [VIP]))
    gw = gateway_sa(0x52)
    good = v4("192.0.2.10", VIP, 100)
    spoofed = [v4("203.0.113.66", VIP, 100), v4("192.0.2.10", "198.51.100.99", 100),
               v4("192.0.3.1", VIP, 100)]
    with caplog.at_level(logging.WARNING, logger="client.dataplane"):
        dp.on_esp(gw.encapsulate(good))
        for p in spoofed:
            dp.on_esp(gw.encapsulate(p))
        dp.on_esp(gw.encapsulate(good))
        dp.flush()
    assert tun.written == [good, good]
    assert (dp.packets_in, dp.dropped_selector, dp.dropped) == (2, 3, 3)
    lines = [r.getMessage() for r in caplog.records if "traffic selectors" in r.message]
    assert len(lines) == 1 and "203.0.113.66 -> " + VIP in lines[0], lines


def test_selector_log_reports_the_count_since_the_last_line(loop, caplog, monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(dataplane.time, "monotonic", lambda: now[0])
    dp = DataPlane(loop, FakeTun(), lambda p: None)  # type: ignore[arg-type]
    dp.install(EspOutbound(0x51, EncrId.AES_GCM_16, 256, KEY),
               EspInbound(0x52, EncrId.AES_GCM_16, 256, KEY), InboundPolicy(["0.0.0.0/0"], [VIP]))
    gw = gateway_sa(0x52)
    with caplog.at_level(logging.WARNING, logger="client.dataplane"):
        for _ in range(10):  # 2 per second for 5 s, then one more after the interval
            now[0] += 0.5
            dp.on_esp(gw.encapsulate(v4("192.0.2.1", "198.51.100.200")))
        now[0] += dataplane.LOG_INTERVAL
        dp.on_esp(gw.encapsulate(v4("192.0.2.1", "198.51.100.200")))
    lines = [r.getMessage() for r in caplog.records if "traffic selectors" in r.message]
    assert [line.split()[1] for line in lines] == ["1", "10"], lines
    assert dp.dropped_selector == 11


def established(spi_in: int, remote_ts: list[str], vips: list[str],
                local_ts: list[str] = ["0.0.0.0/0"]) -> ChildSaEstablished:  # noqa: B006
    return ChildSaEstablished(
        keys(spi_in, spi_in + 0x1000), "aes256gcm16",
        [ip_network(n) for n in local_ts], [ip_network(n) for n in remote_ts],
        [ip_interface(a) for a in vips], [], [])


def test_policy_of_a_child_sa_uses_virtual_ips_else_tsi():
    p = inbound_policy(established(1, ["192.0.2.0/24"], [VIP, VIP6 + "/64"]))
    assert p.admits(v4("192.0.2.1", VIP)) and not p.admits(v4("192.0.2.1", "198.51.100.8"))
    assert p.admits(v6("2001:db8::1", VIP6)) is False  # TSr has no IPv6
    no_vip = inbound_policy(established(1, ["192.0.2.0/24"], [], ["198.51.100.0/28"]))
    assert no_vip.admits(v4("192.0.2.1", "198.51.100.15"))
    assert not no_vip.admits(v4("192.0.2.1", "198.51.100.16"))


def test_tunnel_applies_the_selectors_and_a_rekey_keeps_them(loop, tmp_path: Path):
    tun = FakeTun()
    t = Tunnel(tmp_path, KillSwitch(tmp_path))
    t.dataplane = DataPlane(loop, tun, lambda p: None)  # type: ignore[arg-type]
    t.install_child(established(0x100, ["192.0.2.0/24"], [VIP]))
    good, spoofed = v4("192.0.2.5", VIP), v4("203.0.113.5", VIP)
    gw_old = gateway_sa(0x100)
    t.dataplane.on_esp(gw_old.encapsulate(good))
    t.dataplane.on_esp(gw_old.encapsulate(spoofed))
    # The gateway rekeys: the new inbound SA is accepted at once, with the same selectors.
    t.child_rekeyed(ChildSaRekeyed(0x100, keys(0x200, 0x1200), "aes256gcm16", outbound=False))
    gw_new = gateway_sa(0x200)
    t.dataplane.on_esp(gw_new.encapsulate(good))
    t.dataplane.on_esp(gw_new.encapsulate(spoofed))
    t.dataplane.flush()
    assert tun.written == [good, good]
    assert t.dataplane.dropped_selector == 2
