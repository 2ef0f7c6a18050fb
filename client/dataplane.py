"""The packet loop: TUN -> ESP -> UDP and UDP -> ESP -> TUN, on the asyncio loop.

Each wake-up drains up to BATCH packets from the TUN so one readiness event carries a
burst; inbound datagrams are handed in one by one by the engine's UDP protocol.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from client.esp.sa import EspError, EspInbound, EspOutbound
from client.tun import TunDevice

log = logging.getLogger(__name__)

BATCH = 64
READ_SIZE = 65535
LOG_INTERVAL = 5.0  # seconds between two drop reports of the same kind


class DataPlane:
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        tun: TunDevice,
        send_esp: Callable[[bytes], None],
    ) -> None:
        self._loop = loop
        self._tun = tun
        self._send_esp = send_esp
        self._outbound: EspOutbound | None = None
        self._inbound: dict[int, EspInbound] = {}
        self._reading = False
        self._last_log: dict[str, float] = {}
        self.bytes_in = 0  # inner bytes written to the TUN
        self.bytes_out = 0  # inner bytes read from the TUN and sent
        self.packets_in = 0
        self.packets_out = 0
        self.dropped = 0
        self.last_inbound: float | None = None  # time.monotonic() of the last valid packet

    # -- SAs -------------------------------------------------------------------------
    def install(self, outbound: EspOutbound, inbound: EspInbound) -> None:
        """Send with `outbound` from now on; accept `inbound` too (older inbound SAs stay
        until remove_inbound(), so packets in flight during a rekey are not lost)."""
        self._inbound[inbound.spi] = inbound
        self._outbound = outbound

    def remove_inbound(self, spi: int) -> None:
        self._inbound.pop(spi, None)

    def clear(self) -> None:
        """Forget all SAs (tunnel down); TUN packets are dropped until the next install()."""
        self._outbound = None
        self._inbound.clear()

    # -- loop wiring -----------------------------------------------------------------
    def start(self) -> None:
        if not self._reading:
            self._loop.add_reader(self._tun.fd, self._on_tun_readable)
            self._reading = True

    def stop(self) -> None:
        if self._reading:
            self._loop.remove_reader(self._tun.fd)
            self._reading = False

    # -- outbound --------------------------------------------------------------------
    def _on_tun_readable(self) -> None:
        read = self._tun.read
        send = self._send_esp
        for _ in range(BATCH):
            try:
                packet = read(READ_SIZE)
            except BlockingIOError:
                return
            except OSError as e:
                self._drop("tun-read", e)
                return
            sa = self._outbound
            if sa is None:
                self.dropped += 1
                continue
            try:
                esp = sa.encapsulate(packet)
            except EspError as e:
                self._drop("encapsulate", e)
                continue
            try:
                send(esp)
            except OSError as e:  # e.g. ENETUNREACH while roaming: the packet is lost
                self._drop("send", e)
                continue
            self.packets_out += 1
            self.bytes_out += len(packet)

    # -- inbound ---------------------------------------------------------------------
    def on_esp(self, datagram: bytes) -> None:
        """One ESP datagram from the NAT-T socket (no non-ESP marker)."""
        sa = self._inbound.get(int.from_bytes(datagram[:4], "big"))
        if sa is None or len(datagram) < 8:
            self._drop("unknown SPI", datagram[:4].hex())
            return
        try:
            inner = sa.decapsulate(datagram)
        except EspError as e:
            self._drop("decapsulate", e)
            return
        self.last_inbound = time.monotonic()
        if not inner:  # dummy packet (traffic flow confidentiality padding)
            return
        try:
            self._tun.write(inner)
        except OSError as e:
            self._drop("tun-write", e)
            return
        self.packets_in += 1
        self.bytes_in += len(inner)

    def _drop(self, kind: str, detail: object) -> None:
        self.dropped += 1
        now = time.monotonic()
        if now - self._last_log.get(kind, -LOG_INTERVAL) >= LOG_INTERVAL:
            self._last_log[kind] = now
            log.warning("dropping packet (%s): %s [%d dropped so far]", kind, detail, self.dropped)
