"""Rekeying the IKE SA (RFC 7296 1.3.2, 2.18): CREATE_CHILD_SA with SA(IKE, new SPI) Ni KE.

The new SA's keys come from the old SK_d (SKEYSEED = prf(SK_d, g^ir | Ni | Nr)); whoever
started the winning exchange is the new SA's initiator, and message IDs restart at 0.
Moving the CHILD_SAs, deleting the old SA and settling collisions is the Lifecycle's
business; this module builds and reads the messages and derives the keys.
"""

from __future__ import annotations

import logging
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..constants import ExchangeType, NotifyType, ProtocolId, TransformType
from ..crypto import SkCipher, new_key_exchange, prf_for
from ..errors import NoProposalChosen, RemoteProtocolError
from ..keymat import IkeKeys, derive_rekeyed_ike_keys
from ..message import Message, SkContext
from ..payloads import KePayload, NoncePayload, NotifyPayload, SaPayload
from ..proposals import (
    Proposal,
    first_dh_group,
    format_proposal,
    select_proposal,
    with_dh_first,
    with_spi,
)
from .base import Status, Task
from .rekeying import (
    NONCE_SIZE,
    first_error,
    notify_name,
    selected_proposal,
    take_requested_group,
)

if TYPE_CHECKING:
    from ..ike_sa import IkeSA
    from ..lifecycle import Lifecycle

log = logging.getLogger(__name__)

@dataclass(repr=False)
class IkeKeyset:
    """Everything that changes when the IKE SA is rekeyed."""

    spi_i: bytes
    spi_r: bytes
    initiator: bool  # we are the initiator of the new SA (we started its exchange)
    prf: Any
    keys: IkeKeys
    sk: SkContext
    proposal: Proposal
    proposal_name: str
    lower_nonce: bytes  # the lower of the exchange's two nonces, for collisions (2.8.2)

    @property
    def local_spi(self) -> bytes:
        return self.spi_i if self.initiator else self.spi_r

    def __repr__(self) -> str:  # keys never end up in logs
        return f"IkeKeyset({self.spi_i.hex()}_i {self.spi_r.hex()}_r)"


def new_keyset(sa: IkeSA, chosen: Proposal, shared: bytes, ni: bytes, nr: bytes,
               spi_i: bytes, spi_r: bytes, initiator: bool) -> IkeKeyset:
    encr = chosen.first(TransformType.ENCR)
    integ = chosen.first(TransformType.INTEG)
    prf_t = chosen.first(TransformType.PRF)
    if encr is None or prf_t is None:
        raise RemoteProtocolError("the IKE proposal lacks an encryption algorithm or a PRF")
    cipher = SkCipher(encr.id, encr.key_length, integ.id if integ else None)
    prf = prf_for(prf_t.id)
    keys = derive_rekeyed_ike_keys(sa.prf, sa.keys.sk_d, prf, cipher.encr_key_len,
                                   cipher.integ_key_len, shared, ni, nr, spi_i, spi_r)
    if initiator:
        sk = SkContext(cipher, keys.sk_ei, keys.sk_ai, keys.sk_er, keys.sk_ar, rng=sa.rng)
    else:
        sk = SkContext(cipher, keys.sk_er, keys.sk_ar, keys.sk_ei, keys.sk_ai, rng=sa.rng)
    return IkeKeyset(spi_i, spi_r, initiator, prf, keys, sk, chosen, format_proposal(chosen),
                     min(ni, nr))


def new_ike_spi(sa: IkeSA) -> bytes:
    while True:
        spi = sa.rng(8)
        if any(spi):
            return spi


