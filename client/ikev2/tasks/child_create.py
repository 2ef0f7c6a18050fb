"""The first CHILD_SA, created inside IKE_AUTH (RFC 7296 1.2): SA, TSi, TSr."""

from __future__ import annotations

import logging
import struct

from ..constants import ExchangeType, NotifyType, ProtocolId, TransformType
from ..crypto import SkCipher
from ..errors import NoProposalChosen, PeerNotTrusted, RemoteProtocolError
from ..events import ChildSaKeys
from ..keymat import derive_child_keys
from ..message import Message
from ..payloads import NotifyPayload, SaPayload, TrafficSelector, TsiPayload, TsrPayload
from ..proposals import Proposal, check_selected, format_proposal
from .base import Status, Task

log = logging.getLogger(__name__)

CHILD_ERRORS = {
    NotifyType.NO_PROPOSAL_CHOSEN: "the gateway accepted none of our ESP proposals",
    NotifyType.TS_UNACCEPTABLE: "the gateway found our traffic selectors unacceptable",
    NotifyType.INTERNAL_ADDRESS_FAILURE: "the gateway could not assign a virtual IP address",
    NotifyType.FAILED_CP_REQUIRED: "the gateway requires a configuration request",
    NotifyType.SINGLE_PAIR_REQUIRED: "the gateway requires a single pair of traffic selectors",
}


class ChildCreate(Task):
    exchange = ExchangeType.IKE_AUTH

    def __init__(self, sa) -> None:
        super().__init__(sa)
        self.sent = False
        self.spi_in = 0
        self.proposals: list[Proposal] = []

    def build(self, msg: Message) -> None:
        if self.sent:
            return
        sa, cfg = self.sa, self.sa.config
        self.spi_in = sa.new_child_spi()
        spi = struct.pack("!I", self.spi_in)
        self.proposals = [
            Proposal(p.number, ProtocolId.ESP, spi,
                     # The first CHILD_SA takes its keys from IKE_AUTH: no DH here.
                     [t for t in p.transforms if t.type != TransformType.DH])
            for p in cfg.esp_proposals
        ]
        tsi = [TrafficSelector.any_ipv4()]
        if cfg.request_ipv6:
            tsi.append(TrafficSelector.any_ipv6())
        tsr = [TrafficSelector.from_network(n) for n in cfg.remote_ts]
        msg.payloads.append(SaPayload(self.proposals))
        msg.payloads.append(TsiPayload(tsi))
        msg.payloads.append(TsrPayload(tsr))
        msg.payloads.append(NotifyPayload(NotifyType.ESP_TFC_PADDING_NOT_SUPPORTED))
        self.sent = True

    def process(self, msg: Message) -> Status:
        sa = self.sa
        for ntype, text in CHILD_ERRORS.items():
            if msg.notify(ntype) is not None:
                raise NoProposalChosen(text)
        sa_payload = msg.get(SaPayload)
        if sa_payload is None:
            return Status.DONE if sa.auth_done else Status.NEED_MORE
        if not sa.peer_authenticated:
            raise PeerNotTrusted("CHILD_SA parameters received before the gateway authenticated")
        if len(sa_payload.proposals) != 1:
            raise RemoteProtocolError("the CHILD_SA response must carry exactly one proposal")
        chosen = check_selected(self.proposals, sa_payload.proposals[0])
        if chosen.protocol != ProtocolId.ESP or len(chosen.spi) != 4:
            raise RemoteProtocolError("the chosen CHILD_SA proposal is not ESP with a 4-byte SPI")
        if msg.notify(NotifyType.USE_TRANSPORT_MODE) is not None:
            raise RemoteProtocolError("the gateway wants transport mode; a VPN needs a tunnel")
        tsi, tsr = msg.get(TsiPayload), msg.get(TsrPayload)
        if tsi is None or tsr is None:
            raise RemoteProtocolError("the CHILD_SA response lacks TSi or TSr")

        encr = chosen.first(TransformType.ENCR)
        integ = chosen.first(TransformType.INTEG)
        assert encr is not None
        integ_id = integ.id if integ is not None and integ.id != 0 else None
        lengths = SkCipher(encr.id, encr.key_length, integ_id)
        keys = derive_child_keys(
            sa.prf, sa.keys.sk_d, sa.ni, sa.nr, lengths.encr_key_len, lengths.integ_key_len
        )
        (spi_out,) = struct.unpack("!I", chosen.spi)
        sa.child = ChildSaKeys(
            spi_in=self.spi_in, spi_out=spi_out,
            encr_id=encr.id, key_bits=encr.key_length, integ_id=integ_id,
            # We are the initiator: inbound traffic uses the responder's keys.
            encr_key_in=keys.encr_r, integ_key_in=keys.integ_r,
            encr_key_out=keys.encr_i, integ_key_out=keys.integ_i,
        )
        sa.esp_proposal_name = format_proposal(chosen)
        sa.local_ts = [n for ts in tsi.selectors for n in ts.to_networks()]
        sa.remote_ts = [n for ts in tsr.selectors for n in ts.to_networks()]
        log.info(
            "CHILD_SA %08x_i %08x_o established with %s, %s === %s",
            self.spi_in, spi_out, sa.esp_proposal_name,
            " ".join(map(str, sa.local_ts)), " ".join(map(str, sa.remote_ts)),
        )
        return Status.DONE
