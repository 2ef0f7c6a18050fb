"""Within IKE_AUTH: the gateway's AUTH_LIFETIME (RFC 4478).

It tells how long the gateway accepts our authentication; the Lifecycle reauthenticates
(a new IKE SA from scratch, then the old one deleted) before it runs out.
"""

from __future__ import annotations

import logging
import struct

from ..constants import ExchangeType, NotifyType
from ..message import Message
from .base import Status, Task

log = logging.getLogger(__name__)


class IkeAuthLifetime(Task):
    exchange = ExchangeType.IKE_AUTH

    def process(self, msg: Message) -> Status:
        lifetime = msg.notify(NotifyType.AUTH_LIFETIME)
        if lifetime is not None and self.sa.peer_authenticated:
            (self.sa.auth_lifetime,) = struct.unpack("!I", lifetime.data)
            log.info("the gateway accepts our authentication for %d s", self.sa.auth_lifetime)
        return Status.DONE if self.sa.auth_done else Status.NEED_MORE