class IkeRekey(Task):
    """We rekey the IKE SA because its lifetime is up."""

    exchange = ExchangeType.CREATE_CHILD_SA

    def __init__(self, sa: IkeSA) -> None:
        super().__init__(sa)
        self.rekeys = (sa.spi_i, sa.spi_r)
        self.spi = new_ike_spi(sa)
        self.nonce = sa.rng(NONCE_SIZE)
        current = sa.ike_proposal.first(TransformType.DH) if sa.ike_proposal else None
        proposals = with_spi(sa.config.ike_proposals, self.spi)
        self.group = current.id if current else first_dh_group(proposals)
        if self.group is None:
            raise RemoteProtocolError("no key exchange group for rekeying the IKE SA")
        try:
            # The group in use was acceptable: offer only it, so no INVALID_KE round.
            proposals = with_dh_first(proposals, self.group)
        except NoProposalChosen:  # the group in use is not in our configuration
            pass
        self.proposals = proposals
        self.ke = new_key_exchange(self.group)
        self.ke_retries = 0

    def obsolete(self) -> bool:
        return (self.sa.spi_i, self.sa.spi_r) != self.rekeys

    def build(self, msg: Message) -> None:
        log.info("rekeying IKE_SA %s_i %s_r", self.sa.spi_i.hex(), self.sa.spi_r.hex())
        msg.payloads.append(SaPayload(self.proposals))
        msg.payloads.append(NoncePayload(self.nonce))
        msg.payloads.append(KePayload(self.group, self.ke.public_bytes))

    def process(self, msg: Message) -> Status:
        life = self.sa.life
        if take_requested_group(self, msg):
            return Status.RETRY
        failure = first_error(msg)
        if failure is not None:
            log.warning("rekeying the IKE_SA failed: %s", notify_name(failure.notify_type))
            life.ike_rekey_failed(failure.notify_type)
            return Status.DONE
        sa_payload, nonce, ke = msg.get(SaPayload), msg.get(NoncePayload), msg.get(KePayload)
        if sa_payload is None or nonce is None or ke is None:
            raise RemoteProtocolError("the IKE_SA rekey response lacks SA, Nonce or KE")
        chosen = selected_proposal(self.proposals, sa_payload, "IKE_SA rekey")
        if len(chosen.spi) != 8 or not any(chosen.spi):
            raise RemoteProtocolError("the gateway's new IKE SPI is not 8 nonzero bytes")
        dh = chosen.first(TransformType.DH)
        if dh is None or dh.id != self.group or ke.group != self.group:
            raise RemoteProtocolError("the gateway's key exchange group differs from ours")
        shared = self.ke.shared_secret(ke.data)
        keyset = new_keyset(self.sa, chosen, shared, self.nonce, nonce.data, self.spi,
                            chosen.spi, initiator=True)
        life.ike_rekeyed_by_us(keyset)
        return Status.DONE


def answer_ike_rekey(life: Lifecycle, msg: Message, reply: Message) -> IkeKeyset | None:
    """The gateway rekeys the IKE SA: fill `reply`; the new SA's keys, if it succeeds."""
    sa = life.sa
    out = reply.payloads
    busy = sa._tasks.active is not None and sa._tasks.in_flight(IkeRekey) is None
    if busy or life.pending_ike is not None:
        # RFC 7296 2.25.2: we are creating, rekeying or deleting a CHILD_SA (or checking
        # liveness): the gateway tries again a little later.
        log.info("the gateway rekeys the IKE_SA while we are busy: TEMPORARY_FAILURE")
        out.append(NotifyPayload(NotifyType.TEMPORARY_FAILURE))
        return None
    sa_payload, nonce, ke = msg.get(SaPayload), msg.get(NoncePayload), msg.get(KePayload)
    if sa_payload is None or nonce is None or ke is None:
        out.append(NotifyPayload(NotifyType.INVALID_SYNTAX))
        return None
    chosen = select_proposal(sa_payload.proposals, sa.config.ike_proposals, ke.group)
    if chosen is None or len(chosen.spi) != 8 or not any(chosen.spi):
        log.warning("the gateway's IKE_SA rekey offers none of our IKE proposals")
        out.append(NotifyPayload(NotifyType.NO_PROPOSAL_CHOSEN))
        return None
    dh = chosen.first(TransformType.DH)
    if dh is None:
        out.append(NotifyPayload(NotifyType.NO_PROPOSAL_CHOSEN))
        return None
    if ke.group != dh.id:
        out.append(NotifyPayload(NotifyType.INVALID_KE_PAYLOAD, struct.pack("!H", dh.id)))
        return None
    ours = new_key_exchange(dh.id)
    shared = ours.shared_secret(ke.data)
    nr = sa.rng(NONCE_SIZE)
    spi = new_ike_spi(sa)
    keyset = new_keyset(sa, chosen, shared, nonce.data, nr, chosen.spi, spi, initiator=False)
    out.append(SaPayload([Proposal(chosen.number, ProtocolId.IKE, spi, chosen.transforms)]))
    out.append(NoncePayload(nr))
    out.append(KePayload(dh.id, ours.public_bytes))
    return keyset
