"""INFORMATIONAL with a Delete of one CHILD_SA (RFC 7296 1.4.1): the SA a rekey replaced,
or our redundant one after a lost rekey collision (2.8.1).

The gateway answers with a Delete of its half; until the answer arrives the SA still
takes inbound packets, so none in flight is lost.
"""

from __future__ import annotations

import logging
import struct
from typing import TYPE_CHECKING

from ..child_sa import ChildSa, ChildState
from ..constants import ExchangeType, ProtocolId
from ..message import Message
from ..payloads import DeletePayload
from .base import Status, Task

if TYPE_CHECKING:
    from ..ike_sa import IkeSA

log = logging.getLogger(__name__)


class ChildDelete(Task):
    exchange = ExchangeType.INFORMATIONAL

    def __init__(self, sa: IkeSA, child: ChildSa) -> None:
        super().__init__(sa)
        self.child = child

    def obsolete(self) -> bool:
        return self.child not in self.sa.life.children

    def build(self, msg: Message) -> None:
        self.child.state = ChildState.DELETING
        log.info("deleting CHILD_SA %s", self.child)
        msg.payloads.append(DeletePayload(ProtocolId.ESP, [struct.pack("!I", self.child.spi_in)]))

    def process(self, msg: Message) -> Status:
        theirs = struct.pack("!I", self.child.spi_out)
        if not any(theirs in d.spis for d in msg.get_all(DeletePayload)):
            # It crossed the gateway's own Delete of the same SA (RFC 7296 1.4.1).
            log.info("the gateway's answer to our Delete of CHILD_SA %s names no SA", self.child)
        self.sa.life.remove_child(self.child)
        return Status.DONE
