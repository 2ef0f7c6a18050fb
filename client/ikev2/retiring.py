"""An IKE SA that a rekey replaced, kept only until its Delete exchange is over.

After an IKE rekey (RFC 7296 1.3.2, 2.8.2) the old SA, or a redundant new one from a
collision, still has a Delete to send or to answer, with its own keys and message IDs.
This answers the gateway's requests on it (its Delete, a late retransmission; a new
CREATE_CHILD_SA gets TEMPORARY_FAILURE, 2.25.2) and sends our Delete when it is ours to
send. It never fails the connection: a retiring SA that goes quiet is simply forgotten.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from .constants import ExchangeType, NotifyType, ProtocolId
from .errors import RemoteProtocolError
from .message import Header, Message, SkContext
from .payloads import DeletePayload, NotifyPayload
from .task_manager import RetransmitPolicy

log = logging.getLogger(__name__)

MIN_WAIT = 30.0  # how long at least to wait for the gateway's Delete of an SA it replaced


class RetiringIkeSa:
    def __init__(self, *, spi_i: bytes, spi_r: bytes, initiator: bool, sk: SkContext,
                 next_id: int, peer_next_id: int, last_response: tuple | None,
                 send: Callable[[list[bytes]], None], policy: RetransmitPolicy,
                 now: float) -> None:
        self.spi_i, self.spi_r, self.initiator, self.sk = spi_i, spi_r, initiator, sk
        self.next_id = next_id
        self.peer_next_id = peer_next_id
        self.last_response = last_response  # (message ID, datagram(s)) of our last answer
        self.send = send
        self.policy = policy
        self.expires = now + max(policy.budget(), MIN_WAIT)
        self.request: list[bytes] | None = None
        self.request_id = 0
        self.attempt = 0
        self.deadline = 0.0
        self.done = False

    @property
    def local_spi(self) -> bytes:
        return self.spi_i if self.initiator else self.spi_r

    def __str__(self) -> str:
        return f"{self.spi_i.hex()}_i {self.spi_r.hex()}_r"

    def matches(self, header: Header) -> bool:
        return header.spi_i == self.spi_i and header.spi_r == self.spi_r

    # -- our Delete -------------------------------------------------------------------
    def start_delete(self, now: float) -> None:
        msg = self._message(ExchangeType.INFORMATIONAL, self.next_id, False,
                            [DeletePayload(ProtocolId.IKE, [])])
        self.request = [msg.encode(self.sk)]
        self.request_id = self.next_id
        self.next_id += 1
        self.attempt = 0
        self.deadline = now + self.policy.delay(0)
        log.info("deleting the replaced IKE_SA %s: sending %s", self, msg.summary())
        self.send(self.request)

    def get_timer(self) -> float | None:
        if self.done:
            return None
        return self.deadline if self.request is not None else self.expires

    def handle_timer(self, now: float) -> None:
        if self.done:
            return
        if self.request is None:
            if now >= self.expires:
                log.info("the gateway never deleted the replaced IKE_SA %s; forgetting it", self)
                self.done = True
            return
        if now < self.deadline:
            return
        if self.attempt >= self.policy.tries:
            log.info("no answer to our Delete of the replaced IKE_SA %s; forgetting it", self)
            self.done = True
            return
        self.attempt += 1
        self.deadline = now + self.policy.delay(self.attempt)
        log.info("retransmit %d of INFORMATIONAL request %d (replaced IKE_SA)", self.attempt,
                 self.request_id)
        self.send(self.request)

    # -- the gateway's messages -------------------------------------------------------
    def receive(self, header: Header, data: bytes) -> None:
        if self.done:
            raise RemoteProtocolError(f"message for the deleted IKE_SA {self}")
        if header.is_initiator == self.initiator:
            raise RemoteProtocolError("message with our own initiator flag")
        if header.is_response:
            if self.request is None or header.message_id != self.request_id:
                raise RemoteProtocolError(f"unexpected response {header.message_id} on the "
                                          f"replaced IKE_SA {self}")
            msg = self._decode(data)
            log.info("received %s on the replaced IKE_SA: it is gone", msg.summary())
            self.done = True
            return
        if header.message_id == self.peer_next_id - 1 and self.last_response:
            log.info("retransmitting our response %d (replaced IKE_SA)", header.message_id)
            self.send(_datagrams(self.last_response[1]))
            return
        if header.message_id != self.peer_next_id:
            raise RemoteProtocolError(f"request with unexpected message ID {header.message_id}")
        msg = self._decode(data)
        log.info("received %s on the replaced IKE_SA", msg.summary())
        self.peer_next_id += 1
        payloads = []
        if msg.exchange == ExchangeType.CREATE_CHILD_SA:
            payloads.append(NotifyPayload(NotifyType.TEMPORARY_FAILURE))
        closing = any(d.protocol == ProtocolId.IKE for d in msg.get_all(DeletePayload))
        reply = self._message(msg.exchange, msg.message_id, True, payloads)
        packet = reply.encode(self.sk)
        log.info("sending %s (replaced IKE_SA)", reply.summary())
        self.last_response = (msg.message_id, [packet])
        self.send([packet])
        if closing:
            log.info("the gateway deleted the replaced IKE_SA %s", self)
            self.done = True

    def _decode(self, data: bytes) -> Message:
        """After IKE_SA_INIT only an SK-protected message is the gateway's (RFC 7296 2.21.1):
        an unprotected one, request or response, could come from anyone."""
        msg = Message.decode(data, self.sk)
        if not msg.encrypted:
            kind = "response" if msg.is_response else "request"
            raise RemoteProtocolError(f"unprotected {kind} on the replaced IKE_SA")
        return msg

    def _message(self, exchange: int, message_id: int, response: bool, payloads: list
                 ) -> Message:
        return Message(spi_i=self.spi_i, spi_r=self.spi_r, exchange=exchange,
                       is_response=response, is_initiator=self.initiator,
                       message_id=message_id, payloads=payloads, encrypted=True)


def _datagrams(packets: bytes | list[bytes]) -> list[bytes]:
    return [packets] if isinstance(packets, bytes) else list(packets)
