"""The tunnel's UDP sockets to the gateway: opened with the tunnel's firewall mark, read
in bounded batches and demultiplexed (IKE or ESP), and used to send IKE, ESP and NAT
keepalives. Send errors are logged and left to retransmission or the next packet."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
from collections.abc import Callable

from .esp.udpencap import KEEPALIVE, NON_ESP_MARKER, classify
from .ikev2.errors import PeerUnreachable
from .netconf.routes import DEFAULT_FWMARK
from .pathsel import open_path

log = logging.getLogger(__name__)

DRAIN_BATCH = 256  # datagrams per wake-up, so one busy socket cannot starve the loop


async def resolve(loop: asyncio.AbstractEventLoop, host: str, port: int, ipv6: bool) -> str:
    """The gateway's address, of the preferred family when it has both."""
    # An address literal needs no resolver: answered here, not by a thread of the loop's
    # executor (which would stay, with its stack and malloc arena).
    with contextlib.suppress(ValueError):
        return str(ipaddress.ip_address(host))
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    except socket.gaierror as exc:
        raise PeerUnreachable(f"cannot resolve {host}: {exc.strerror}") from None
    prefer = socket.AF_INET6 if ipv6 else socket.AF_INET
    infos.sort(key=lambda info: info[0] != prefer)
    return infos[0][4][0]


def open_socket(loop: asyncio.AbstractEventLoop, dest: tuple[str, int],
                on_readable: Callable[[], None]) -> socket.socket:
    # Marked packets bypass the tunnel's routing table: the tunnel's own traffic must
    # never be routed into the tunnel.
    sock = open_path(dest, DEFAULT_FWMARK)
    loop.add_reader(sock.fileno(), on_readable)
    return sock


def close_sockets(loop: asyncio.AbstractEventLoop, socks: dict[str, socket.socket]) -> None:
    """Close every socket in `socks` once (the IKE and NAT-T entries may be one socket)."""
    for s in {id(s): s for s in socks.values()}.values():
        loop.remove_reader(s.fileno())
        s.close()
    socks.clear()


def drain(sock: socket.socket, natt: bool, on_ike: Callable[[bytes], None],
          on_esp: Callable[[bytes], None],
          on_drained: Callable[[], None] | None = None) -> bool:
    """Read what `sock` has queued; on the NAT-T port IKE and ESP share it (RFC 3948).
    `on_drained` runs at the end, whatever happened: what on_esp collected is written
    before the loop waits again. True when an IKE message came in."""
    try:
        return _drain(sock, natt, on_ike, on_esp)
    finally:
        if on_drained is not None:
            on_drained()


def _drain(sock: socket.socket, natt: bool, on_ike: Callable[[bytes], None],
           on_esp: Callable[[bytes], None]) -> bool:
    ike_seen = False
    for _ in range(DRAIN_BATCH):
        try:
            data = sock.recv(65535)
        except BlockingIOError:
            break
        except OSError as exc:  # ICMP errors surface here on connected sockets
            log.debug("receive error: %s", exc)
            break
        if not natt:
            on_ike(data)
            ike_seen = True
            continue
        kind, payload = classify(data)
        if kind == "esp":
            on_esp(data)
        elif kind == "ike":
            on_ike(payload)
            ike_seen = True
        elif kind == "invalid":
            log.debug("dropped an invalid datagram of %d bytes", len(data))
    return ike_seen


def send_ike(sock: socket.socket, packet: bytes, natt: bool) -> None:
    try:
        sock.send(NON_ESP_MARKER + packet if natt else packet)
    except OSError as exc:
        log.info("sending an IKE message failed: %s", exc)  # retransmission copes


def send_esp(sock: socket.socket | None, packet: bytes) -> None:
    if sock is None:
        return
    try:
        sock.send(packet)
    except OSError as exc:
        log.debug("ESP send failed: %s", exc)


def send_keepalive(sock: socket.socket) -> None:
    try:
        sock.send(KEEPALIVE)
    except OSError:
        pass  # the next one may get through; DPD notices a dead path
