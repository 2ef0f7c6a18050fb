"""Rekeying the CHILD_SA (RFC 7296 1.3.3): CREATE_CHILD_SA with N(REKEY_SA), both ways.

    initiator: N(REKEY_SA) SA Ni [KEi] TSi TSr  -->
               <--  SA Nr [KEr] TSi TSr

New nonces always, a key exchange (PFS) when the ESP proposal names a group. Which SA
survives a collision and who deletes what is the Lifecycle's business; this module
builds and reads the messages and derives the keys.
"""

from __future__ import annotations

import logging
import struct
from typing import TYPE_CHECKING

from ..child_sa import ChildSa, ChildState
from ..constants import ExchangeType, NotifyType, ProtocolId, TransformType
from ..crypto import KeyExchange, SkCipher, new_key_exchange
from ..errors import RemoteProtocolError
from ..events import ChildSaKeys
from ..keymat import derive_child_keys
from ..message import Message
from ..payloads import (
    KePayload,
    NoncePayload,
    NotifyPayload,
    SaPayload,
    TrafficSelector,
    TsiPayload,
    TsrPayload,
)
from ..proposals import Proposal, first_dh_group, format_proposal, select_proposal, with_spi
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

def child_keys(sa: IkeSA, chosen: Proposal, spi_in: int, spi_out: int, ni: bytes, nr: bytes,
               shared: bytes | None, initiator: bool) -> ChildSaKeys:
    """KEYMAT for a CHILD_SA of CREATE_CHILD_SA (RFC 7296 2.17), from our point of view:
    the exchange's initiator sends with the first half."""
    encr = chosen.first(TransformType.ENCR)
    integ = chosen.first(TransformType.INTEG)
    if encr is None:
        raise RemoteProtocolError("the CHILD_SA proposal has no encryption transform")
    integ_id = integ.id if integ is not None and integ.id != 0 else None
    lengths = SkCipher(encr.id, encr.key_length, integ_id)
    km = derive_child_keys(sa.prf, sa.keys.sk_d, ni, nr, lengths.encr_key_len,
                           lengths.integ_key_len, shared)
    mine, theirs = ((km.encr_i, km.integ_i), (km.encr_r, km.integ_r))
    if not initiator:
        mine, theirs = theirs, mine
    return ChildSaKeys(
        spi_in=spi_in, spi_out=spi_out, encr_id=encr.id, key_bits=encr.key_length,
        integ_id=integ_id, encr_key_in=theirs[0], integ_key_in=theirs[1],
        encr_key_out=mine[0], integ_key_out=mine[1],
    )


def _networks(payload: TsiPayload | TsrPayload) -> list:
    return [n for ts in payload.selectors for n in ts.to_networks()]


class ChildRekey(Task):
    """We rekey `child` because its lifetime is up."""

    exchange = ExchangeType.CREATE_CHILD_SA

    def __init__(self, sa: IkeSA, child: ChildSa) -> None:
        super().__init__(sa)
        self.child = child
        self.nonce = sa.rng(NONCE_SIZE)
        self.spi_in = sa.new_child_spi()
        self.proposals = with_spi(sa.config.esp_proposals, struct.pack("!I", self.spi_in))
        self.group = first_dh_group(self.proposals)
        self.ke: KeyExchange | None = new_key_exchange(self.group) if self.group else None
        self.ke_retries = 0
        # The gateway's replacement of the same SA, when its rekey crossed ours (2.8.1).
        self.collision: ChildSa | None = None
        self.collision_nonce = b""

    def obsolete(self) -> bool:
        child = self.child
        return child.state is not ChildState.INSTALLED or child not in self.sa.life.children

    def build(self, msg: Message) -> None:
        child = self.child
        child.state = ChildState.REKEYING
        log.info("rekeying CHILD_SA %s", child)
        msg.payloads.append(NotifyPayload(NotifyType.REKEY_SA, protocol=ProtocolId.ESP,
                                          spi=struct.pack("!I", child.spi_in)))
        msg.payloads.append(SaPayload(self.proposals))
        msg.payloads.append(NoncePayload(self.nonce))
        if self.ke is not None:
            msg.payloads.append(KePayload(self.group, self.ke.public_bytes))
        msg.payloads.append(TsiPayload([TrafficSelector.from_network(n) for n in child.local_ts]))
        msg.payloads.append(TsrPayload([TrafficSelector.from_network(n) for n in child.remote_ts]))
        msg.payloads.append(NotifyPayload(NotifyType.ESP_TFC_PADDING_NOT_SUPPORTED))

    def process(self, msg: Message) -> Status:
        life = self.sa.life
        if self.group and take_requested_group(self, msg):
            return Status.RETRY
        failure = first_error(msg)
        if failure is not None:
            log.warning("rekeying CHILD_SA %s failed: %s", self.child,
                        notify_name(failure.notify_type))
            life.child_rekey_failed(self, failure.notify_type)
            return Status.DONE

        sa_payload, nonce = msg.get(SaPayload), msg.get(NoncePayload)
        tsi, tsr = msg.get(TsiPayload), msg.get(TsrPayload)
        if sa_payload is None or nonce is None or tsi is None or tsr is None:
            raise RemoteProtocolError("the CREATE_CHILD_SA response lacks SA, Nonce, TSi or TSr")
        chosen = selected_proposal(self.proposals, sa_payload, "CREATE_CHILD_SA")
        if len(chosen.spi) != 4:
            raise RemoteProtocolError("the chosen CHILD_SA proposal has no 4-byte SPI")
        shared = None
        dh = chosen.first(TransformType.DH)
        if dh is not None and dh.id != 0:
            ke = msg.get(KePayload)
            if ke is None or self.ke is None or ke.group != dh.id or dh.id != self.group:
                raise RemoteProtocolError("the CREATE_CHILD_SA response's KE does not match")
            shared = self.ke.shared_secret(ke.data)
        (spi_out,) = struct.unpack("!I", chosen.spi)
        keys = child_keys(self.sa, chosen, self.spi_in, spi_out, self.nonce, nonce.data, shared,
                          initiator=True)
        new = ChildSa(keys, format_proposal(chosen), _networks(tsi), _networks(tsr))
        life.child_rekeyed_by_us(self, new, min(self.nonce, nonce.data))
        return Status.DONE


