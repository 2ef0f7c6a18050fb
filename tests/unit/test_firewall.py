"""The kill switch (client/netconf/firewall.py): the ruleset per profile option, and for
real in a namespace: what it lets out and what it rejects, holding and lifting it, a
missing or failing nft, and a crash (which does not lift it)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from ipaddress import ip_address, ip_network

import pytest

from client.netconf import firewall
from client.netconf.firewall import KillSwitch, NetconfError, ruleset
from client.profile import profile_from_dict
from client.tunnel import blocked_versions
from tests.unit.test_netconf import REPO, netns, ns_python, run_in

EXCLUDED = [ip_network("198.51.100.0/24"), ip_network("2001:db8:5::/64")]


def rules(text: str, chain: str) -> list[str]:
    """The rule lines of `chain` in a ruleset script."""
    lines = [line.strip() for line in text.splitlines()]
    start = lines.index(f"chain {chain} {{")
    end = lines.index("}", start)
    return lines[start + 2:end]


def test_kill_switch_rejects_both_versions_outside_the_tunnel() -> None:
    text = ruleset("vpn0", {4, 6}, EXCLUDED, allowed=[ip_address("192.0.2.1")])
    out = rules(text, "output")
    assert out[:3] == ['oifname "lo" accept', 'oifname "vpn0" accept',
                       "meta mark 0x00005650 ip daddr { 192.0.2.1 } accept"]
    assert out[-2:] == ["meta nfproto ipv4 reject with icmpx type admin-prohibited",
                        "meta nfproto ipv6 reject with icmpx type admin-prohibited"]
    # The link keeps working: DHCP, DHCPv6, neighbour discovery; excluded subnets go out.
    assert "meta nfproto ipv4 udp sport 68 udp dport 67 accept" in out
    assert "meta nfproto ipv6 udp sport 546 udp dport 547 accept" in out
    assert any(r.startswith("icmpv6 type {") and "nd-neighbor-solicit" in r for r in out)
    assert "ip daddr { 198.51.100.0/24 } accept" in out
    assert "ip6 daddr { 2001:db8:5::/64 } accept" in out
    # Every accept comes before the rejects; nothing is dropped silently.
    assert all("reject" not in r for r in out[:-2]) and "drop" not in text
    fwd = rules(text, "forward")
    assert fwd[:2] == ['iifname "vpn0" accept', 'oifname "vpn0" accept']
    assert "ip saddr { 198.51.100.0/24 } accept" in fwd
    assert fwd[-2:] == out[-2:]
    # One transaction that replaces a table left behind (add, delete, add).
    assert text.splitlines()[:3] == ["table inet vpnclient", "delete table inet vpnclient",
                                     "table inet vpnclient {"]


def test_block_ipv4_only_leaves_ipv6_alone() -> None:
    out = rules(ruleset("vpn0", {4}, EXCLUDED), "output")
    assert out[-1] == "meta nfproto ipv4 reject with icmpx type admin-prohibited"
    assert not any("ipv6" in r or "ip6" in r or "icmpv6" in r for r in out), out
    assert "ip daddr { 198.51.100.0/24 } accept" in out


def test_block_ipv6_only_leaves_ipv4_alone() -> None:
    text = ruleset("vpn0", {6}, EXCLUDED)
    for chain in ("output", "forward"):
        found = rules(text, chain)
        assert found[-1] == "meta nfproto ipv6 reject with icmpx type admin-prohibited"
        assert not any("ipv4" in r or r.startswith("ip ") for r in found), found
    assert "ip6 daddr { 2001:db8:5::/64 } accept" in rules(text, "output")


def test_nothing_to_block_or_a_strange_interface_name_is_refused() -> None:
    with pytest.raises(NetconfError, match="kill switch"):
        ruleset("vpn0", set())
    with pytest.raises(NetconfError, match="kill switch"):
        ruleset('vpn0" accept', {4})


@pytest.mark.parametrize(("extra", "versions"), [
    ({}, set()),
    ({"kill-switch": True}, {4, 6}),
    ({"split-tunneling": {"block-ipv4": True}}, {4}),
    ({"split-tunneling": {"block-ipv6": True}}, {6}),
    ({"kill-switch": True, "split-tunneling": {"block-ipv6": True}}, {4, 6}),
])
def test_profile_options_select_the_blocked_versions(extra: dict, versions: set) -> None:
    profile = profile_from_dict({
        "uuid": "2b5a0e4e-3f1a-4e55-9d7e-1c2d3e4f5a6b", "name": "t", "type": "ikev2-eap",
        "remote": {"addr": "192.0.2.1"}, **extra})
    assert blocked_versions(profile) == versions


GATEWAY = ip_address("192.0.2.1")
OWNER = {"profile": "t", "uuid": "2b5a0e4e-3f1a-4e55-9d7e-1c2d3e4f5a6b",
         "owner_uid": 1000, "owner": "alice"}


def test_marked_packets_may_reach_only_the_allowed_addresses() -> None:
    text = ruleset(None, {4, 6}, (), allowed=[GATEWAY, ip_address("2001:db8::1")])
    out = rules(text, "output")
    assert "meta mark 0x00005650 ip daddr { 192.0.2.1 } accept" in out
    assert "meta mark 0x00005650 ip6 daddr { 2001:db8::1 } accept" in out
    assert not any(r.startswith("meta mark") and "daddr" not in r for r in out), out
    # No tunnel yet (connecting) or any more (held): no interface is let through.
    assert not any("oifname \"vpn" in r or "iifname" in r for r in text.splitlines())


def test_missing_nft_fails_naming_the_kill_switch_and_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(firewall.shutil, "which", lambda name: None)
    ks = KillSwitch(tmp_path)
    with pytest.raises(NetconfError, match=r"kill switch: nft not found .*nftables"):
        ks.engage({4, 6}, [], [GATEWAY], OWNER)
    assert not ks.engaged and not (tmp_path / firewall.RECORD).exists()


def test_failing_nft_fails_naming_the_kill_switch_and_forgets_it(tmp_path, monkeypatch):
    calls: list[list[str]] = []

    def fake_run(cmd, check=True, input=None):
        calls.append(cmd)
        if check:
            raise NetconfError(f"{' '.join(cmd)}: Error: Could not process rule")
        return subprocess.CompletedProcess(cmd, 1, "", "Error: No such file or directory")

    monkeypatch.setattr(firewall.shutil, "which", lambda name: "/usr/sbin/nft")
    monkeypatch.setattr(firewall, "run", fake_run)
    with pytest.raises(NetconfError, match="kill switch: cannot install the firewall"):
        KillSwitch(tmp_path).engage({4}, [], [GATEWAY], OWNER)
    # It tried to remove whatever half of it might exist, and the record is gone.
    assert calls[-1] == ["nft", "delete", "table", "inet", "vpnclient"]
    assert not (tmp_path / firewall.RECORD).exists()


def test_a_failed_replacement_keeps_the_kill_switch_in_place(tmp_path, monkeypatch):
    calls: list[list[str]] = []

    def fake_run(cmd, check=True, input=None):
        calls.append(cmd)
        if len(calls) > 1:  # nft's transaction fails whole: the first table stays
            raise NetconfError("nft -f -: Error: Could not process rule")
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(firewall.shutil, "which", lambda name: "/usr/sbin/nft")
    monkeypatch.setattr(firewall, "run", fake_run)
    ks = KillSwitch(tmp_path)
    ks.engage({4, 6}, [], [GATEWAY], OWNER)
    with pytest.raises(NetconfError, match="kill switch"):
        ks.attach("vpn0")
    assert ["nft", "delete", "table", "inet", "vpnclient"] not in calls
    assert ks.engaged and ks.record["tun"] is None
    assert json.loads((tmp_path / firewall.RECORD).read_text())["tun"] is None


# -- for real, in a namespace ------------------------------------------------------------
SETUP = """
import socket
from client.netconf.routes import DEFAULT_FWMARK
sh("ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth1")
sh("ip", "addr", "add", "192.0.2.2/24", "dev", "eth0")
sh("ip", "-6", "addr", "add", "2001:db8:2::2/64", "dev", "eth0", "nodad")
sh("ip", "link", "set", "eth0", "up")
sh("ip", "link", "set", "eth1", "up")
sh("ip", "route", "add", "198.51.100.0/24", "via", "192.0.2.1")
sh("ip", "route", "add", "203.0.113.0/24", "via", "192.0.2.1")
def sends(dest, mark=0):
    fam = socket.AF_INET6 if ":" in dest else socket.AF_INET
    with socket.socket(fam, socket.SOCK_DGRAM) as s:
        if mark:
            s.setsockopt(socket.SOL_SOCKET, 36, mark)
        try:
            s.sendto(b"x", (dest, 9))
            return True
        except OSError:
            return False
