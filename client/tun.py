"""The TUN device (python-pytun): raw IP packets, no packet-info header, non-blocking.

Only the device itself lives here (open, MTU, read/write, close). Addresses, link state
and routes are set by client.netconf.routes.RouteManager through iproute2.
"""

from __future__ import annotations

import os

import pytun


class TunDevice:
    def __init__(self, dev: pytun.TunTapDevice) -> None:
        self._dev = dev
        self.name: str = dev.name
        self.fd: int = dev.fileno()
        self._closed = False

    @classmethod
    def open(cls, name: str = "vpn%d", mtu: int = 1400) -> TunDevice:
        """Create a TUN device; a "%d" in `name` lets the kernel pick a free number."""
        dev = pytun.TunTapDevice(name=name, flags=pytun.IFF_TUN | pytun.IFF_NO_PI)
        try:
            dev.mtu = mtu
            os.set_blocking(dev.fileno(), False)
        except BaseException:
            dev.close()
            raise
        return cls(dev)

    @property
    def mtu(self) -> int:
        return self._dev.mtu

    def read(self, max_size: int = 65535) -> bytes:
        """One IP packet; raises BlockingIOError when none is queued."""
        return os.read(self.fd, max_size)

    def write(self, packet: bytes) -> None:
        """Hand one IP packet to the kernel (BlockingIOError if its queue is full)."""
        os.write(self.fd, packet)

    def close(self) -> None:
        """Close the fd: the kernel deletes the (non-persistent) device with its addresses."""
        if not self._closed:
            self._closed = True
            self._dev.close()

    def __enter__(self) -> TunDevice:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
