"""The tunnel across network changes: MOBIKE, re-establishment, waiting for a path.

netmon says that links, addresses or routes changed; pathsel asks the kernel where the
tunnel's packets to the gateway would now leave from. When that is another local address
(or the first one after an outage):

- New sockets along the new path replace the engine's, so ESP follows at once (the data
  plane sends through the engine's NAT-T socket of the moment) and so do IKE messages,
  retransmissions included. The old sockets are still read until the move is complete:
  the gateway keeps sending to the old address until then.
- With MOBIKE (the gateway announced it) the IKE SA sends UPDATE_SA_ADDRESSES from the
  new address (tasks/ike_mobike.py); the ESP SAs move with it, nothing is renegotiated.
  A refused address is set aside and the next candidate tried.
- Without MOBIKE (the gateway lacks it, or the profile says "mobike": false) a new IKE SA
  is built on the new path, make-before-break, by the engine's reauthentication: the TUN
  device, routes and DNS stay.
- No path at all: the SAs are kept and the first usable address resumes them. After a
  grace period (VPNCLIENT_ROAM_GRACE seconds, default 120) the IKE SA is given up and the
  engine reconnects from scratch, as after a dead gateway.

NAT-T keepalives follow the NAT state each move reports.
"""

from __future__ import annotations

import logging
import os
import socket
from typing import TYPE_CHECKING

from .ikev2.constants import IKE_PORT, NATT_PORT
from .ikev2.errors import PeerUnreachable
from .ikev2.events import AddressesUpdated, AddressUpdateFailed
from .ikev2.ike_sa import IkeSA, State
from .netconf.routes import DEFAULT_FWMARK, DEFAULT_TABLE
from .netmon import NetMonitor
from .pathsel import local_addresses, open_path

if TYPE_CHECKING:
    import asyncio

    from .engine import Engine

log = logging.getLogger(__name__)

GRACE_ENV = "VPNCLIENT_ROAM_GRACE"
DEFAULT_GRACE = 120.0
LINGER = 3.0  # seconds the old sockets are still read after a move: packets in flight


def grace_from_env() -> float:
    text = os.environ.get(GRACE_ENV, "")
    try:
        value = float(text) if text else DEFAULT_GRACE
    except ValueError:
        log.warning("%s=%r is not a number of seconds; using %.0f", GRACE_ENV, text,
                    DEFAULT_GRACE)
        return DEFAULT_GRACE
    return max(value, 0.0)


