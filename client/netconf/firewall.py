"""The kill switch (profile `kill-switch`, `split-tunneling.block-ipv4`/`-ipv6`): an
nftables table that rejects traffic of the blocked IP versions unless it leaves through
the tunnel.

One table, `inet vpnclient`, installed and replaced in one `nft -f -` transaction and
removed with one `nft delete table`: no window without it while it is updated, and
nothing else to find after a crash. Its output and forward hooks accept loopback, the
TUN device (in either direction when forwarding), packets with the tunnel's firewall
mark (our IKE, ESP, NAT keepalives and path probes: the tunnel itself, reconnects and
MOBIKE keep working), what keeps the link up (DHCP, IPv6 neighbour discovery and MLD
reports) and the profile's `split-tunneling.excluded` subnets; the rest of a blocked
IP version is rejected, not dropped, so that applications fail at once instead of
timing out. Another table's accept cannot override a reject here: a packet must pass
every base chain on its hook.
"""

from __future__ import annotations

import logging
import re
import shutil
from collections.abc import Collection, Sequence
from ipaddress import IPv4Network, IPv6Network
from pathlib import Path
from typing import Any

from client.netconf.journal import Journal, NetconfError, run
from client.netconf.routes import DEFAULT_FWMARK

__all__ = ["Firewall", "ruleset", "undo"]

log = logging.getLogger(__name__)

TABLE = "inet vpnclient"
REJECT = "reject with icmpx type admin-prohibited"  # EHOSTUNREACH/EPERM at once
ND_MLD = "nd-router-solicit, nd-neighbor-solicit, nd-neighbor-advert, mld2-listener-report"
_IFNAME = re.compile(r"[A-Za-z0-9_.-]{1,15}")
_FAMILY = {4: ("ipv4", "ip"), 6: ("ipv6", "ip6")}


def ruleset(tun: str, block: Collection[int],
            excluded: Sequence[IPv4Network | IPv6Network] = (),
            fwmark: int = DEFAULT_FWMARK) -> str:
    """The `nft -f` script that creates (or atomically replaces) the table for a tunnel
    on `tun` blocking the IP versions in `block` (4, 6)."""
    if not _IFNAME.fullmatch(tun):
        raise NetconfError(f"kill switch: unexpected interface name {tun!r}")
    families = sorted(set(block))
    if not families or not set(families) <= {4, 6}:
        raise NetconfError(f"kill switch: nothing to block ({block!r})")
    link = []  # what keeps the link itself working, per blocked version
    if 4 in families:
        link.append("meta nfproto ipv4 udp sport 68 udp dport 67 accept")
    if 6 in families:
        link.append("meta nfproto ipv6 udp sport 546 udp dport 547 accept")
        link.append(f"icmpv6 type {{ {ND_MLD} }} accept")
    exempt_dst, exempt_src, reject = [], [], []
    for fam in families:
        proto, match = _FAMILY[fam]
        nets = ", ".join(str(n) for n in excluded if n.version == fam)
        if nets:
            exempt_dst.append(f"{match} daddr {{ {nets} }} accept")
            exempt_src.append(f"{match} saddr {{ {nets} }} accept")
        reject.append(f"meta nfproto {proto} {REJECT}")
    output = ['oifname "lo" accept', f'oifname "{tun}" accept',
              f"meta mark {fwmark:#010x} accept", *link, *exempt_dst, *reject]
    # Forwarded traffic (containers, VMs, a shared connection) goes into the tunnel or
    # comes back out of it; to and from excluded subnets both ways, as the routes do.
    forward = [f'iifname "{tun}" accept', f'oifname "{tun}" accept',
               *exempt_dst, *exempt_src, *reject]
    return "\n".join([
        # "add, delete, add" in one transaction: replaces a table left behind, if any.
        f"table {TABLE}",
        f"delete table {TABLE}",
        f"table {TABLE} {{",
        *_chain("output", output),
        *_chain("forward", forward),
        "}",
        "",
    ])


def _chain(hook: str, rules: list[str]) -> list[str]:
    return [f"\tchain {hook} {{",
            f"\t\ttype filter hook {hook} priority filter; policy accept;",
            *(f"\t\t{r}" for r in rules),
            "\t}"]


class Firewall:
    """The kill switch of one tunnel: apply() once it is up, restore() when it ends."""

    def __init__(self, tun_name: str, fwmark: int = DEFAULT_FWMARK,
                 runtime_dir: Path | None = None) -> None:
        self.tun_name = tun_name
        self.fwmark = fwmark
        self._journal = Journal(runtime_dir) if runtime_dir is not None else None
        self.applied = False

    def apply(self, block: Collection[int],
              excluded: Sequence[IPv4Network | IPv6Network] = ()) -> None:
        """Install (or atomically replace) the table; NetconfError naming the kill switch
        if nft is missing or refuses, with nothing left behind."""
        script = ruleset(self.tun_name, block, excluded, self.fwmark)
        if shutil.which("nft") is None:
            raise NetconfError("kill switch: nft not found (install the nftables package)")
        # Journal first, not synced: a crashed process's table is undone at the next
        # start; a crashed machine has none.
        if self._journal is not None:
            self._journal.record("firewall", {"table": TABLE}, durable=False)
        first, self.applied = not self.applied, True
        try:
            run(["nft", "-f", "-"], input=script)
        except NetconfError as e:
            if first:  # else the transaction failed whole: the table in place stays
                self.restore()
            raise NetconfError(f"kill switch: cannot install the firewall: {e}") from e
        log.info("kill switch on: IPv%s outside %s rejected",
                 "/IPv".join(str(f) for f in sorted(set(block))), self.tun_name)

    def restore(self) -> None:
        """Remove the table; safe to call more than once."""
        if not self.applied:
            return
        undo({"table": TABLE})
        self.applied = False
        if self._journal is not None:
            self._journal.forget("firewall")


def undo(state: dict[str, Any]) -> None:
    """Delete the table a journal entry names; one that is already gone is fine."""
    table = state.get("table", TABLE)
    if table != TABLE:  # never delete anything else a corrupt journal might name
        log.error("not removing unexpected firewall table %r", table)
        return
    res = run(["nft", "delete", "table", *table.split()], check=False)
    gone = res.returncode == 1 and "No such file" in res.stderr  # nft's "no such table"
    if res.returncode != 0 and not gone:
        log.error("removing the kill switch (nft delete table %s): %s", table,
                  res.stderr.strip() or f"exit {res.returncode}")
