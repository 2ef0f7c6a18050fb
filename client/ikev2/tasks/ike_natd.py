"""NAT detection (RFC 7296 2.23), with forced UDP encapsulation as strongSwan's Android client.

We always want UDP-encapsulated ESP (a userspace client cannot receive raw ESP), so our
NAT_DETECTION_SOURCE_IP carries a random hash: the gateway then believes we are behind a
NAT and floats to port 4500 with encapsulation, which is exactly what we need.
"""

from __future__ import annotations

import hashlib
import struct
from ipaddress import ip_address

from ..constants import ExchangeType, NotifyType
from ..message import Message
from ..payloads import NotifyPayload
from .base import Status, Task


def natd_hash(spi_i: bytes, spi_r: bytes, addr: str, port: int) -> bytes:
    return hashlib.sha1(
        spi_i + spi_r + ip_address(addr).packed + struct.pack("!H", port)
    ).digest()


class IkeNatd(Task):
    exchange = ExchangeType.IKE_SA_INIT

    def build(self, msg: Message) -> None:
        sa = self.sa
        local, remote = sa.local_addr, sa.remote_addr
        if sa.config.force_encap:
            src = sa.rng(20)
        else:
            src = natd_hash(sa.spi_i, b"\0" * 8, local[0], local[1])
        dst = natd_hash(sa.spi_i, b"\0" * 8, remote[0], remote[1])
        msg.payloads.append(NotifyPayload(NotifyType.NAT_DETECTION_SOURCE_IP, src))
        msg.payloads.append(NotifyPayload(NotifyType.NAT_DETECTION_DESTINATION_IP, dst))

    def process(self, msg: Message) -> Status:
        sa = self.sa
        sources = [
            n.data for n in msg.notifies() if n.notify_type == NotifyType.NAT_DETECTION_SOURCE_IP
        ]
        dest = msg.notify(NotifyType.NAT_DETECTION_DESTINATION_IP)
        if not sources or dest is None:
            # The gateway does not do NAT-T; we still encapsulate on 4500 if asked to.
            sa.nat_local = sa.nat_remote = False
            return Status.DONE
        # The hashes of the response use the full SPI pair (RFC 7296 2.23).
        local, remote = sa.local_addr, sa.remote_addr
        sa.nat_local = dest.data != natd_hash(msg.spi_i, msg.spi_r, local[0], local[1])
        expected_src = natd_hash(msg.spi_i, msg.spi_r, remote[0], remote[1])
        sa.nat_remote = expected_src not in sources
        sa.mobike_state.observe(msg.spi_i, msg.spi_r, dest.data)  # to see it change later
        return Status.DONE
