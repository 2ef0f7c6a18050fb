"""The TUN device (python-pytun): raw IP packets, no packet-info header, non-blocking.

Opened with IFF_VNET_HDR when the kernel allows it: every packet then goes behind a
10-byte virtio_net_hdr, which lets a batch of TCP segments from the tunnel be written as
one coalesced super-packet (client.tcp_coalesce), so the kernel's TCP runs and ACKs once
per ~64 KB instead of once or twice per segment. No offload is enabled for reads
(TUNSETOFFLOAD stays 0): the kernel segments and checksums what we read, whose header is
then zero, so no checksum ever has to be computed here. Where IFF_VNET_HDR or a GSO write
is refused, packets are written one by one as before.

Only the device itself lives here (open, MTU, read/write, close). Addresses, link state
and routes are set by client.netconf.routes.RouteManager over rtnetlink.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import socket
import struct

import pytun

from client.tcp_coalesce import F_NEEDS_CSUM, PLAIN, VNET_HDR_LEN, Merged, coalesce

log = logging.getLogger(__name__)

# The device's queue towards us (the kernel's default is 500 packets, ~8 ms of a
# 600 Mbit/s upload): packets wait there while the loop is busy with something else, and
# the kernel drops what arrives while it is full, whatever it is. The data plane reads it
# dry at every wake-up and sheds load itself (client.dataplane), so this queue only
# absorbs the loop's pauses; 1000 (~16 ms) is Ethernet's default.
TX_QUEUE_LEN = 1000
SIOCSIFTXQLEN = 0x8943  # linux/sockios.h
_IFREQ_QLEN = struct.Struct("16si20x")  # struct ifreq: name, ifr_qlen


def set_tx_queue_len(name: str, qlen: int) -> None:
    """The device's queue length (what `ip link set NAME txqueuelen QLEN` sets); the TUN
    driver resizes its queue at once. A failure leaves the kernel's default."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            fcntl.ioctl(sock, SIOCSIFTXQLEN, _IFREQ_QLEN.pack(name.encode(), qlen))
    except OSError as e:
        log.debug("cannot set the queue length of %s: %s", name, e)


class TunDevice:
    def __init__(self, dev: pytun.TunTapDevice, vnet_hdr: bool = False) -> None:
        self._dev = dev
        self.name: str = dev.name
        self.fd: int = dev.fileno()
        self.vnet_hdr = vnet_hdr  # packets carry a virtio_net_hdr both ways
        self.gso = vnet_hdr  # batches are written coalesced (until the kernel refuses)
        self.writes = 0  # write() system calls
        self.merged = 0  # of which coalesced super-packets
        self._closed = False

    @classmethod
    def open(cls, name: str = "vpn%d", mtu: int = 1400, vnet_hdr: bool = True) -> TunDevice:
        """Create a TUN device; a "%d" in `name` lets the kernel pick a free number."""
        flags = pytun.IFF_TUN | pytun.IFF_NO_PI
        dev = None
        if vnet_hdr:
            try:
                dev = pytun.TunTapDevice(name=name, flags=flags | pytun.IFF_VNET_HDR)
            except pytun.Error as exc:
                log.info("TUN device without IFF_VNET_HDR (%s): no receive coalescing", exc)
                vnet_hdr = False
        if dev is None:
            dev = pytun.TunTapDevice(name=name, flags=flags)
        try:
            dev.mtu = mtu
            os.set_blocking(dev.fileno(), False)
        except BaseException:
            dev.close()
            raise
        set_tx_queue_len(dev.name, TX_QUEUE_LEN)
        return cls(dev, vnet_hdr)

    @property
    def mtu(self) -> int:
        return self._dev.mtu

    def read(self, max_size: int = 65535) -> bytes:
        """One IP packet; raises BlockingIOError when none is queued. b"" stands for a
        packet the kernel handed over offloaded (GSO or a partial checksum), which we
        never asked for and cannot send as it is: the caller drops it."""
        if not self.vnet_hdr:
            return os.read(self.fd, max_size)
        buf = os.read(self.fd, max_size + VNET_HDR_LEN)
        if len(buf) <= VNET_HDR_LEN or buf[1] or buf[0] & F_NEEDS_CSUM:  # gso_type, flags
            return b""
        return buf[VNET_HDR_LEN:]

    def write(self, packet: bytes) -> None:
        """Hand one IP packet to the kernel (BlockingIOError if its queue is full)."""
        os.write(self.fd, PLAIN + packet if self.vnet_hdr else packet)
        self.writes += 1

    def write_batch(self, packets: list[bytes]) -> tuple[int, int, OSError | None]:
        """Hand `packets` (in order) to the kernel, TCP segments coalesced where they can
        be. Returns how many packets were lost, their bytes, and the last error."""
        if not self.gso:
            return self._write_each(packets)
        lost = lost_bytes = 0
        error: OSError | None = None
        write, fd = os.write, self.fd
        for item in coalesce(packets):
            if type(item) is bytes:
                try:
                    write(fd, item)
                    self.writes += 1
                except OSError as exc:
                    lost, lost_bytes, error = lost + 1, lost_bytes + len(item) - VNET_HDR_LEN, exc
                continue
            assert isinstance(item, Merged)
            try:
                write(fd, item.data)
                self.writes += 1
                self.merged += 1
                continue
            except OSError as exc:
                if exc.errno == errno.EINVAL and self.gso:
                    log.info("the kernel refuses coalesced TUN writes (%s): writing TCP"
                             " segments one by one", exc)
                    self.gso = False
                else:
                    lost += len(item.segments)
                    lost_bytes += sum(map(len, item.segments))
                    error = exc
                    continue
            n, nbytes, exc2 = self._write_each(item.segments)
            lost, lost_bytes, error = lost + n, lost_bytes + nbytes, exc2 or error
        return lost, lost_bytes, error

    def _write_each(self, packets: list[bytes]) -> tuple[int, int, OSError | None]:
        lost = lost_bytes = 0
        error: OSError | None = None
        write, fd, hdr = os.write, self.fd, self.vnet_hdr
        for p in packets:
            try:
                write(fd, PLAIN + p if hdr else p)
                self.writes += 1
            except OSError as exc:
                lost, lost_bytes, error = lost + 1, lost_bytes + len(p), exc
        return lost, lost_bytes, error

    def close(self) -> None:
        """Close the fd: the kernel deletes the (non-persistent) device with its addresses."""
        if not self._closed:
            self._closed = True
            self._dev.close()

    def __enter__(self) -> TunDevice:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
