"""Dead-peer detection (RFC 7296 2.4): an empty INFORMATIONAL request.

The Lifecycle queues it after `dpd` seconds without anything authentic from the gateway
(IKE or ESP). An answer proves the gateway alive; none within the retransmission budget
ends the IKE SA with PeerUnreachable.
"""

from __future__ import annotations

import logging

from ..constants import ExchangeType
from ..message import Message
from .base import Status, Task
from .ike_mobike import dpd_build, dpd_process

log = logging.getLogger(__name__)


class IkeDpd(Task):
    exchange = ExchangeType.INFORMATIONAL

    def build(self, msg: Message) -> None:
        log.info("no traffic from the gateway for a while: checking liveness")
        dpd_build(self.sa, msg)  # behind a NAT: did our mapping change? (RFC 4555)

    def process(self, msg: Message) -> Status:
        dpd_process(self.sa, msg)
        return Status.DONE
