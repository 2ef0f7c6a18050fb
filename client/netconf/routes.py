"""Addresses, routes and policy rules for the tunnel (Linux, iproute2), wg-quick style.

The tunnel's own UDP socket carries SO_MARK=fwmark. Everything else is looked up in our
table by the rule `not fwmark F lookup T`; the table holds `dev TUN` routes for the tunneled
networks and `throw` routes for the excluded ones (throw = continue with the main table).
For a full tunnel (a /0 route) the rule `lookup main suppress_prefixlength 0` goes first,
so that the main table's specific routes (local LAN, link routes) still win over our
default route. For a split tunnel it is left out: the tunneled networks win over any main
route, as IPsec policies would; users exclude what must stay local.
"""

from __future__ import annotations

import logging
from ipaddress import IPv4Interface, IPv4Network, IPv6Interface, IPv6Network
from pathlib import Path
from typing import Any

from client.netconf.journal import Journal, NetconfError, run

__all__ = ["NetconfError", "RouteManager", "undo"]

log = logging.getLogger(__name__)

DEFAULT_TABLE = 22096  # 0x5650 ("VP")
DEFAULT_FWMARK = 0x5650
DEFAULT_PRIORITY = 22096  # the suppress rule takes PRIORITY - 1; main is at 32766


def _ip(family: int, *args: str, check: bool = True) -> bool:
    return run(["ip", f"-{family}", *args], check=check).returncode == 0


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
        # Journal first: a crash from here on is undone by cleanup_stale().
        if self._journal is not None:
            self._journal.record("routes", state)
        self._state = state
        try:
            run(["ip", "link", "set", "dev", self.tun_name, "mtu", str(mtu), "up"])
            for a in addresses:
                _ip(a.version, "addr", "replace", str(a), "dev", self.tun_name)
            for n in routes:
                if n.version in families:
                    _ip(n.version, "route", "replace", str(n), "dev", self.tun_name, "table", table)
            for n in excluded:
                if n.version in families:
                    _ip(n.version, "route", "replace", "throw", str(n), "table", table)
            for fam, *args in rules:
                _ip(int(fam), "rule", "add", *args)
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
    for fam, *args in state.get("rules", []):
        _ip(int(fam), "rule", "del", *args, check=False)
    table = str(state.get("table", DEFAULT_TABLE))
    for fam in state.get("families", []):
        _ip(int(fam), "route", "flush", "table", table, check=False)
    tun = state.get("tun")
    if tun:  # the addresses go with the device; flush them in case it lives on
        run(["ip", "addr", "flush", "dev", str(tun)], check=False)