def tables():
    return sh("nft", "list", "tables")
"""


def require_nft() -> None:
    if shutil.which("nft") is None:
        pytest.skip("needs nft (Debian package nftables)")


def test_in_a_namespace_outside_traffic_is_rejected_until_lifted(tmp_path) -> None:
    with netns() as ns:
        require_nft()
        run_in(ns, SETUP + f"""
from ipaddress import ip_address
from client.netconf.firewall import KillSwitch, held
RD = Path({str(tmp_path)!r})
OWNER = {OWNER!r}
assert sends("203.0.113.7") and sends("2001:db8:2::1")
ks = KillSwitch(RD)
ks.engage({{4, 6}}, [ip_network("198.51.100.0/24")], [ip_address("192.0.2.1")], OWNER)
assert "table inet vpnclient" in tables()
assert not sends("203.0.113.7"), "unmarked IPv4 went out"
assert not sends("2001:db8:2::1"), "unmarked IPv6 went out"
assert sends("192.0.2.1", DEFAULT_FWMARK), "the tunnel's own packets were blocked"
assert not sends("203.0.113.7", DEFAULT_FWMARK), "marked packets reached a non-gateway"
ks.allow([ip_address("203.0.113.7")])  # e.g. a CRL server the certificate names
assert sends("203.0.113.7", DEFAULT_FWMARK) and not sends("203.0.113.8", DEFAULT_FWMARK)
assert sends("198.51.100.9"), "an excluded subnet was blocked"
assert sends("127.0.0.1") and sends("::1")
ks.attach("vpn0")
ks.hold("the gateway stopped answering")
assert not sends("203.0.113.7") and not sends("2001:db8:2::1")
assert tables().count("vpnclient") == 1
record = held(RD)
assert record["reason"] == "the gateway stopped answering" and record["owner"] == "alice"
assert record["tun"] is None
again = KillSwitch.adopt(RD)
assert again.engaged and again.allowed == ks.allowed
again.lift()
again.lift()
assert "vpnclient" not in tables()
assert sends("203.0.113.7") and sends("2001:db8:2::1")
assert not (RD / "killswitch.json").exists() and held(RD) is None
""")


def test_in_a_namespace_a_crashed_runs_kill_switch_survives_the_next_start(tmp_path):
    """Fail closed: a dead run's kill switch is adopted, not undone, by the next start;
    the routes it left are undone as before."""
    with netns() as ns:
        require_nft()
        child = subprocess.Popen(
            ns_python(ns, SETUP + f"""
