"""The asyncio driver around the sans-I/O IKE SA: connecting and failover, redirects,
reconnecting with backoff, reauthentication, timers and events, status and control.

The sockets live in transport.py, the TUN device, routes, DNS and data plane in
tunnel.py. Everything the engine changes on the machine is undone in one place
(`_teardown`), which runs on disconnect, on failure, and on SIGINT/SIGTERM; the netconf
journal covers crashes.
"""

from __future__ import annotations

import asyncio
import logging
import os
import pwd
import random
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from ipaddress import ip_address
from pathlib import Path
from typing import Any

from . import control, revocation, transport
from .config import build_ike_config
from .ikev2.constants import IKE_PORT, NATT_PORT
from .ikev2.errors import AuthenticationFailed, IkeError, PeerNotTrusted, PeerUnreachable
from .ikev2.events import (
    AddressesUpdated,
    AddressUpdateFailed,
    ChildSaDeleted,
    ChildSaEstablished,
    ChildSaRekeyed,
    IkeSaClosed,
    IkeSaEstablished,
    IkeSaRedirected,
    IkeSaRekeyed,
    ReauthRequired,
    RevocationCheck,
)
from .ikev2.ike_sa import IkeConfig, IkeSA, State
from .ikev2.task_manager import RetransmitPolicy
from .ikev2.tasks.ike_redirect import RedirectLimiter
from .netconf import journal
from .netconf.firewall import KillSwitch, blocked_status, held
from .netconf.journal import NetconfError
from .netconf.routes import DEFAULT_FWMARK
from .profile import Profile
from .roaming import Roamer
from .tunnel import Tunnel, TunnelSettings, blocked_versions

log = logging.getLogger(__name__)

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_AUTH, EXIT_UNTRUSTED, EXIT_UNREACHABLE = range(6)
# Reconnecting: each attempt probes with short IKE_SA_INIT retransmissions (about 8 s),
# failed attempts are spaced by a backoff doubling from 1 s up to reconnect.max-backoff.
RECONNECT_PROBE = RetransmitPolicy(timeout=1.0, base=1.5, tries=3)
BACKOFF_START = 1.0
REAUTH_RETRY = 15.0  # seconds before a failed reauthentication is tried again
# A session shorter than this counts as a failed attempt: two devices of one user that
# keep replacing each other's IKE SA (INITIAL_CONTACT) back off instead of ping-ponging.
STABLE_SESSION = 30.0


def exit_code_for(error: BaseException | None) -> int:
    if error is None:
        return EXIT_OK
    if isinstance(error, AuthenticationFailed):
        return EXIT_AUTH
    if isinstance(error, PeerNotTrusted):
        return EXIT_UNTRUSTED
    if isinstance(error, PeerUnreachable):
        return EXIT_UNREACHABLE
    return EXIT_FAILURE


def _literal(host: str) -> str | None:
    """`host` if it is an address literal (no lookup needed), else None."""
    try:
        return str(ip_address(host))
    except ValueError:
        return None


def owner_of(uid: int) -> dict[str, Any]:
    """The owner fields of a connection's status and kill switch record."""
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        name = str(uid)
    return {"owner_uid": uid, "owner": name}


@dataclass
class Secrets:
    """What the user typed or the keyring holds; kept in memory only."""

    password: str | None = field(default=None, repr=False)  # EAP password or PSK
    p12_passphrase: str | None = field(default=None, repr=False)


