"""Reassembly of IKE fragments (RFC 7383 section 2.6), bounded in count and size.

The caller verifies each fragment first (message.decode_fragment): a forged fragment
never reaches the buffer, so it can neither displace a genuine one nor reset the
reassembly. One Reassembler collects one message at a time; a fragment of another
message (a new message ID) discards what was collected for the old one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from .errors import RemoteProtocolError
from .message import Fragment, Header

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FragmentLimits:
    """Per message. strongSwan accepts up to 255 fragments; an IKE message of 64 KiB is
    already larger than anything a gateway sends (a long certificate chain is ~10 KiB)."""

    max_fragments: int = 255
    max_bytes: int = 65535


@dataclass(frozen=True)
class Reassembled:
    header: Header  # of the last fragment: exchange, flags and message ID are shared
    first_payload: int
    chain: bytes  # the decrypted inner payload chain
    fragments: int
    size: int  # of all the datagrams together


class Reassembler:
    def __init__(self, limits: FragmentLimits | None = None) -> None:
        self.limits = limits or FragmentLimits()
        self._key: tuple[int, int] | None = None  # (message ID, exchange)
        self._total = 0
        self._parts: dict[int, bytes] = {}
        self._first_payload = 0
        self._size = 0
        self._wire = 0

    @property
    def pending(self) -> int:
        """How many fragments are held for an incomplete message."""
        return len(self._parts)

    def clear(self) -> None:
        self._key = None
        self._total = self._size = self._wire = self._first_payload = 0
        self._parts = {}

    def add(self, frag: Fragment) -> Reassembled | None:
        """Keep a verified fragment; the whole message once its last fragment arrived.

        A duplicate is ignored. Raises RemoteProtocolError for a fragment that must be
        dropped; what was collected so far is kept unless the message broke a limit.
        """
        limits = self.limits
        if frag.total > limits.max_fragments:
            raise RemoteProtocolError(
                f"IKE fragment {frag.number} of {frag.total}: more than "
                f"{limits.max_fragments} fragments"
            )
        key = (frag.header.message_id, frag.header.exchange)
        if key != self._key:
            if self._parts:
                log.debug("discarding %d fragments of message %d", len(self._parts),
                          self._key[0] if self._key else -1)
            self.clear()
            self._key, self._total = key, frag.total
        elif frag.total > self._total:
            # RFC 7383 2.6: the sender shrank its fragments (path MTU); start over.
            log.debug("fragment count of message %d grew from %d to %d: starting over",
                      key[0], self._total, frag.total)
            self.clear()
            self._key, self._total = key, frag.total
        elif frag.total < self._total:
            raise RemoteProtocolError(
                f"IKE fragment {frag.number} of {frag.total}: the message has {self._total}"
            )
        if frag.number in self._parts:
            # Benign: a retransmitted message brings every fragment again.
            log.debug("IKE fragment %d of %d: duplicate", frag.number, frag.total)
            return None
        if self._size + len(frag.data) > limits.max_bytes:
            self.clear()
            raise RemoteProtocolError(
                f"IKE fragments of message {key[0]}: more than {limits.max_bytes} bytes"
            )
        self._parts[frag.number] = frag.data
        self._size += len(frag.data)
        self._wire += frag.size
        if frag.number == 1:
            self._first_payload = frag.first_payload
        if len(self._parts) < self._total:
            return None
        chain = b"".join(self._parts[n] for n in range(1, self._total + 1))
        whole = Reassembled(frag.header, self._first_payload, chain, self._total, self._wire)
        self.clear()
        return whole
