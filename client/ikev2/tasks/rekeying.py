"""What rekeying the IKE SA and rekeying a CHILD_SA share as initiators of
CREATE_CHILD_SA: fresh nonces, switching to the group the responder asks for
(INVALID_KE_PAYLOAD, RFC 7296 1.3), and reading the response's proposal and errors."""

from __future__ import annotations

import logging
import struct
from typing import Protocol

from ..constants import NotifyType
from ..crypto import KeyExchange, new_key_exchange
from ..errors import RemoteProtocolError
from ..message import Message
from ..payloads import NotifyPayload, SaPayload
from ..proposals import Proposal, check_selected, with_dh_first

log = logging.getLogger(__name__)

NONCE_SIZE = 32
MAX_KE_RETRIES = 3


class KeyExchanging(Protocol):
    """A rekeying task: what it offers and the key exchange it sends."""

    proposals: list[Proposal]
    group: int | None
    ke: KeyExchange | None
    ke_retries: int


def notify_name(ntype: int) -> str:
    try:
        return NotifyType(ntype).name
    except ValueError:
        return str(ntype)


def take_requested_group(task: KeyExchanging, msg: Message) -> bool:
    """The responder refused our key exchange and named the group it wants: switch to it
    (up to MAX_KE_RETRIES times). True when the task should send its request again."""
    invalid_ke = msg.notify(NotifyType.INVALID_KE_PAYLOAD)
    if invalid_ke is None or task.ke_retries >= MAX_KE_RETRIES:
        return False
    (group,) = struct.unpack("!H", invalid_ke.data)
    task.ke_retries += 1
    task.proposals = with_dh_first(task.proposals, group)
    task.group, task.ke = group, new_key_exchange(group)
    log.info("gateway asked for key exchange group %d, rekeying again", group)
    return True


def first_error(msg: Message) -> NotifyPayload | None:
    return next((n for n in msg.notifies() if n.is_error), None)


def selected_proposal(offered: list[Proposal], sa_payload: SaPayload, what: str) -> Proposal:
    """The one proposal the responder chose, which must be one we offered."""
    if len(sa_payload.proposals) != 1:
        raise RemoteProtocolError(f"the {what} response must carry one proposal")
    return check_selected(offered, sa_payload.proposals[0])