from ipaddress import ip_address
from client.netconf.firewall import KillSwitch
from client.netconf.journal import Journal
KillSwitch(Path({str(tmp_path)!r})).engage({{4}}, [], [ip_address("192.0.2.1")], {OWNER!r})
Journal(Path({str(tmp_path)!r})).record("other", {{}})
print("ready", flush=True)
time.sleep(120)
"""),
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        try:
            assert child.stdout.readline().strip() == "ready", child.stderr.read()
        finally:
            child.kill()
            child.wait()
        run_in(ns, f"""
from client.netconf.firewall import blocked_status, held
from client.netconf.journal import cleanup_stale
RD = Path({str(tmp_path)!r})
assert "table inet vpnclient" in sh("nft", "list", "tables")  # the dead run's
assert cleanup_stale(RD) is True
assert "table inet vpnclient" in sh("nft", "list", "tables"), "a crash lifted it"
assert not (RD / "netconf.json").exists()
status = blocked_status(held(RD))
assert status["state"] == "blocked" and status["lift_with"] == "vpnclient disconnect"
(RD / "killswitch.json").unlink()  # a service manager emptied the runtime directory
status = blocked_status(held(RD))
assert status["state"] == "blocked", "a table without its record went unreported"
sh("nft", "delete", "table", "inet", "vpnclient")  # removed by hand: record forgotten
assert held(RD) is None and not (RD / "killswitch.json").exists()
""")


def test_reconnecting_without_dns_uses_the_gateways_last_address(tmp_path, monkeypatch):
    """The kill switch rejects DNS outside the tunnel while it is down: a gateway name
    resolved before is tried at its last address; a first connect still fails."""
    import asyncio

    from client import engine as engine_mod
    from client.engine import Engine, Secrets
    from client.ikev2.errors import PeerUnreachable

    answers: list[str | None] = ["198.51.100.7", None]

    async def resolve(loop, host, port, ipv6):
        answer = answers.pop(0)
        if answer is None:
            raise PeerUnreachable(f"cannot resolve {host}: rejected")
        return answer

    monkeypatch.setattr(engine_mod.transport, "resolve", resolve)
    profile = profile_from_dict({
        "uuid": "2b5a0e4e-3f1a-4e55-9d7e-1c2d3e4f5a6b", "name": "t", "type": "ikev2-eap",
        "remote": {"addr": "vpn.example.com"}, "kill-switch": True})
    engine = Engine(profile, Secrets(), tmp_path, progress=lambda _: None)

    async def main() -> None:
        engine.loop = asyncio.get_running_loop()
        assert await engine._resolve("vpn.example.com", 500) == "198.51.100.7"
        engine.reconnecting = True
        assert await engine._resolve("vpn.example.com", 500) == "198.51.100.7"
        with pytest.raises(PeerUnreachable):  # never resolved: nothing to fall back on
            answers.append(None)
            await engine._resolve("other.example.com", 500)

    asyncio.run(main())