def answer_child_rekey(life: Lifecycle, msg: Message, rekey: NotifyPayload,
                       reply: Message) -> None:
    """The gateway rekeys a CHILD_SA: fill `reply` and hand the new SA to the Lifecycle."""
    sa = life.sa
    out = reply.payloads
    if rekey.protocol != ProtocolId.ESP or len(rekey.spi) != 4:
        out.append(NotifyPayload(NotifyType.CHILD_SA_NOT_FOUND, protocol=rekey.protocol,
                                 spi=rekey.spi))
        return
    (spi,) = struct.unpack("!I", rekey.spi)
    old = next((c for c in life.children if c.spi_out == spi), None)
    if old is None:
        log.info("the gateway rekeys CHILD_SA %08x_o, which we do not have", spi)
        out.append(NotifyPayload(NotifyType.CHILD_SA_NOT_FOUND, protocol=ProtocolId.ESP,
                                 spi=rekey.spi))
        return
    if old.state in (ChildState.REKEYED, ChildState.DELETING) or life.ike_rekey_under_way():
        # RFC 7296 2.25: it is being closed, or the IKE SA is being rekeyed.
        log.info("the gateway rekeys CHILD_SA %s while it is %s: TEMPORARY_FAILURE", old,
                 old.state.value if old.state is not ChildState.INSTALLED else "busy")
        out.append(NotifyPayload(NotifyType.TEMPORARY_FAILURE))
        return
    sa_payload, nonce, ke = msg.get(SaPayload), msg.get(NoncePayload), msg.get(KePayload)
    tsi, tsr = msg.get(TsiPayload), msg.get(TsrPayload)
    if sa_payload is None or nonce is None or tsi is None or tsr is None:
        out.append(NotifyPayload(NotifyType.INVALID_SYNTAX))
        return
    chosen = select_proposal(sa_payload.proposals, sa.config.esp_proposals,
                             ke.group if ke else None)
    if chosen is None or len(chosen.spi) != 4:
        log.warning("the gateway's CHILD_SA rekey offers none of our ESP proposals")
        out.append(NotifyPayload(NotifyType.NO_PROPOSAL_CHOSEN))
        return
    shared = ours = None
    dh = chosen.first(TransformType.DH)
    if dh is not None and dh.id != 0:
        if ke is None or ke.group != dh.id:
            out.append(NotifyPayload(NotifyType.INVALID_KE_PAYLOAD, struct.pack("!H", dh.id)))
            return
        ours = new_key_exchange(dh.id)
        shared = ours.shared_secret(ke.data)
    nr = sa.rng(NONCE_SIZE)
    spi_in = sa.new_child_spi()
    (spi_out,) = struct.unpack("!I", chosen.spi)
    # The gateway is the initiator of this exchange: its TSi is its side of the tunnel.
    keys = child_keys(sa, chosen, spi_in, spi_out, nonce.data, nr, shared, initiator=False)
    new = ChildSa(keys, format_proposal(chosen), _networks(tsr), _networks(tsi), outbound=False)
    out.append(SaPayload([Proposal(chosen.number, ProtocolId.ESP, struct.pack("!I", spi_in),
                                   chosen.transforms)]))
    out.append(NoncePayload(nr))
    if ours is not None:
        out.append(KePayload(ours.group, ours.public_bytes))
    out.append(tsi)
    out.append(tsr)
    life.child_rekeyed_by_peer(old, new, min(nonce.data, nr))
