"""The task interface, after strongSwan's libcharon: one concern per task.

A task adds payloads to an outgoing request (build) and reads the matching response
(process). The task manager batches the active tasks of one exchange into one message.
"""

from __future__ import annotations

from enum import Enum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..ike_sa import IkeSA
    from ..message import Message


class Status(Enum):
    DONE = "done"  # nothing more to send or expect for this task
    NEED_MORE = "need_more"  # another round of the same exchange (EAP)
    RETRY = "retry"  # resend the whole exchange from scratch (COOKIE, INVALID_KE_PAYLOAD)


class Task:
    exchange: int

    def __init__(self, sa: IkeSA) -> None:
        self.sa = sa

    def build(self, msg: Message) -> None:
        """Add this task's payloads to the outgoing request."""

    def process(self, msg: Message) -> Status:
        """Read the response; raise an IkeError subclass on failure."""
        return Status.DONE

    def obsolete(self) -> bool:
        """True when a queued task no longer has anything to do (its SA is gone)."""
        return False
