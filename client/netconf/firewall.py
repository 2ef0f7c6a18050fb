"""The kill switch (profile `kill-switch`, `split-tunneling.block-ipv4`/`-ipv6`): an
nftables table that rejects traffic of the blocked IP versions unless it leaves through
the tunnel, and which fails closed.

One table, `inet vpnclient`, installed and replaced in one `nft -f -` transaction and
removed with one `nft delete table`: no window without it while it is updated. Its
output and forward hooks accept loopback, the TUN device once there is one (in either
direction when forwarding), packets with the tunnel's firewall mark (our IKE, ESP, NAT
keepalives, path probes and revocation fetches) but only to the addresses the profile
or the gateway's certificate names, what keeps the link up (DHCP, IPv6 neighbour
discovery and MLD reports) and the profile's `split-tunneling.excluded` subnets; the
rest of a blocked IP version is rejected, not dropped, so that applications fail at
once instead of timing out. Another table's accept cannot override a reject here: a
packet must pass every base chain on its hook.

Its lifecycle is not the tunnel's. It is engaged before the first IKE packet and held
through reconnects, roaming, a give-up and a crash of whoever engaged it: only an
explicit user action lifts it (a disconnect, a connect with a profile that does not
block). RUNTIME_DIR/killswitch.json records who engaged it and why it is held, for
`status` (state `blocked`) and for the next start, which adopts it instead of undoing
it. /run is a tmpfs: a reboot starts clean, unless an always-on profile engages it
again as the daemon starts.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from collections.abc import Collection, Iterable, Sequence
from datetime import UTC, datetime
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network
from pathlib import Path
from typing import Any

from client.netconf.journal import NetconfError, run
from client.netconf.routes import DEFAULT_FWMARK

__all__ = ["KillSwitch", "blocked_status", "held", "ruleset", "undo"]

log = logging.getLogger(__name__)

TABLE = "inet vpnclient"
REJECT = "reject with icmpx type admin-prohibited"  # EHOSTUNREACH/EPERM at once
ND_MLD = "nd-router-solicit, nd-neighbor-solicit, nd-neighbor-advert, mld2-listener-report"
_IFNAME = re.compile(r"[A-Za-z0-9_.-]{1,15}")
_FAMILY = {4: ("ipv4", "ip"), 6: ("ipv6", "ip6")}


def ruleset(tun: str | None, block: Collection[int],
            excluded: Sequence[IPv4Network | IPv6Network] = (),
            fwmark: int = DEFAULT_FWMARK,
            allowed: Collection[IPv4Address | IPv6Address] = ()) -> str:
    """The `nft -f` script that creates (or atomically replaces) the table blocking the
    IP versions in `block` (4, 6) outside the tunnel on `tun` (None: no tunnel yet, or
    none any more), whose marked packets may reach only `allowed`."""
    if tun is not None and not _IFNAME.fullmatch(tun):
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
    marked, exempt_dst, exempt_src, reject = [], [], [], []
    for fam in families:
        proto, match = _FAMILY[fam]
        peers = ", ".join(sorted(str(a) for a in allowed if a.version == fam))
        if peers:
            marked.append(f"meta mark {fwmark:#010x} {match} daddr {{ {peers} }} accept")
        nets = ", ".join(str(n) for n in excluded if n.version == fam)
        if nets:
            exempt_dst.append(f"{match} daddr {{ {nets} }} accept")
            exempt_src.append(f"{match} saddr {{ {nets} }} accept")
        reject.append(f"meta nfproto {proto} {REJECT}")
    via_tun = [f'oifname "{tun}" accept'] if tun else []
    output = ['oifname "lo" accept', *via_tun, *marked, *link, *exempt_dst, *reject]
    # Forwarded traffic (containers, VMs, a shared connection) goes into the tunnel or
    # comes back out of it; to and from excluded subnets both ways, as the routes do.
    forward = [*([f'iifname "{tun}" accept'] if tun else []), *via_tun,
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


RECORD = "killswitch.json"
LIFT_WITH = "vpnclient disconnect"
Address = IPv4Address | IPv6Address


class KillSwitch:
    """The kill switch of the profile being connected, held until lifted on purpose."""

    def __init__(self, runtime_dir: Path, fwmark: int = DEFAULT_FWMARK) -> None:
        self.path = Path(runtime_dir) / RECORD
        self.fwmark = fwmark
        self.record: dict[str, Any] = {}  # empty: not engaged

    @property
    def engaged(self) -> bool:
        return bool(self.record)

    @property
    def allowed(self) -> set[Address]:
        return {ip_address(a) for a in self.record.get("allowed", [])}

    @classmethod
    def adopt(cls, runtime_dir: Path, fwmark: int = DEFAULT_FWMARK) -> KillSwitch:
        """The kill switch an earlier run (or this daemon) left in place, if any."""
        ks = cls(runtime_dir, fwmark)
        ks.record = held(runtime_dir) or {}
        return ks

    def engage(self, block: Collection[int], excluded: Sequence[IPv4Network | IPv6Network],
               allowed: Iterable[Address], owner: dict[str, Any],
               resolved: dict[str, str] | None = None) -> None:
        """Install (or atomically replace) the table for a connect starting now;
        NetconfError naming the kill switch if nft is missing or refuses, with nothing
        left behind unless a held kill switch was already in place."""
        record = {
            "table": TABLE, "block": sorted(set(block)),
            "excluded": [str(n) for n in excluded],
            "allowed": sorted({str(a) for a in allowed}), "tun": None,
            "resolved": dict(resolved or {}), "pid": os.getpid(), "reason": None,
            "since": datetime.now(UTC).isoformat(timespec="seconds"), **owner,
        }
        self._install(record)

    def attach(self, tun: str | None) -> None:
        """Let traffic through the tunnel's TUN device (None: there is none now)."""
        if self.engaged and self.record.get("tun") != tun:
            self._install({**self.record, "tun": tun})

    def allow(self, addrs: Iterable[Address], resolved: dict[str, str] | None = None) -> None:
        """Let the tunnel's own (marked) packets reach `addrs` too."""
        if not self.engaged:
            return
        new = {str(a) for a in addrs} - set(self.record["allowed"])
        merged = {**self.record.get("resolved", {}), **(resolved or {})}
        if new or merged != self.record.get("resolved"):
            self._install({**self.record, "allowed": sorted({*self.record["allowed"], *new}),
                           "resolved": merged})

    def hold(self, reason: str) -> None:
        """The connection ended without the user asking: keep blocking, say why."""
        if self.engaged:
            self._install({**self.record, "tun": None, "reason": reason,
                           "pid": os.getpid(),
                           "since": datetime.now(UTC).isoformat(timespec="seconds")})
            log.warning("kill switch held: traffic outside the tunnel stays blocked until "
                        "`%s` (%s)", LIFT_WITH, reason)

    def lift(self) -> None:
        """Remove the table and the record; safe to call more than once."""
        if not self.engaged and not self.path.exists():
            return
        undo({"table": TABLE})
        self.path.unlink(missing_ok=True)
        if self.record:
            log.info("kill switch lifted")
        self.record = {}

    def _install(self, record: dict[str, Any]) -> None:
        script = ruleset(record["tun"], record["block"],
                         [ip_network(n) for n in record["excluded"]], self.fwmark,
                         [ip_address(a) for a in record["allowed"]])
        if shutil.which("nft") is None:
            raise NetconfError("kill switch: nft not found (install the nftables package)")
        first = not self.engaged
        # The record first: a crash between the two leaves a record the next start
        # verifies against the kernel (held()), never a table nobody knows about.
        _write(self.path, record)
        try:
            run(["nft", "-f", "-"], input=script)
        except NetconfError as e:
            if first:  # else the transaction failed whole: the table in place stays
                self.record = record
                self.lift()
            else:
                _write(self.path, self.record)
            raise NetconfError(f"kill switch: cannot install the firewall: {e}") from e
        if first:
            log.info("kill switch on: IPv%s outside the tunnel rejected",
                     "/IPv".join(str(f) for f in record["block"]))
        self.record = record


