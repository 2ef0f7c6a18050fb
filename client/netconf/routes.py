"""Addresses, routes and policy rules for the tunnel (Linux, rtnetlink), wg-quick style.

The tunnel's own UDP socket carries SO_MARK=fwmark. Everything else is looked up in our
table by the rule `not fwmark F lookup T`; the table holds `dev TUN` routes for the tunneled
networks and `throw` routes for the excluded ones (throw = continue with the main table).
For a full tunnel (a /0 route) the rule `lookup main suppress_prefixlength 0` goes first,
so that the main table's specific routes (local LAN, link routes) still win over our
default route. For a split tunnel it is left out: the tunneled networks win over any main
route, as IPsec policies would; users exclude what must stay local.

The changes go to the kernel over rtnetlink (netconf/rtnl.py) as the equivalent `ip`
commands would send them; errors and the journal name them as those commands.
"""

from __future__ import annotations

import logging
from ipaddress import IPv4Interface, IPv4Network, IPv6Interface, IPv6Network
from pathlib import Path
from typing import Any

from client.netconf import rtnl
from client.netconf.journal import Journal, NetconfError

__all__ = ["NetconfError", "RouteManager", "undo"]

log = logging.getLogger(__name__)

DEFAULT_TABLE = 22096  # 0x5650 ("VP")
DEFAULT_FWMARK = 0x5650
DEFAULT_PRIORITY = 22096  # the suppress rule takes PRIORITY - 1; main is at 32766


REPLACE = rtnl.NLM_F_CREATE | rtnl.NLM_F_REPLACE


class RouteManager:
    def __init__(
        self,
        tun_name: str,
        table: int = DEFAULT_TABLE,
        fwmark: int = DEFAULT_FWMARK,
        priority: int = DEFAULT_PRIORITY,
        runtime_dir: Path | None = None,
    ) -> None:
        self.tun_name = tun_name
        self.table = table
        self.fwmark = fwmark
        self.priority = priority
        self._journal = Journal(runtime_dir) if runtime_dir is not None else None
        self._state: dict[str, Any] | None = None

    def apply(
        self,
        addresses: list[IPv4Interface | IPv6Interface],
        routes: list[IPv4Network | IPv6Network],
        excluded: list[IPv4Network | IPv6Network],
        mtu: int,
    ) -> None:
        """Bring the TUN up with its addresses and route `routes` (minus `excluded`) into it."""
        if self._state is not None:
            raise NetconfError("routes already applied; restore() first")
        families = sorted({a.version for a in addresses})
        table = str(self.table)
        rules: list[list[str]] = []
        for fam in families:
            fam_routes = [n for n in routes if n.version == fam]
            if any(n.prefixlen == 0 for n in fam_routes):
                rules.append(
                    [
                        str(fam),
                        "table",
                        "main",
                        "suppress_prefixlength",
                        "0",
                        "priority",
                        str(self.priority - 1),
                    ]
                )
            if fam_routes:
                rules.append(
                    [
                        str(fam),
                        "not",
                        "fwmark",
                        hex(self.fwmark),
                        "table",
                        table,
                        "priority",
                        str(self.priority),
                    ]
                )
        skipped = [n for n in (*routes, *excluded) if n.version not in families]
        if skipped:
            log.info(
                "no tunnel address of their IP version; not routing %s",
                ", ".join(map(str, skipped)),
            )
        state = {"tun": self.tun_name, "table": self.table, "families": families, "rules": rules}
        # Journal first: a crash from here on is undone by cleanup_stale(). Not synced
        # to disk: a process crash leaves the page cache intact, and after a machine
        # crash none of these kernel changes exists any more.
        if self._journal is not None:
            self._journal.record("routes", state, durable=False)
        self._state = state
        dev = self.tun_name
        try:
            with rtnl.Rtnl() as nl:
                index = rtnl.ifindex(dev)
                nl.request(f"ip link set dev {dev} mtu {mtu} up", rtnl.RTM_NEWLINK,
                           rtnl.link_up(index, mtu))
                for a in addresses:
                    nl.request(f"ip -{a.version} addr replace {a} dev {dev}", rtnl.RTM_NEWADDR,
                               rtnl.address(a, index), REPLACE)
                for n in routes:
                    if n.version in families:
                        nl.request(f"ip -{n.version} route replace {n} dev {dev} table {table}",
                                   rtnl.RTM_NEWROUTE, rtnl.route(n, self.table, index), REPLACE)
                for n in excluded:
                    if n.version in families:
                        nl.request(f"ip -{n.version} route replace throw {n} table {table}",
                                   rtnl.RTM_NEWROUTE, rtnl.route(n, self.table, None), REPLACE)
                for fam, *args in rules:
                    nl.request(f"ip -{fam} rule add {' '.join(args)}", rtnl.RTM_NEWRULE,
                               rtnl.rule(int(fam), args), rtnl.NLM_F_CREATE | rtnl.NLM_F_EXCL)
        except NetconfError:
            self.restore()
            raise

    def restore(self) -> None:
        """Remove every rule and route added by apply(); safe to call more than once."""
        if self._state is None:
            return
        undo(self._state)
        self._state = None
        if self._journal is not None:
            self._journal.forget("routes")


def undo(state: dict[str, Any]) -> None:
    """Remove the rules/routes described by a journal entry, ignoring what is already gone."""
    try:
        nl = rtnl.Rtnl()
    except NetconfError as e:
        log.error("cannot remove the tunnel's routes: %s", e)
        return
    with nl:
        # Each step on its own: one failing must not keep the others from running.
        for fam, *args in state.get("rules", []):
            nl.request("ip rule del", rtnl.RTM_DELRULE, rtnl.rule(int(fam), args), check=False)
        table = int(state.get("table", DEFAULT_TABLE))
        for fam in state.get("families", []):
            try:
                nl.flush_table(int(fam), table)
            except NetconfError as e:
                log.error("flushing routing table %d: %s", table, e)
        tun = state.get("tun")
        if tun:  # the addresses go with the device; flush them in case it lives on
            try:
                index = rtnl.ifindex(str(tun))
            except NetconfError:
                return  # the device is gone, and its addresses with it
            try:
                nl.flush_addresses(index)
            except NetconfError as e:
                log.error("flushing the addresses of %s: %s", tun, e)
