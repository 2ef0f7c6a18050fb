"""UDP segmentation offload (Linux UDP_SEGMENT) for the ESP socket, and its buffer size.

With UDP_SEGMENT one sendmsg() carries up to 64 datagrams of one size (the last may be
shorter): one trip through the UDP/IP stack instead of one per packet. Python lacks the
constant, not the call.
"""

from __future__ import annotations

import errno
import logging
import socket
import struct
from collections.abc import Iterator

log = logging.getLogger(__name__)

SOL_UDP = 17
UDP_SEGMENT = 103  # linux/udp.h
MAX_SEGMENTS = 64  # UDP_MAX_SEGMENTS
MAX_PAYLOAD = 65507 - 40  # one UDP datagram (IPv4 bound; room for an IPv6 header too)
SO_RCVBUFFORCE = 33
_U16 = struct.Struct("=H")
# What a kernel or device without UDP GSO answers (older kernels, no checksum offload).
_NO_GSO = (errno.EINVAL, errno.EIO, errno.EOPNOTSUPP)


def runs(packets: list[bytes]) -> Iterator[list[bytes]]:
    """Split `packets` (in order) into runs one GSO send can carry: every packet of a run
    has the size of the first, except that the last may be shorter."""
    run: list[bytes] = []
    size = total = 0
    for p in packets:
        n = len(p)
        if run and (n > size or len(run) == MAX_SEGMENTS or total + n > MAX_PAYLOAD):
            yield run
            run = []
        if not run:
            size, total = n, 0
        run.append(p)
        total += n
        if n < size:  # a shorter packet ends its run
            yield run
            run = []
    if run:
        yield run


class GsoSender:
    """Sends lists of datagrams on a connected UDP socket, with UDP_SEGMENT while it works."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.gso = True

    def send(self, packets: list[bytes]) -> None:
        """Send all of `packets` in order; OSError from the socket propagates."""
        sendmsg, send = self.sock.sendmsg, self.sock.send
        for run in runs(packets) if self.gso else ([p] for p in packets):
            if len(run) == 1:
                send(run[0])
                continue
            try:
                sendmsg(run, [(SOL_UDP, UDP_SEGMENT, _U16.pack(len(run[0])))])
            except OSError as e:
                if e.errno not in _NO_GSO:
                    raise
                log.info("UDP GSO unavailable (%s); sending datagrams one by one", e)
                self.gso = False
                for p in run:
                    send(p)


def set_receive_buffer(sock: socket.socket, size: int) -> None:
    """At least `size` bytes of receive buffer, beyond net.core.rmem_max when privileged."""
    try:
        if sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) >= size:
            return
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, size)
        except PermissionError:  # not CAP_NET_ADMIN: as much as rmem_max allows
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
    except OSError as e:
        log.debug("cannot enlarge the socket receive buffer: %s", e)
