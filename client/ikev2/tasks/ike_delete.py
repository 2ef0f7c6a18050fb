"""INFORMATIONAL with a Delete of the IKE SA (and with it every CHILD_SA): disconnect."""

from __future__ import annotations

from ..constants import ExchangeType, ProtocolId
from ..message import Message
from ..payloads import DeletePayload
from .base import Status, Task


class IkeDelete(Task):
    exchange = ExchangeType.INFORMATIONAL

    def build(self, msg: Message) -> None:
        msg.payloads.append(DeletePayload(ProtocolId.IKE, []))

    def process(self, msg: Message) -> Status:
        return Status.DONE
