"""The packet loop: TUN -> ESP -> UDP and UDP -> ESP -> TUN, on the asyncio loop.

Outbound, each readiness event of the TUN device reads what the device has queued into
the data plane's own backlog, and encapsulates up to BATCH packets of it, oldest first;
they leave in as few system calls as UDP GSO allows (one sendmsg() for a run of
equal-sized datagrams, typically a TCP burst). What is left waits for the next turn of
the loop, after the inbound side has had its turn.

Overload: when the machine's own TCP senders fill the tunnel faster than this loop
encrypts (a saturating upload on a busy machine), the kernel's TUN queue used to be where
packets waited, and it drops whatever arrives while it is full: a ping, a DNS query or a
keystroke as much as a segment of the upload (issue 13: ~1.5% of pings lost). Reading
it dry at every wake-up moves the waiting into the backlog, where the rule spares small
packets: at most BULK_LIMIT packets over SMALL bytes wait (as many as the kernel's queue
held), further ones are dropped (`dropped_overload`) and TCP backs off as before; small
packets (interactive traffic, ACKs, DNS) still get in (up to BACKLOG_LIMIT packets in
all), and nothing is reordered. The
kernel's queue (client.tun.TX_QUEUE_LEN) only absorbs what arrives while the loop is busy
elsewhere.

Inbound, the engine drains its socket in batches too (client.transport.drain) and hands
each ESP datagram to on_esp(), which decapsulates it and keeps the inner packet; flush(),
called at the end of every drain, writes them to the TUN device together, so no packet
waits beyond the wake-up that brought it. Writing them together is what lets the TUN
device coalesce the TCP segments of a download into 64 KB super-packets
(client.tcp_coalesce): the kernel runs TCP, and ACKs, once per super-packet, and fewer
ACKs are fewer packets for the outbound path to encrypt (tests/perf/b2b.py: the download
direction gains most).

One thread, by measurement: with a thread per direction the GIL hand-offs between them
cost more CPU per byte than the overlap of system calls and AEAD work gains on two cores
(tests/perf/b2b.py, ~50% more CPU seconds per GB moved, lower throughput).

Correctness: an outbound SA is used only here, so its sequence numbers stay strictly
increasing; install() swaps it with one reference assignment, and older inbound SAs stay
until remove_inbound(), so a rekey loses nothing. Coalescing never reorders the packets
of one flow, and the merged packet's TCP checksum still covers every byte.

Policy: an inner packet reaches the TUN device only if its inbound SA's traffic selectors
admit it (client.esp.selectors: source inside TSr, destination one of our addresses,
RFC 4301 section 5.2); the others are counted in `dropped_selector` and reported in the
log at most once every LOG_INTERVAL seconds, with the count since the last report.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections import deque
from collections.abc import Callable

from client.esp.sa import EspError, EspInbound, EspOutbound
from client.esp.selectors import InboundPolicy, Rule, describe
from client.tun import TunDevice
from client.udpgso import GsoSender, set_receive_buffer

log = logging.getLogger(__name__)

BATCH = 64  # packets encapsulated and sent per turn of the loop
# Packets read from the TUN device per wake-up at most (a flood cannot stall the loop).
READ_LIMIT = 1024
# Packets over SMALL bytes that may wait in the backlog: the kernel's default TUN queue
# length, so TCP meets the queue it met before (throughput as before), only the drops
# that end its overshoots spare small packets.
BULK_LIMIT = 500
SMALL = 512
BACKLOG_LIMIT = 2 * BULK_LIMIT  # packets of any size (a flood of small ones is shed too)
# The NAT-T socket's receive buffer: the default (~200 kB, ~90 datagrams) overflows when a
# burst arrives while the loop is busy, and every overflow is a loss TCP in the tunnel
# backs off from. 1 MB absorbs a few GSO bursts (~8 ms at 1 Gbit/s) without adding
# much queueing delay to a slower tunnel.
SOCKET_BUFFER = 1 << 20
READ_SIZE = 65535
LOG_INTERVAL = 5.0  # seconds between two drop reports of the same kind


class DataPlane:
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        tun: TunDevice,
        send_esp: Callable[[bytes], None],
        natt_socket: Callable[[], socket.socket | None] | None = None,
    ) -> None:
        """`send_esp` sends one ESP packet; `natt_socket`, if given, returns the connected
        NAT-T socket of the moment (None while there is none), for batched sends."""
        self._loop = loop
        self._tun = tun
        self._send_esp = send_esp
        self._natt_socket = natt_socket
        self._outbound: EspOutbound | None = None
        # Inbound SPI -> its SA and the per-IP-version checks of its traffic selectors.
        self._inbound: dict[int, tuple[EspInbound, tuple[Rule, ...]]] = {}
        self._reading = False
        self._gso: GsoSender | None = None  # for the socket natt_socket() returned last
        self._last_log: dict[str, float] = {}
        self._pending: list[bytes] = []  # inner packets of the current drain, for flush()
        self.bytes_in = 0  # inner bytes written to the TUN
        self.bytes_out = 0  # inner bytes read from the TUN and sent
        self.packets_in = 0
        self.packets_out = 0
        self.dropped = 0
        self.dropped_selector = 0  # authentic, but outside the SA's traffic selectors
        self.dropped_overload = 0  # outbound, more than BULK_LIMIT large packets waited
        # Packets read from the TUN device and not sent yet (oldest first), how many of
        # them are over SMALL bytes, and whether a turn to send more is scheduled.
        self._backlog: deque[bytes] = deque()
        self._bulk = 0
        self._resume: asyncio.Handle | None = None
        self._selector_logged = 0  # dropped_selector at the last log line
        self.last_inbound: float | None = None  # time.monotonic() of the last valid packet

    # -- SAs -------------------------------------------------------------------------
    def install(self, outbound: EspOutbound, inbound: EspInbound,
                policy: InboundPolicy) -> None:
        """Send with `outbound` from now on; accept `inbound` too, for the packets `policy`
        admits (older inbound SAs stay until remove_inbound(), so packets in flight during
        a rekey are not lost)."""
        self._inbound[inbound.spi] = (inbound, policy.rules)
        self._outbound = outbound

    def remove_inbound(self, spi: int) -> None:
        self._inbound.pop(spi, None)

    def clear(self) -> None:
        """Forget all SAs (tunnel down); TUN packets are dropped until the next install()."""
        self._outbound = None
        self._inbound.clear()
        self._discard_backlog()

    def _discard_backlog(self) -> None:
        self.dropped += len(self._backlog)
        self._backlog.clear()
        self._bulk = 0

    # -- loop wiring -----------------------------------------------------------------
    def start(self) -> None:
        if not self._reading:
            self._loop.add_reader(self._tun.fd, self._on_tun_readable)
            self._reading = True
            self._sender()

    def stop(self) -> None:
        self.flush()
        if self._reading:
            self._loop.remove_reader(self._tun.fd)
            self._reading = False
        if self._resume is not None:
            self._resume.cancel()
            self._resume = None
        self._discard_backlog()

    @property
    def backlog(self) -> int:
        """Outbound packets read from the TUN device and not sent yet."""
        return len(self._backlog)

    # -- outbound --------------------------------------------------------------------
    def _on_tun_readable(self) -> None:
        if self._resume is not None:  # this is the turn (or the device came first)
            self._resume.cancel()
            self._resume = None
        drained = self._read_tun()
        self._send_backlog()
        # The device is empty but the backlog is not: another turn after the loop's
        # other work (a device that still has packets wakes us up by itself).
        if drained and self._backlog and self._resume is None:
            self._resume = self._loop.call_soon(self._on_tun_readable)

    def _read_tun(self) -> bool:
        """Move what the TUN device has queued into the backlog, shedding large packets
        beyond BULK_LIMIT; True if the device was read dry."""
        read = self._tun.read
        backlog = self._backlog
        overload = 0
        drained = False
        for _ in range(READ_LIMIT):
            try:
                packet = read(READ_SIZE)
            except BlockingIOError:
                drained = True
                break
            except OSError as e:
                self._drop("tun-read", e)
                drained = True
                break
            if not packet:
                self._drop("tun-read", "offloaded (GSO or partial checksum) or empty")
                continue
            if self._outbound is None:  # no SA (yet): quietly, like a link that is down
                self.dropped += 1
                continue
            if len(packet) > SMALL:
                if self._bulk >= BULK_LIMIT or len(backlog) >= BACKLOG_LIMIT:
                    overload += 1
                    continue
                self._bulk += 1
            elif len(backlog) >= BACKLOG_LIMIT:
                overload += 1
                continue
            backlog.append(packet)
        if overload:
            # A full queue is TCP's ordinary congestion signal: counted, logged at debug.
            self.dropped_overload += overload
            self._drop("overload", "the backlog is full", overload, logging.DEBUG)
        return drained

    def _send_backlog(self) -> None:
        """Encapsulate and send up to BATCH packets of the backlog, oldest first."""
        backlog = self._backlog
        if not backlog:
            return
        sa = self._outbound
        if sa is None:
            self._discard_backlog()
            return
        batch: list[bytes] = []
        nbytes = 0
        popleft = backlog.popleft
        for _ in range(min(BATCH, len(backlog))):
            packet = popleft()
            if len(packet) > SMALL:
                self._bulk -= 1
            try:
                batch.append(sa.encapsulate(packet))
            except EspError as e:
                self._drop("encapsulate", e)
                continue
            nbytes += len(packet)
        if not batch:
            return
        try:
            gso = self._sender()
            if gso is not None:
                gso.send(batch)
            else:
                for esp in batch:
                    self._send_esp(esp)
        except OSError as e:  # e.g. ENETUNREACH while roaming: the packets are lost
            self._drop("send", e, len(batch), logging.DEBUG)
            return
        self.packets_out += len(batch)
        self.bytes_out += nbytes

    def _sender(self) -> GsoSender | None:
        sock = self._natt_socket() if self._natt_socket is not None else None
        if sock is None:
            return None
        if self._gso is None or self._gso.sock is not sock:
            self._gso = GsoSender(sock)
            set_receive_buffer(sock, SOCKET_BUFFER)
        return self._gso

    # -- inbound ---------------------------------------------------------------------
    def on_esp(self, datagram: bytes) -> None:
        """One ESP datagram from the NAT-T socket (no non-ESP marker); its inner packet is
        written by the next flush()."""
        entry = self._inbound.get(int.from_bytes(datagram[:4], "big"))
        if entry is None or len(datagram) < 8:
            self._drop("unknown SPI", datagram[:4].hex())
            return
        sa, rules = entry
        try:
            inner = sa.decapsulate(datagram)
        except EspError as e:
            self._drop("decapsulate", e)
            return
        self.last_inbound = time.monotonic()
        if not inner:  # a dummy packet (traffic flow confidentiality padding)
            return
        # decapsulate() matched the version nibble to the next header: inner[0] exists.
        if rules[inner[0] >> 4](inner):
            self._pending.append(inner)
        else:
            self._drop_selector(inner)

    def flush(self) -> None:
        """Write the inner packets collected since the last flush to the TUN device."""
        pending = self._pending
        if not pending:
            return
        self._pending = []
        lost, lost_bytes, error = self._tun.write_batch(pending)
        self.packets_in += len(pending) - lost
        self.bytes_in += sum(map(len, pending)) - lost_bytes
        if lost:
            self._drop("tun-write", error, lost)

    def _drop_selector(self, inner: bytes) -> None:
        self.dropped += 1
        self.dropped_selector += 1
        now = time.monotonic()
        if now - self._last_log.get("selector", -LOG_INTERVAL) >= LOG_INTERVAL:
            self._last_log["selector"] = now
            log.warning("dropped %d inbound packet(s) outside the traffic selectors of their "
                        "CHILD_SA since the last report (last: %s) [%d in all]",
                        self.dropped_selector - self._selector_logged, describe(inner),
                        self.dropped_selector)
            self._selector_logged = self.dropped_selector

    def _drop(
        self, kind: str, detail: object, count: int = 1, level: int = logging.WARNING
    ) -> None:
        self.dropped += count
        now = time.monotonic()
        if now - self._last_log.get(kind, -LOG_INTERVAL) >= LOG_INTERVAL:
            self._last_log[kind] = now
            log.log(level, "dropping packet (%s): %s [%d dropped so far]", kind, detail,
                    self.dropped)