class Roamer:
    """Follows the network under the engine's tunnel (see the module docstring)."""

    def __init__(self, engine: Engine, grace: float | None = None) -> None:
        self.engine = engine
        self.grace = grace_from_env() if grace is None else grace
        self.monitor: NetMonitor | None = None
        self.paused_since: float | None = None
        self._give_up_timer: asyncio.TimerHandle | None = None
        self._old: list[socket.socket] = []  # replaced sockets, read until the move is done
        self._linger: asyncio.TimerHandle | None = None
        self.refused: set[str] = set()  # local addresses the gateway would not take
        self._addresses: list[str] = []  # our addresses at the last look
        self.announced: tuple[IkeSA, list[str]] | None = None  # what the gateway knows
        self.reestablishing = False  # a new IKE SA is being built on the new path
        self._reconnect_source: str | None = None  # the path at the last look, reconnecting

    # -- wiring -----------------------------------------------------------------------
    def start(self) -> None:
        loop = self.engine.loop
        assert loop is not None
        self.monitor = NetMonitor(loop, self.check, self._ignored_ifindexes, {DEFAULT_TABLE})
        self.monitor.start()

    def stop(self) -> None:
        if self.monitor is not None:
            self.monitor.stop()
        self._cancel_give_up()
        self.drop_sockets()

    def drop_sockets(self) -> None:
        """The engine closes its sockets (an attempt ended): the old ones go as well."""
        self._close_old()
        self.reestablishing = False
        if self.paused_since is not None:
            self._cancel_give_up()
            self.paused_since = None

    def _ignored_ifindexes(self) -> set[int]:
        tun = self.engine.tunnel.tun
        if tun is None:
            return set()
        try:
            return {socket.if_nametoindex(tun.name)}
        except OSError:
            return set()

    def _tun_name(self) -> set[str]:
        tun = self.engine.tunnel.tun
        return {tun.name} if tun is not None else set()

    def additional_addresses(self) -> list[str]:
        """Our addresses other than the one the tunnel uses now (RFC 4555)."""
        natt = self.engine.socks.get("natt")
        current = natt.getsockname()[0] if natt is not None else None
        return [a for a in local_addresses(self._tun_name()) if a != current]

    # -- the network changed ------------------------------------------------------------
    def check(self) -> None:
        """Look where the tunnel's packets would go now and follow (netmon's callback)."""
        e = self.engine
        if e.disconnect_requested or e.loop is None or e.gateway is None:
            return
        addresses = local_addresses(self._tun_name())
        if addresses != self._addresses:
            self._addresses = addresses
            self.refused.clear()  # a new network: the gateway may well take them now
        if e.reconnecting:
            # A new path (not any event) ends a backoff wait: try again at once.
            probe = self._open_best()
            source = probe.getsockname()[0] if probe is not None else None
            if probe is not None:
                probe.close()
            if source is not None and source != self._reconnect_source:
                log.info("a network path from %s: reconnecting now", source)
                e._wake.set()  # see engine._sleep
            self._reconnect_source = source
            return
        self._reconnect_source = None
        sa = e.sa
        natt = e.socks.get("natt")
        if sa is None or sa.state is not State.ESTABLISHED or natt is None:
            return
        chosen = self._open_best()
        if chosen is None:
            self._no_path()
            return
        if chosen.getsockname()[0] == natt.getsockname()[0] and self.paused_since is None:
            chosen.close()
            self._announce(sa)
            return
        self._move(chosen)

    def _natt_dest(self) -> tuple[str, int]:
        """Where ESP and IKE go once established: port 500 floats to 4500."""
        gateway = self.engine.gateway
        assert gateway is not None
        return gateway[0], NATT_PORT if gateway[1] == IKE_PORT else gateway[1]

    def _open_best(self) -> socket.socket | None:
        """A socket on the kernel's path to the gateway, or from the next address the
        gateway has not refused; None when no address has a path."""
        dest = self._natt_dest()
        try:
            sock = open_path(dest, DEFAULT_FWMARK)
        except OSError as exc:
            log.debug("no path to %s:%d: %s", *dest, exc)
            return None
        if sock.getsockname()[0] not in self.refused:
            return sock
        sock.close()
        family = socket.AF_INET6 if ":" in dest[0] else socket.AF_INET
        for addr in local_addresses(self._tun_name(), family):
            if addr in self.refused:
                continue
            try:
                return open_path(dest, DEFAULT_FWMARK, source=addr)
            except OSError:
                continue
        return None

    def _move(self, natt: socket.socket) -> None:
        """Put the engine's traffic on `natt` (and a matching IKE socket), then tell the
        gateway: MOBIKE, or a new IKE SA."""
        e = self.engine
        loop, sa, gateway = e.loop, e.sa, e.gateway
        assert loop is not None and sa is not None and gateway is not None
        local = natt.getsockname()[:2]
        ike = natt
        if gateway[1] == IKE_PORT:
            try:
                ike = open_path(gateway, DEFAULT_FWMARK, source=local[0])
            except OSError as exc:
                log.info("no IKE socket on the new path: %s", exc)
                natt.close()
                self._no_path()
                return
        self._retire(e.socks.get("ike"), e.socks.get("natt"))
        e.socks["natt"], e.socks["ike"] = natt, ike
        loop.add_reader(natt.fileno(), e._on_natt_readable)
        if ike is not natt:
            loop.add_reader(ike.fileno(), e._on_ike_readable)
        if self.paused_since is not None:
            self._resume()
        additional = self.additional_addresses()
        if sa.peer_mobike:
            e.progress(f"network changed: moving the tunnel to {local[0]} (MOBIKE)")
            sa.update_addresses((local[0], local[1]), loop.time(), additional)
            self.announced = (sa, additional)
            e._pump(sa)
        else:
            self._reestablish(local[0])

    def _retire(self, ike: socket.socket | None, natt: socket.socket | None) -> None:
        """Keep reading the replaced sockets (the gateway may still answer there)."""
        loop = self.engine.loop
        assert loop is not None
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        for sock, is_natt in ((natt, True), (ike, False)):
            if sock is None or sock in self._old:
                continue
            if is_natt is False and sock is natt:
                continue
            loop.remove_reader(sock.fileno())
            natt_port = is_natt or self.engine.use_natt_port
            loop.add_reader(sock.fileno(), self.engine._drain, sock, natt_port)
            self._old.append(sock)

    def _linger_then_close(self) -> None:
        """The move is complete: the old sockets go once what was in flight is in."""
        loop = self.engine.loop
        if loop is None or not self._old:
            return
        if self._linger is not None:
            self._linger.cancel()
        self._linger = loop.call_later(LINGER, self._close_old)

    def _close_old(self) -> None:
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        loop = self.engine.loop
        for sock in self._old:
            if loop is not None:
                loop.remove_reader(sock.fileno())
            sock.close()
        self._old.clear()

    def _announce(self, sa: IkeSA) -> None:
        """Same path, other addresses changed: the gateway gets the new list."""
        if not sa.peer_mobike or self.engine.loop is None:
            return
        additional = self.additional_addresses()
        if self.announced is not None and self.announced[0] is sa:
            known = self.announced[1]
        else:
            known = list(sa.config.additional_addresses)  # as IKE_AUTH said
        if additional == known:
            return
        self.announced = (sa, additional)
        sa.announce_addresses(additional, self.engine.loop.time())
        self.engine._pump(sa)

    # -- without MOBIKE: a new IKE SA on the new path --------------------------------------
    def _reestablish(self, local: str) -> None:
        e = self.engine
        stale = e.reauth_sa
        if stale is not None:  # one under way on the old path: start over on the new one
            e._drop_sa(stale)
            e.reauth_sa = None
        self.reestablishing = True
        why = "the gateway does not support MOBIKE" if e.profile.mobike else "MOBIKE is off"
        e.progress(f"network changed: re-establishing the tunnel from {local} ({why})")
        e._start_reauth()

    def on_reestablished(self, sa: IkeSA) -> None:
        """The engine moved the tunnel to a new IKE SA (after a move, or reauthentication)."""
        e = self.engine
        e.status["nat_detected"] = sa.nat_local
        self._keepalive(sa.nat_local)
        if not self.reestablishing:
            return
        self.reestablishing = False
        natt = e.socks.get("natt")
        if natt is not None:
            e.status["local_address"] = natt.getsockname()[0]
        e.status["roams"] += 1
        e.progress(f"roamed: the tunnel now runs from {e.status['local_address']}")
        self._linger_then_close()

    # -- MOBIKE results ---------------------------------------------------------------------
    def on_event(self, event: object) -> None:
        e = self.engine
        if isinstance(event, AddressesUpdated):
            e.status.update(local_address=event.local, nat_detected=event.nat_local)
            e.status["roams"] += 1
            nat = ", behind a NAT" if event.nat_local else ""
            e.progress(f"roamed: the tunnel now runs from {event.local}{nat}")
            self._keepalive(event.nat_local)
            self._linger_then_close()
            if self.monitor is not None:
                self.monitor.kick()  # the network may have moved on meanwhile
        elif isinstance(event, AddressUpdateFailed):
            self.refused.add(event.local)
            e.progress(f"the gateway refused address {event.local} ({event.reason})")
            self.check()

    def _keepalive(self, nat: bool) -> None:
        e = self.engine
        if nat:
            e._schedule_keepalive()
        elif e.keepalive is not None:
            e.keepalive.cancel()
            e.keepalive = None

    # -- no path at all ---------------------------------------------------------------------
    def _no_path(self) -> None:
        e = self.engine
        if self.paused_since is not None or e.loop is None:
            return
        self.paused_since = e.loop.time()
        e.status["state"] = "reconnecting"
        e.progress(f"no network path to the gateway; keeping the tunnel for up to "
                   f"{self.grace:.0f} s")
        self._give_up_timer = e.loop.call_later(self.grace, self._give_up)

    def _resume(self) -> None:
        e = self.engine
        assert e.loop is not None and self.paused_since is not None
        log.info("network path back after %.1f s", e.loop.time() - self.paused_since)
        self._cancel_give_up()
        self.paused_since = None
        e.status["state"] = "connected"

    def _cancel_give_up(self) -> None:
        if self._give_up_timer is not None:
            self._give_up_timer.cancel()
            self._give_up_timer = None

    def _give_up(self) -> None:
        """No path for the whole grace period: end the IKE SA; the engine reconnects."""
        self._give_up_timer = None
        e = self.engine
        sa = e.sa
        if sa is None or self.paused_since is None:
            return
        self.paused_since = None
        reason = f"no network path to the gateway for {self.grace:.0f} s"
        sa.abandon(reason, PeerUnreachable(reason))
        e._pump(sa)
