"""MOBIKE (RFC 4555): announce support in IKE_AUTH. Address updates come with roaming."""

from __future__ import annotations

from ..constants import ExchangeType, NotifyType
from ..message import Message
from ..payloads import NotifyPayload
from .base import Status, Task


class IkeMobike(Task):
    exchange = ExchangeType.IKE_AUTH

    def __init__(self, sa) -> None:
        super().__init__(sa)
        self.sent = False

    def build(self, msg: Message) -> None:
        if not self.sent and self.sa.config.mobike:
            msg.payloads.append(NotifyPayload(NotifyType.MOBIKE_SUPPORTED))
        self.sent = True

    def process(self, msg: Message) -> Status:
        if msg.notify(NotifyType.MOBIKE_SUPPORTED) is not None and self.sa.peer_authenticated:
            self.sa.peer_mobike = self.sa.config.mobike
        return Status.DONE if self.sa.auth_done else Status.NEED_MORE
