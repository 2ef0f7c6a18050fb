"""The asyncio driver: sockets, timers, TUN, routes and DNS around the sans-I/O IKE SA.

Everything the engine changes on the machine is undone in one place (`_teardown`), which
runs on disconnect, on failure, and on SIGINT/SIGTERM; the netconf journal covers crashes.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from ipaddress import ip_interface
from pathlib import Path
from typing import Any

from . import control
from .config import build_ike_config
from .dataplane import DataPlane
from .esp.sa import EspInbound, EspOutbound
from .esp.udpencap import KEEPALIVE, NON_ESP_MARKER, classify
from .ikev2.constants import IKE_PORT, NATT_PORT
from .ikev2.errors import AuthenticationFailed, IkeError, PeerNotTrusted, PeerUnreachable
from .ikev2.events import ChildSaDeleted, ChildSaEstablished, IkeSaClosed, IkeSaEstablished
from .ikev2.ike_sa import IkeSA
from .ikev2.task_manager import RetransmitPolicy
from .netconf import journal
from .netconf.dns import DnsManager
from .netconf.routes import DEFAULT_FWMARK, RouteManager
from .profile import Profile
from .tun import TunDevice

log = logging.getLogger(__name__)

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_AUTH, EXIT_UNTRUSTED, EXIT_UNREACHABLE = range(6)
SO_MARK = 36  # socket.SO_MARK is missing from older Pythons
DEFAULT_MTU = 1400  # fits ESP-in-UDP overhead on a 1500-byte path, as strongSwan's Android client


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


@dataclass
class Secrets:
    """What the user typed or the keyring holds; kept in memory only."""

    password: str | None = field(default=None, repr=False)  # EAP password or PSK
    p12_passphrase: str | None = field(default=None, repr=False)


class _Tunnel:
    """The TUN device, routes, DNS and data plane of one established CHILD_SA."""

    def __init__(self) -> None:
        self.tun: TunDevice | None = None
        self.routes: RouteManager | None = None
        self.dns: DnsManager | None = None
        self.dataplane: DataPlane | None = None

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


class Engine:
    def __init__(
        self,
        profile: Profile,
        secrets: Secrets,
        rdir: Path,
        retransmit: RetransmitPolicy | None = None,
        progress: Callable[[str], None] = print,
        error: Callable[[str], None] | None = None,
    ) -> None:
        self.profile = profile
        self.secrets = secrets
        self.rdir = rdir
        self.retransmit = retransmit or RetransmitPolicy()
        self.progress = progress
        self.error = error or progress  # why the connection ended, when it failed
        self.loop: asyncio.AbstractEventLoop | None = None
        self.sa: IkeSA | None = None
        self.tunnel = _Tunnel()
        self.socks: dict[str, socket.socket] = {}
        self.gateway: tuple[str, int] | None = None
        self.use_natt_port = False
        self.timer: asyncio.TimerHandle | None = None
        self.keepalive: asyncio.TimerHandle | None = None
        self.closed: asyncio.Future[IkeSaClosed] | None = None
        self.disconnect_requested = False
        self.established = False
        self._setup_failed: Exception | None = None
        self.status: dict[str, Any] = {
            "state": "connecting", "profile": profile.name, "uuid": profile.uuid,
            "gateway": None, "local_address": None, "nat_detected": False, "mobike": False,
            "virtual_ips": [], "dns": [], "routes": [], "ike_proposal": None,
            "esp_proposal": None, "established_at": None, "bytes_in": 0, "bytes_out": 0,
            "packets_in": 0, "packets_out": 0, "rekeys": 0, "roams": 0, "last_error": None,
        }

    # -- entry point ----------------------------------------------------------------
    async def run(self) -> int:
        self.loop = asyncio.get_running_loop()
        self.rdir.mkdir(parents=True, exist_ok=True, mode=0o700)
        journal.cleanup_stale(self.rdir)  # undo what a crashed earlier run left behind
        server = await control.serve(control.socket_path(self.rdir), self._on_control)
        for sig in (signal.SIGINT, signal.SIGTERM):
            self.loop.add_signal_handler(sig, self.request_disconnect)
        try:
            return await self._connect()
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.loop.remove_signal_handler(sig)
            self._teardown()
            server.close()
            control.socket_path(self.rdir).unlink(missing_ok=True)

    async def _connect(self) -> int:
        last: IkeSaClosed | None = None
        for host in self.profile.remote_addrs:
            if self.disconnect_requested:
                break
            try:
                last = await self._attempt(host)
            except IkeError as exc:
                last = IkeSaClosed(str(exc), exc)
            except OSError as exc:
                last = IkeSaClosed(f"network error: {exc}", PeerUnreachable(str(exc)))
            self._close_sockets()
            # Only an unreachable gateway makes us try the next address (failover).
            if not isinstance(last.error, PeerUnreachable) or self.established:
                break
        assert last is not None or self.disconnect_requested
        if last is None:
            return EXIT_FAILURE
        return self._finish(last)

    def _finish(self, closed: IkeSaClosed) -> int:
        if self.disconnect_requested and closed.error is None:
            self.status["state"] = "disconnected"
            self.progress("disconnected")
            return EXIT_OK if self.established else EXIT_FAILURE
        if closed.error is None:
            # The gateway ended the session (Delete): not what the user asked for.
            self.status.update(state="disconnected", last_error=closed.reason)
            self.error(f"disconnected: {closed.reason}")
            return EXIT_FAILURE
        self.status.update(state="failed", last_error=closed.reason)
        self.error(f"failed: {closed.reason}")
        return exit_code_for(closed.error)

    # -- one attempt against one gateway address ------------------------------------
    async def _attempt(self, host: str) -> IkeSaClosed:
        assert self.loop is not None
        port = self.profile.remote_port
        self.progress(f"resolving {host}")
        addr = await self._resolve(host, port)
        self.gateway = (addr, port)
        # Port 500 floats to 4500; any other port is already the NAT-T port (RFC 7296 2.23).
        natt_port = NATT_PORT if port == IKE_PORT else port
        self.use_natt_port = port != IKE_PORT
        family = socket.AF_INET6 if ":" in addr else socket.AF_INET
        self.socks["ike"] = self._socket(family, (addr, port), self._on_ike_readable)
        if natt_port != port:
            self.socks["natt"] = self._socket(family, (addr, natt_port), self._on_natt_readable)
        else:
            self.socks["natt"] = self.socks["ike"]
        local = self.socks["ike"].getsockname()[:2]
        self.status.update(gateway=f"{addr}:{port}", local_address=local[0])
        config = build_ike_config(self.profile, self.secrets, local[0], self.retransmit)
        self.closed = self.loop.create_future()
        self.sa = IkeSA(config, (local[0], local[1]), (addr, port))
        self.progress(f"contacting gateway {addr}:{port}")
        self.sa.initiate(self.loop.time())
        self._pump()
        return await self.closed

    async def _resolve(self, host: str, port: int) -> str:
        assert self.loop is not None
        try:
            infos = await self.loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
        except socket.gaierror as exc:
            raise PeerUnreachable(f"cannot resolve {host}: {exc.strerror}") from None
        prefer = socket.AF_INET6 if self.profile.ipv6_transport else socket.AF_INET
        infos.sort(key=lambda info: info[0] != prefer)
        return infos[0][4][0]

    def _socket(self, family: int, dest: tuple[str, int], on_readable) -> socket.socket:
        assert self.loop is not None
        s = socket.socket(family, socket.SOCK_DGRAM)
        try:
            # Marked packets bypass the tunnel's routing table: the tunnel's own traffic
            # must never be routed into the tunnel.
            s.setsockopt(socket.SOL_SOCKET, SO_MARK, DEFAULT_FWMARK)
            s.setblocking(False)
            s.connect(dest)
        except OSError:
            s.close()
            raise
        self.loop.add_reader(s.fileno(), on_readable)
        return s

    def _close_sockets(self) -> None:
        assert self.loop is not None
        for s in {id(s): s for s in self.socks.values()}.values():
            self.loop.remove_reader(s.fileno())
            s.close()
        self.socks.clear()

    # -- datagrams in and out -------------------------------------------------------
    def _on_ike_readable(self) -> None:
        self._drain(self.socks.get("ike"), natt=self.use_natt_port)

    def _on_natt_readable(self) -> None:
        self._drain(self.socks.get("natt"), natt=True)

    def _drain(self, sock: socket.socket | None, natt: bool) -> None:
        if sock is None or self.sa is None or self.loop is None:
            return
        ike_seen = False
        for _ in range(256):  # bounded, so one busy socket cannot starve the loop
            try:
                data = sock.recv(65535)
            except BlockingIOError:
                break
            except OSError as exc:  # ICMP errors surface here on connected sockets
                log.debug("receive error: %s", exc)
                break
            if not natt:
                self.sa.receive(data, self.loop.time())
                ike_seen = True
                continue
            kind, payload = classify(data)
            if kind == "esp":
                if self.tunnel.dataplane is not None:
                    self.tunnel.dataplane.on_esp(data)
            elif kind == "ike":
                self.sa.receive(payload, self.loop.time())
                ike_seen = True
            elif kind == "invalid":
                log.debug("dropped an invalid datagram of %d bytes", len(data))
        if ike_seen:
            self._pump()

    def _send_esp(self, packet: bytes) -> None:
        sock = self.socks.get("natt")
        if sock is None:
            return
        try:
            sock.send(packet)
        except OSError as exc:
            log.debug("ESP send failed: %s", exc)

    def _pump(self) -> None:
        """Send what the IKE SA queued, re-arm its timer, and act on its events."""
        sa, loop = self.sa, self.loop
        if sa is None or loop is None:
            return
        for packet in sa.datagrams_to_send():
            on_natt = sa.natt or self.use_natt_port
            sock = self.socks.get("natt" if on_natt else "ike")
            if sock is None:
                continue
            try:
                sock.send(NON_ESP_MARKER + packet if on_natt else packet)
            except OSError as exc:
                log.info("sending an IKE message failed: %s", exc)  # retransmission copes
        while (event := sa.next_event()) is not None:
            self._on_event(event)
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        when = sa.get_timer()
        if when is not None:
            self.timer = loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        self.timer = None
        if self.sa is not None and self.loop is not None:
            self.sa.handle_timer(self.loop.time())
            self._pump()

    # -- events ---------------------------------------------------------------------
    def _on_event(self, event: object) -> None:
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
        elif isinstance(event, ChildSaDeleted):
            log.warning("the gateway deleted the CHILD_SA %08x", event.spi_in)
            if self.sa is not None and self.loop is not None:
                self.sa.delete(self.loop.time())
        elif isinstance(event, IkeSaClosed):
            if self._setup_failed is not None and event.error is None:
                event = IkeSaClosed(self.status["last_error"], IkeError(self.status["last_error"]))
            if self.keepalive is not None:
                self.keepalive.cancel()
            if self.closed is not None and not self.closed.done():
                self.closed.set_result(event)

    def _bring_up(self, ev: ChildSaEstablished) -> None:
        assert self.loop is not None
        p = self.profile
        mtu = p.mtu or DEFAULT_MTU
        routes = list(p.split_subnets) or list(ev.remote_ts)
        # Host addresses: what reaches the tunnel is decided by the routes, not by the
        # prefix length the gateway happened to send with an IPv6 address.
        vips = [ip_interface(a.ip) for a in ev.virtual_ips]
        families = {a.version for a in vips}
        routes = [r for r in routes if r.version in families]
        dns = list(p.dns_servers) or list(ev.dns_servers)
        domains = list(p.dns_domains) or list(ev.dns_domains)

        started = self.loop.time()
        t = self.tunnel
        t.tun = TunDevice.open(mtu=mtu)
        t.routes = RouteManager(t.tun.name, runtime_dir=self.rdir)
        t.routes.apply(vips, routes, list(p.split_excluded), mtu)
        if dns:
            t.dns = DnsManager(self.rdir)
            t.dns.apply(dns, domains, t.tun.name)
        k = ev.keys
        t.dataplane = DataPlane(self.loop, t.tun, self._send_esp)
        t.dataplane.install(
            EspOutbound(
                k.spi_out, k.encr_id, k.key_bits, k.encr_key_out, k.integ_id, k.integ_key_out
            ),
            EspInbound(
                k.spi_in, k.encr_id, k.key_bits, k.encr_key_in, k.integ_id, k.integ_key_in
            ),
        )
        t.dataplane.start()
        log.info("tunnel %s up in %.1f ms", t.tun.name, (self.loop.time() - started) * 1000)
        self.established = True
        self.status.update(
            state="connected", esp_proposal=ev.esp_proposal,
            virtual_ips=[str(a.ip) for a in vips], dns=[str(d) for d in dns],
            routes=[str(r) for r in routes], established_at=datetime.now(UTC).isoformat(),
        )
        self.progress(
            f"connected: {', '.join(self.status['virtual_ips'])}"
            f", DNS {', '.join(self.status['dns']) or 'unchanged'}"
            f", routes {', '.join(self.status['routes'])}"
        )

    def _schedule_keepalive(self) -> None:
        assert self.loop is not None
        interval = self.profile.nat_keepalive

        def tick() -> None:
            sock = self.socks.get("natt")
            if sock is not None:
                try:
                    sock.send(KEEPALIVE)
                except OSError:
                    pass
                self.keepalive = self.loop.call_later(interval, tick)

        self.keepalive = self.loop.call_later(interval, tick)

    # -- control ----------------------------------------------------------------------
    def request_disconnect(self) -> None:
        if self.disconnect_requested:
            return
        self.disconnect_requested = True
        self.status["state"] = "disconnecting"
        self.progress("disconnecting")
        if self.sa is not None and self.loop is not None:
            self.sa.delete(self.loop.time())
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
            )
        return dict(self.status)

    def _teardown(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
        if self.keepalive is not None:
            self.keepalive.cancel()
        self.tunnel.close()
        if self.loop is not None:
            self._close_sockets()