def held(runtime_dir: Path) -> dict[str, Any] | None:
    """The record of the kill switch in place, if its table really is; a record whose
    table is gone (removed by hand) is forgotten."""
    path = Path(runtime_dir) / RECORD
    record: Any = None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        if os.geteuid() != 0:
            return None
        # The record went (a runtime directory removed by a service manager) but a
        # table may still be blocking: it is found below and reported, not ignored.
    except (OSError, ValueError) as e:
        record = None
        log.warning("unreadable kill switch record %s: %s", path, e)
    if os.geteuid() != 0:  # only root may list the table: a user takes the record's word
        return record if isinstance(record, dict) else None
    if not _table_present():
        if record is not None:
            log.warning("the kill switch's table is gone; forgetting its record")
        path.unlink(missing_ok=True)
        return None
    if not isinstance(record, dict) or not isinstance(record.get("block"), list):
        # A table without a usable record still blocks: keep it, and say so.
        return {"table": TABLE, "block": [4, 6], "excluded": [], "allowed": [], "tun": None,
                "resolved": {}, "reason": "a kill switch of an earlier run", "pid": None}
    return record


BLOCKED_KEYS = ("kill_switch", "blocked_reason", "blocked_since", "lift_with")


def blocked_status(record: dict[str, Any]) -> dict[str, Any]:
    """What `status` adds for a held kill switch (state `blocked`)."""
    reason = record.get("reason") or "the connection ended unexpectedly"
    return {"state": "blocked", "profile": record.get("profile"), "uuid": record.get("uuid"),
            "last_error": reason, "kill_switch": True, "blocked_reason": reason,
            "blocked_since": record.get("since"), "lift_with": LIFT_WITH,
            "owner": record.get("owner"), "owner_uid": record.get("owner_uid")}


def _table_present() -> bool:
    res = run(["nft", "list", "table", *TABLE.split()], check=False)
    return res.returncode == 0


def _write(path: Path, record: dict[str, Any]) -> None:
    # Not synced: /run does not outlive the machine, and neither does the table.
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=1), encoding="utf-8")
    tmp.chmod(0o644)  # status of a blocked machine is for every local user to see
    os.replace(tmp, path)


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