class Engine:
    def __init__(
        self,
        profile: Profile,
        secrets: Secrets,
        rdir: Path,
        retransmit: RetransmitPolicy | None = None,
        progress: Callable[[str], None] = print,
        error: Callable[[str], None] | None = None,
        *,
        serve_control: bool = True,
        handle_signals: bool = True,
        owner: dict[str, Any] | None = None,
    ) -> None:
        # The daemon hosts engines itself: it serves the control socket and owns the
        # signals, so it turns both off here.
        self.serve_control = serve_control
        self.handle_signals = handle_signals
        self.profile = profile
        self.secrets = secrets
        self.rdir = rdir
        self.retransmit = retransmit or RetransmitPolicy()
        self.progress = progress
        self.error = error or progress  # why the connection ended, when it failed
        self.loop: asyncio.AbstractEventLoop | None = None
        self.sa: IkeSA | None = None
        # Who connects (the kill switch's record names them: only they or root lift it).
        self.owner = owner if owner is not None else owner_of(os.getuid())
        self.killswitch = KillSwitch(rdir)
        self.lift_on_disconnect = True  # False: the daemon stops, the kill switch stays
        self.tunnel = Tunnel(rdir, self.killswitch)
        self.socks: dict[str, socket.socket] = {}
        self.gateway: tuple[str, int] | None = None
        self.use_natt_port = False
        self.timers: dict[IkeSA, asyncio.TimerHandle] = {}
        # Make-before-break reauthentication: the new IKE SA while it is being built,
        # and the ones it replaced while they are being deleted.
        self.reauth_sa: IkeSA | None = None
        self.old_sas: list[IkeSA] = []
        self._old_inbound: dict[IkeSA, list[int]] = {}
        self.reconnecting = False
        self._up = False  # the current attempt brought the tunnel up
        self._up_since = 0.0
        self._ended_by_gateway: str | None = None
        self._wake = asyncio.Event()  # a disconnect request ends a backoff wait
        self.keepalive: asyncio.TimerHandle | None = None
        self.closed: asyncio.Future[IkeSaClosed] | None = None
        self.redirect_to: str | None = None  # where the gateway sent us (RFC 5685)
        self.redirects = RedirectLimiter()
        self._resolved: dict[str, str] = {}  # host -> the address that last worked
        self.roamer = Roamer(self)  # network changes: MOBIKE, re-establishing, waiting
        self.tunnel_settings: TunnelSettings | None = None
        self.disconnect_requested = False
        self.established = False
        self._revocation_tasks: set[asyncio.Task[None]] = set()  # kept from the GC
        self._setup_failed: Exception | None = None
        self.status: dict[str, Any] = {
            "state": "connecting", "profile": profile.name, "uuid": profile.uuid,
            "gateway": None, "local_address": None, "nat_detected": False, "mobike": False,
            "virtual_ips": [], "dns": [], "routes": [], "ike_proposal": None,
            "esp_proposal": None, "established_at": None, "bytes_in": 0, "bytes_out": 0,
            "packets_in": 0, "packets_out": 0, "dropped_selector": 0, "dropped_overload": 0,
            "rekeys": 0, "roams": 0, "last_error": None, "kill_switch": False,
        }

    # -- entry point ----------------------------------------------------------------
    async def run(self) -> int:
        self.loop = asyncio.get_running_loop()
        self.rdir.mkdir(parents=True, exist_ok=True, mode=0o700)
        journal.cleanup_stale(self.rdir)  # undo what a crashed earlier run left behind
        self.killswitch.record = held(self.rdir) or {}  # but a kill switch stays
        server = None
        if self.serve_control:
            server = await control.serve(control.socket_path(self.rdir), self._on_control)
        signals = (signal.SIGINT, signal.SIGTERM) if self.handle_signals else ()
        for sig in signals:
            self.loop.add_signal_handler(sig, self.request_disconnect)
        self.roamer.start()
        try:
            return await self._connect()
        finally:
            self.roamer.stop()
            for sig in signals:
                self.loop.remove_signal_handler(sig)
            self._teardown()
            if server is not None:
                server.close()
                control.socket_path(self.rdir).unlink(missing_ok=True)

    async def _connect(self) -> int:
        try:
            await self._engage_kill_switch()
        except NetconfError as exc:
            self.status.update(state="failed", last_error=str(exc))
            self.error(f"failed: {exc}")
            return EXIT_FAILURE
        last = await self._connect_once()
        failures = 0
        while self._should_reconnect(last):
            assert last is not None
            delay = 0.0
            if failures:
                delay = min(BACKOFF_START * 2 ** (failures - 1),
                            float(self.profile.reconnect_max_backoff))
                delay *= 1 + 0.2 * random.random()  # clients of one gateway spread out
            self._lost(last, delay)
            if delay and await self._sleep(delay):
                break
            last = await self._connect_once()
            stable = self._up and self.loop.time() - self._up_since >= STABLE_SESSION
            failures = 0 if stable else failures + 1
        if self.disconnect_requested and self.reconnecting:
            last = IkeSaClosed("disconnected on request")  # while the gateway was away
        if last is None:
            return EXIT_FAILURE
        return self._finish(last)

    async def _engage_kill_switch(self) -> None:
        """Before the first IKE packet: the kill switch of a profile that blocks, letting
        the tunnel's own packets reach only the profile's gateway addresses. A profile
        that does not block lifts one an earlier connect left (the user chose it)."""
        block = blocked_versions(self.profile)
        ks = self.killswitch
        if not block:
            if ks.engaged:
                ks.lift()
                self.progress("kill switch lifted: this profile does not block traffic")
            return
        # Engaged before any lookup, so that not even the gateway's name leaks: with the
        # addresses known now (literals, those of an earlier run); each attempt lets its
        # own through (_permit) once it is resolved, over the kill switch (_lookup).
        self._resolved.update(ks.record.get("resolved", {}))
        known = [ip_address(a) for a in (_literal(h) or self._resolved.get(h)
                                         for h in self.profile.remote_addrs) if a]
        ks.engage(block, self.profile.split_excluded, known,
                  {"profile": self.profile.name, "uuid": self.profile.uuid, **self.owner},
                  resolved=self._resolved)
        self.status["kill_switch"] = True

    def _permit(self, host: str, addr: str, redirected_from: str | None) -> None:
        """Under the kill switch, IKE may go only where the profile points: one of its
        gateways (failover, a name that now resolves elsewhere); a redirect elsewhere
        is refused rather than let through."""
        ks = self.killswitch
        if not ks.engaged or ip_address(addr) in ks.allowed:
            return
        if redirected_from is not None and host not in self.profile.remote_addrs:
            raise IkeError(f"redirect to {host} refused: the kill switch lets the tunnel "
                           f"reach only the profile's gateways")
        ks.allow([ip_address(addr)], {host: addr})

    async def _lookup_fetch(self, host: str) -> str:
        try:
            return await self._lookup(host)
        except PeerUnreachable as exc:  # the fetch fails, as if the responder were down
            raise OSError(str(exc)) from None

    def _permit_fetch(self, addr: str) -> None:
        """A revocation fetch from a URL in the gateway's (verified) certificate."""
        try:
            self.killswitch.allow([ip_address(addr)])
        except NetconfError as exc:  # the fetch fails, as if the responder were down
            raise OSError(str(exc)) from None

    async def _connect_once(self) -> IkeSaClosed | None:
        """One IKE SA, trying the profile's addresses in turn; returns when it closes."""
        last: IkeSaClosed | None = None
        self._up = False
        for host in self.profile.remote_addrs:
            if self.disconnect_requested:
                break
            try:
                last = await self._attempt_following_redirects(host)
            except IkeError as exc:
                last = IkeSaClosed(str(exc), exc)
            except OSError as exc:
                last = IkeSaClosed(f"network error: {exc}", PeerUnreachable(str(exc)))
            self._close_sockets()
            # Only an unreachable gateway makes us try the next address (failover).
            if not isinstance(last.error, PeerUnreachable) or self._up:
                break
        assert last is not None or self.disconnect_requested
        return last

    def _should_reconnect(self, last: IkeSaClosed | None) -> bool:
        """After a tunnel was up: the gateway went away, stopped answering, or ended the
        session itself. Not when the user asked, nor when only the user can help."""
        if last is None or self.disconnect_requested or not self.established:
            return False
        if not self.profile.reconnect_auto or self._setup_failed is not None:
            return False
        return not isinstance(last.error, (AuthenticationFailed, PeerNotTrusted))

    def _lost(self, last: IkeSaClosed, delay: float) -> None:
        """The tunnel stays (TUN, routes, DNS): applications see a pause, not an outage."""
        what = "reconnecting failed" if self.reconnecting else "connection lost"
        self.reconnecting = True
        self.status.update(state="reconnecting", last_error=last.reason)
        if self.tunnel.dataplane is not None:
            self.tunnel.dataplane.clear()  # packets are dropped until the new SAs are in
        self.tunnel.esp.clear()
        self.tunnel.out_spi = None
        when = f" in {delay:.0f} s" if delay >= 1 else ""
        self.progress(f"{what} ({last.reason}); reconnecting{when}")

    async def _sleep(self, delay: float) -> bool:
        """Wait `delay` seconds; True if a disconnect request came first."""
        self._wake.clear()
        if self.disconnect_requested:
            return True
        try:
            await asyncio.wait_for(self._wake.wait(), delay)
        except TimeoutError:
            return False
        return self.disconnect_requested  # else a network path came back: try now

    def _finish(self, closed: IkeSaClosed) -> int:
        if self.disconnect_requested and closed.error is None:
            self.status["state"] = "disconnected"
            self.progress("disconnected")
            return EXIT_OK if self.established else EXIT_FAILURE
        if closed.error is None:
            # The gateway ended the session (Delete): not what the user asked for.
            reason = self._ended_by_gateway or closed.reason
            self.status.update(state="disconnected", last_error=reason)
            self.error(f"disconnected: {reason}")
            return EXIT_FAILURE
        self.status.update(state="failed", last_error=closed.reason)
        self.error(f"failed: {closed.reason}")
        return exit_code_for(closed.error)

    # -- one attempt against one gateway address ------------------------------------
    async def _attempt_following_redirects(self, host: str) -> IkeSaClosed:
        """An attempt at `host`, then at every gateway it redirects us to (RFC 5685)."""
        assert self.loop is not None
        closed = await self._attempt(host)
        while self.redirect_to is not None and not self.disconnect_requested:
            target, self.redirect_to = self.redirect_to, None
            if not self.redirects.allow(self.loop.time()):
                reason = (f"redirected more than {self.redirects.limit} times within "
                          f"{self.redirects.period:.0f} s")
                return IkeSaClosed(reason, IkeError(reason))
            previous = self.gateway[0] if self.gateway else None
            self._close_sockets()
            closed = await self._attempt(target, redirected_from=previous)
        return closed

    async def _attempt(self, host: str, redirected_from: str | None = None) -> IkeSaClosed:
        assert self.loop is not None
        port = self.profile.remote_port
        self.progress(f"resolving {host}")
        addr = await self._resolve(host, port)
        if self.disconnect_requested:
            return IkeSaClosed("connection attempt cancelled")
        self._permit(host, addr, redirected_from)
        self.gateway = (addr, port)
        # Port 500 floats to 4500; any other port is already the NAT-T port (RFC 7296 2.23).
        natt_port = NATT_PORT if port == IKE_PORT else port
        self.use_natt_port = port != IKE_PORT
        self.socks["ike"] = transport.open_socket(self.loop, (addr, port), self._on_ike_readable)
        if natt_port != port:
            self.socks["natt"] = transport.open_socket(
                self.loop, (addr, natt_port), self._on_natt_readable)
        else:
            self.socks["natt"] = self.socks["ike"]
        local = self.socks["ike"].getsockname()[:2]
        self.status.update(gateway=f"{addr}:{port}", local_address=local[0])
        config = build_ike_config(self.profile, self.secrets, local[0], self.retransmit)
        config.redirected_from = redirected_from
        self._adapt(config)
        self._ended_by_gateway = None
        self.closed = self.loop.create_future()
        self.sa = IkeSA(config, (local[0], local[1]), (addr, port))
        self.progress(f"contacting gateway {addr}:{port}")
        self.sa.initiate(self.loop.time())
        self._pump()
        return await self.closed

    async def _lookup(self, host: str, port: int = 0) -> str:
        """A name's address: the system's resolver, or under the kill switch (which rejects
        its queries, DNS leaks being leaks) our own marked query to the uplink's DNS
        servers, let through for our marked packets alone (client/marked_dns.py)."""
        assert self.loop is not None
        ks = self.killswitch
        if not ks.engaged or _literal(host):
            return await transport.resolve(self.loop, host, port, self.profile.ipv6_transport)
        from . import marked_dns  # only under the kill switch: dnspython is ~20 ms to load

        servers = marked_dns.nameservers()
        try:
            ks.allow(servers)
        except NetconfError as exc:
            raise PeerUnreachable(f"cannot resolve {host}: {exc}") from None
        return await marked_dns.lookup(self.loop, host, servers, self.profile.ipv6_transport,
                                       DEFAULT_FWMARK)

    async def _resolve(self, host: str, port: int) -> str:
        assert self.loop is not None
        try:
            addr = await self._lookup(host, port)
        except PeerUnreachable:
            # Reconnecting, DNS is out of reach: its servers are behind the lost tunnel,
            # or the kill switch rejects them. The address that worked will do.
            if not (self.reconnecting or self.killswitch.engaged) or host not in self._resolved:
                raise
            log.info("cannot resolve %s while reconnecting; using %s", host,
                     self._resolved[host])
            return self._resolved[host]
        self._resolved[host] = addr
        return addr

    def _adapt(self, config: IkeConfig) -> None:
        """A tunnel is up already (reconnect, reauthentication): ask for its addresses
        again, so that applications keep their connections; probe a lost gateway fast."""
        if self.tunnel_settings is not None:
            config.requested_vips = [a.ip for a in self.tunnel_settings.vips]
        if self.reconnecting:
            p = self.retransmit
            config.init_retransmit = RetransmitPolicy(
                min(p.timeout, RECONNECT_PROBE.timeout), min(p.base, RECONNECT_PROBE.base),
                min(p.tries, RECONNECT_PROBE.tries))
        config.additional_addresses = self.roamer.additional_addresses()  # MOBIKE

    def _close_sockets(self) -> None:
        assert self.loop is not None
        # IKE SAs that share these sockets end with them.
        for sa in [s for s in self._sas() if s is not self.sa]:
            self._drop_sa(sa)
        transport.close_sockets(self.loop, self.socks)
        self.roamer.drop_sockets()

    # -- datagrams in and out -------------------------------------------------------
    def _on_ike_readable(self) -> None:
        self._drain(self.socks.get("ike"), natt=self.use_natt_port)

    def _on_natt_readable(self) -> None:
        self._drain(self.socks.get("natt"), natt=True)

    def _drain(self, sock: socket.socket | None, natt: bool) -> None:
        if sock is None or self.sa is None or self.loop is None:
            return
        if transport.drain(sock, natt, self._receive_ike, self._receive_esp, self._flush_esp):
            self._pump()

    def _receive_ike(self, data: bytes) -> None:
        assert self.loop is not None
        self._sa_for(data).receive(data, self.loop.time())

    def _receive_esp(self, data: bytes) -> None:
        if self.tunnel.dataplane is not None:
            self.tunnel.dataplane.on_esp(data)

    def _flush_esp(self) -> None:
        if self.tunnel.dataplane is not None:
            self.tunnel.dataplane.flush()

    def _send_esp(self, packet: bytes) -> None:
        transport.send_esp(self.socks.get("natt"), packet)

    def _sas(self) -> list[IkeSA]:
        return [s for s in (self.sa, self.reauth_sa, *self.old_sas) if s is not None]

    def _sa_for(self, data: bytes) -> IkeSA:
        """The IKE SA a datagram is for (by our SPI), while more than one is alive."""
        assert self.sa is not None
        for sa in (self.reauth_sa, *self.old_sas):
            if sa is not None and sa.owns(data):
                return sa
        return self.sa

    def _drop_sa(self, sa: IkeSA) -> None:
        timer = self.timers.pop(sa, None)
        if timer is not None:
            timer.cancel()
        if sa is self.reauth_sa:
            self.reauth_sa = None
        if sa in self.old_sas:
            self.old_sas.remove(sa)
        self._old_inbound.pop(sa, None)

    def _pump(self, only: IkeSA | None = None) -> None:
        """Send what the IKE SAs queued, re-arm their timers, and act on their events."""
        for sa in [only] if only is not None else self._sas():
            self._pump_sa(sa)

    def _pump_sa(self, sa: IkeSA) -> None:
        loop = self.loop
        if loop is None:
            return
        # Events first: a rekeyed CHILD_SA's inbound SA is installed before our answer
        # leaves, so the gateway's first packet on it finds it.
        while (event := sa.next_event()) is not None:
            self._on_event(sa, event)
        for packet in sa.datagrams_to_send():
            on_natt = sa.natt or self.use_natt_port
            sock = self.socks.get("natt" if on_natt else "ike")
            if sock is not None:
                transport.send_ike(sock, packet, on_natt)
        timer = self.timers.pop(sa, None)
        if timer is not None:
            timer.cancel()
        when = sa.get_timer()
        if when is not None and (sa is self.sa or sa in self._sas()):
            self.timers[sa] = loop.call_at(when, self._on_timer, sa)
        elif sa.state is State.CLOSED and sa is not self.sa:
            self._drop_sa(sa)

    def _on_timer(self, sa: IkeSA) -> None:
        self.timers.pop(sa, None)
        if self.loop is None:
            return
        dp = self.tunnel.dataplane
        if sa is self.sa and dp is not None and dp.last_inbound is not None:
            # ESP from the gateway proves it alive as well as IKE does (no DPD needed).
            sa.traffic_received(self.loop.time() - (time.monotonic() - dp.last_inbound))
        sa.handle_timer(self.loop.time())
        self._pump(sa)

    # -- events ---------------------------------------------------------------------
    def _on_event(self, sa: IkeSA, event: object) -> None:
        if isinstance(event, RevocationCheck):  # any of our IKE SAs, reauthentication too
            self._check_revocation(sa, event)
            return
        if sa is self.reauth_sa:
            self._on_reauth_event(sa, event)
            return
        if sa is not self.sa:
            if isinstance(event, IkeSaClosed):  # a replaced SA is gone: so are its SAs
                dp = self.tunnel.dataplane
                for spi in self._old_inbound.pop(sa, []):
                    if dp is not None and spi not in self.tunnel.esp:
                        dp.remove_inbound(spi)
            return
        if isinstance(event, IkeSaEstablished):
            self.status.update(
                ike_proposal=event.ike_proposal, nat_detected=event.nat_local,
                mobike=event.mobike,
            )
            self.progress("authenticated; IKE SA established")
            if event.nat_local:
                self._schedule_keepalive()
        elif isinstance(event, ChildSaEstablished):
            try:
                self._bring_up(event)
            except Exception as exc:
                log.exception("setting up the tunnel failed")
                self.status["last_error"] = f"setting up the tunnel failed: {exc}"
                self.tunnel.close()
                assert self.sa is not None and self.loop is not None
                self.sa.delete(self.loop.time())
                self._setup_failed = exc
        elif isinstance(event, ChildSaRekeyed):
            self._child_rekeyed(event)
        elif isinstance(event, ChildSaDeleted):
            self._child_deleted(event)
        elif isinstance(event, IkeSaRekeyed):
            self.status["ike_proposal"] = event.ike_proposal
            self.status["rekeys"] += 1
            log.info("IKE SA rekeyed (%s)", "by us" if event.initiated else "by the gateway")
        elif isinstance(event, ReauthRequired):
            self._start_reauth()
        elif isinstance(event, (AddressesUpdated, AddressUpdateFailed)):
            self.roamer.on_event(event)
        elif isinstance(event, IkeSaRedirected):
            self.redirect_to = event.gateway
            self.progress(f"redirected to gateway {event.gateway}")
            if event.established:
                self.status["state"] = "reconnecting"
            if self.tunnel.dataplane is not None:
                self.tunnel.dataplane.clear()  # its SAs end with this IKE SA
        elif isinstance(event, IkeSaClosed):
            if self._setup_failed is not None and event.error is None:
                event = IkeSaClosed(self.status["last_error"], IkeError(self.status["last_error"]))
            if self.keepalive is not None:
                self.keepalive.cancel()
            if self.reauth_sa is not None and self.loop is not None:
                self.reauth_sa.delete(self.loop.time())  # it would need the sockets we close
            if self.closed is not None and not self.closed.done():
                self.closed.set_result(event)

    def _check_revocation(self, sa: IkeSA, event: RevocationCheck) -> None:
        """Fetch and check revocation data (client/revocation.py) while the IKE SA waits;
        its verdict lets it go on or ends it."""
        assert self.loop is not None
        checker = revocation.Checker(self.profile.revocation, self.rdir, sa.config.wall_clock,
                                     permit=self._permit_fetch, resolve=self._lookup_fetch)
        started = self.loop.time()

        async def run() -> None:
            error: IkeError | None = None
            try:
                await checker.check(list(event.links), list(event.stapled))
            except IkeError as exc:
                error = exc
            except Exception as exc:  # a bug of ours must not leave the SA waiting
                log.exception("revocation check failed")
                error = PeerNotTrusted(f"revocation check failed: {exc}")
            assert self.loop is not None
            log.info("revocation check took %.0f ms", (self.loop.time() - started) * 1000)
            sa.revocation_checked(error, self.loop.time())
            self._pump(sa)

        task = self.loop.create_task(run())
        self._revocation_tasks.add(task)
        task.add_done_callback(self._revocation_tasks.discard)

    def _bring_up(self, ev: ChildSaEstablished) -> None:
        assert self.loop is not None
        if self.tunnel.dataplane is not None:
            self._move_tunnel(ev)
            return
        s = TunnelSettings.of(self.profile, ev)
        started = self.loop.time()
        t = self.tunnel
        t.open(s, self.loop, self._send_esp, lambda: self.socks.get("natt"))
        assert t.tun is not None and t.dataplane is not None
        self._install_child(ev)
        t.dataplane.start()
        log.info("tunnel %s up in %.1f ms", t.tun.name, (self.loop.time() - started) * 1000)
        self._connected(ev, s)

    def _move_tunnel(self, ev: ChildSaEstablished, keep_inbound: bool = False) -> None:
        """A new IKE SA for the tunnel that is up (after a redirect, a reconnect or a
        reauthentication): the TUN device stays; addresses, routes and DNS are redone
        only where the new gateway changed them. With `keep_inbound` the old inbound SAs
        stay until their IKE SA is deleted (make-before-break)."""
        t = self.tunnel
        assert t.tun is not None and t.routes is not None and t.dataplane is not None
        s = TunnelSettings.of(self.profile, ev)
        t.move(s, self.tunnel_settings)
        if not keep_inbound:
            t.dataplane.clear()
            self.tunnel.esp.clear()
        self._install_child(ev)
        log.info("tunnel %s moved to the new IKE SA", t.tun.name)
        self._connected(ev, s)

    def _install_child(self, ev: ChildSaEstablished) -> None:
        if self.tunnel.install_child(ev):
            self.status["rekeys"] += 1

    def _child_rekeyed(self, ev: ChildSaRekeyed) -> None:
        if self.tunnel.dataplane is None:
            return
        self.status["esp_proposal"] = ev.esp_proposal
        if self.tunnel.child_rekeyed(ev):
            self.status["rekeys"] += 1

    def _child_deleted(self, ev: ChildSaDeleted) -> None:
        if ev.replaced_by is not None and self.tunnel.use_outbound(ev.replaced_by):
            self.status["rekeys"] += 1
        self.tunnel.remove_inbound(ev.spi_in)
        if ev.remaining == 0 and self.sa is not None and self.loop is not None:
            log.warning("the gateway deleted the CHILD_SA %08x", ev.spi_in)
            self._ended_by_gateway = "the gateway deleted the tunnel's CHILD_SA"
            self.sa.delete(self.loop.time())

    # -- reauthentication (RFC 4478): make-before-break -----------------------------
    def _start_reauth(self) -> None:
        sa, loop = self.sa, self.loop
        if self.reauth_sa is not None or sa is None or loop is None or self.gateway is None:
            return
        if sa.state is not State.ESTABLISHED or self.disconnect_requested:
            return
        if "ike" not in self.socks:
            return
        local = self.socks["ike"].getsockname()[:2]
        try:
            config = build_ike_config(self.profile, self.secrets, local[0], self.retransmit)
        except ValueError as exc:
            log.error("cannot reauthenticate: %s", exc)
            return
        self._adapt(config)
        config.initial_contact = False  # the SA it replaces is still up
        self.progress("reauthenticating")
        self.reauth_sa = IkeSA(config, (local[0], local[1]), self.gateway)
        self.reauth_sa.initiate(loop.time())
        self._pump(self.reauth_sa)

    def _on_reauth_event(self, sa: IkeSA, event: object) -> None:
        assert self.loop is not None
        if isinstance(event, ChildSaEstablished):
            try:
                self._move_tunnel(event, keep_inbound=True)
            except Exception as exc:
                log.exception("moving the tunnel to the new IKE SA failed")
                self.reauth_sa = None
                sa.delete(self.loop.time())
                self.status["last_error"] = f"reauthentication failed: {exc}"
                return
            old, self.sa, self.reauth_sa = self.sa, sa, None
            if old is not None:
                self.old_sas.append(old)
                self._old_inbound[old] = [spi for spi in self.tunnel.esp
                                          if spi != event.keys.spi_in]
                old.delete(self.loop.time())
                self._pump(old)
            self.status["rekeys"] += 1
            self.progress("reauthenticated")
            self.roamer.on_reestablished(sa)
        elif isinstance(event, IkeSaEstablished):
            self.status.update(ike_proposal=event.ike_proposal, nat_detected=event.nat_local,
                               mobike=event.mobike)
        elif isinstance(event, IkeSaClosed):
            self.reauth_sa = None
            log.warning("reauthentication failed: %s; trying again in %.0f s", event.reason,
                        REAUTH_RETRY)
            self.loop.call_later(REAUTH_RETRY, self._start_reauth)

    def _connected(self, ev: ChildSaEstablished, s: TunnelSettings) -> None:
        if not self._up and self.loop is not None:
            self._up_since = self.loop.time()
        self._up = True
        if self.reconnecting:
            self.reconnecting = False
            self.progress("reconnected")
        self.established = True
        self.tunnel_settings = s
        self.status.update(
            state="connected", esp_proposal=ev.esp_proposal,
            virtual_ips=[str(a.ip) for a in s.vips], dns=[str(d) for d in s.dns],
            routes=[str(r) for r in s.routes], established_at=datetime.now(UTC).isoformat(),
        )
        self.progress(
            f"connected: {', '.join(self.status['virtual_ips'])}"
            f", DNS {', '.join(self.status['dns']) or 'unchanged'}"
            f", routes {', '.join(self.status['routes'])}"
        )

    def _schedule_keepalive(self) -> None:
        assert self.loop is not None
        interval = self.profile.nat_keepalive
        if self.keepalive is not None:  # one tick chain at a time (NAT state changes)
            self.keepalive.cancel()

        def tick() -> None:
            sock = self.socks.get("natt")
            if sock is not None:
                transport.send_keepalive(sock)
                self.keepalive = self.loop.call_later(interval, tick)

        self.keepalive = self.loop.call_later(interval, tick)

    # -- control ----------------------------------------------------------------------
    def request_disconnect(self, lift: bool = True) -> None:
        """End the connection; `lift` False keeps the kill switch blocking (the daemon
        stops, which is not the user turning the VPN off)."""
        self.lift_on_disconnect = self.lift_on_disconnect and lift
        if self.disconnect_requested:
            return
        self.disconnect_requested = True
        self.status["state"] = "disconnecting"
        self.progress("disconnecting")
        self._wake.set()
        if self.sa is not None and self.loop is not None:
            for sa in self._sas():
                sa.delete(self.loop.time())
            self._pump()
        elif self.closed is not None and not self.closed.done():
            self.closed.set_result(IkeSaClosed("connection attempt cancelled"))

    async def _on_control(self, request: dict[str, Any]) -> dict[str, Any]:
        command = request.get("command")
        if command == "status":
            return {"ok": True, "status": self.snapshot()}
        if command == "disconnect":
            self.request_disconnect()
            return {"ok": True}
        return {"ok": False, "error": f"unknown command {command!r}", "code": 2}

    def snapshot(self) -> dict[str, Any]:
        dp = self.tunnel.dataplane
        if dp is not None:
            self.status.update(
                bytes_in=dp.bytes_in, bytes_out=dp.bytes_out,
                packets_in=dp.packets_in, packets_out=dp.packets_out,
                dropped_selector=dp.dropped_selector, dropped_overload=dp.dropped_overload,
            )
        return dict(self.status)

    def _release_kill_switch(self) -> None:
        """Lifted when the user asked for the end; else held, and `status` says so."""
        ks = self.killswitch
        if not ks.engaged:
            return
        try:
            if self.disconnect_requested and self.lift_on_disconnect:
                ks.lift()
                self.status["kill_switch"] = False
                return
            ks.hold(self.status.get("last_error") or "the connection ended")
        except NetconfError as exc:  # a failed transaction leaves the table as it was
            log.error("%s", exc)
        if ks.engaged:
            self.status.update(blocked_status(ks.record))
            self.error(f"kill switch on: traffic outside the tunnel stays blocked until "
                       f"`{blocked_status(ks.record)['lift_with']}`")

    def _teardown(self) -> None:
        for task in self._revocation_tasks:
            task.cancel()
        for timer in self.timers.values():
            timer.cancel()
        self.timers.clear()
        if self.keepalive is not None:
            self.keepalive.cancel()
        self.tunnel.close()
        if self.loop is not None:
            self._close_sockets()
        self._release_kill_switch()  # last: nothing leaks while the rest comes down

