"""IKE_SA_INIT: proposals, key exchange, nonces; COOKIE and INVALID_KE_PAYLOAD retries;
announcing IKE fragmentation (RFC 7383) and redirects (RFC 5685), following a REDIRECT."""

from __future__ import annotations

import hmac
import logging
import struct

from ..auth.pubkey import (
    decode_hash_algorithms,
    encode_hash_algorithms,
    supported_hash_algorithms,
)
from ..constants import ExchangeType, NotifyType, ProtocolId, TransformType
from ..crypto import SkCipher, new_key_exchange, prf_for
from ..errors import NoProposalChosen, RemoteProtocolError
from ..keymat import derive_ike_keys
from ..message import Message, SkContext
from ..payloads import KePayload, NoncePayload, NotifyPayload, SaPayload
from ..proposals import check_selected, format_proposal, with_dh_first
from .base import Status, Task
from .ike_redirect import RedirectRequested, encode_gateway, gateway_name, split_gateway

log = logging.getLogger(__name__)

NONCE_SIZE = 32
MAX_RETRIES = 5  # COOKIE / INVALID_KE rounds before giving up


class IkeInit(Task):
    exchange = ExchangeType.IKE_SA_INIT

    def __init__(self, sa) -> None:
        super().__init__(sa)
        self.proposals = list(sa.config.ike_proposals)
        first_dh = self.proposals[0].first(TransformType.DH)
        if first_dh is None:
            raise NoProposalChosen("the IKE proposals name no key exchange group")
        self.group = first_dh.id
        self.ke = new_key_exchange(self.group)
        self.nonce = sa.rng(NONCE_SIZE)
        self.cookie: bytes | None = None
        self.retries = 0

    def build(self, msg: Message) -> None:
        if self.cookie is not None:
            # RFC 7296 2.6: the COOKIE notify must come first.
            msg.payloads.append(NotifyPayload(NotifyType.COOKIE, self.cookie))
        msg.payloads.append(SaPayload(self.proposals))
        msg.payloads.append(KePayload(self.group, self.ke.public_bytes))
        msg.payloads.append(NoncePayload(self.nonce))
        # RFC 7427: lets the gateway sign with SHA-2 instead of the SHA-1 of RSA_SIG.
        msg.payloads.append(
            NotifyPayload(
                NotifyType.SIGNATURE_HASH_ALGORITHMS,
                encode_hash_algorithms(supported_hash_algorithms()),
            )
        )
        cfg = self.sa.config
        if cfg.fragmentation:
            msg.payloads.append(NotifyPayload(NotifyType.IKEV2_FRAGMENTATION_SUPPORTED))
        if cfg.follow_redirects:
            # Naming the gateway that sent us here also announces support (RFC 5685 5).
            if cfg.redirected_from:
                msg.payloads.append(NotifyPayload(NotifyType.REDIRECTED_FROM,
                                                  encode_gateway(cfg.redirected_from)))
            else:
                msg.payloads.append(NotifyPayload(NotifyType.REDIRECT_SUPPORTED))
        self.sa.ni = self.nonce

    def process(self, msg: Message) -> Status:
        redirect = msg.notify(NotifyType.REDIRECT)
        if redirect is not None:
            self._redirect(redirect.data)
        cookie = msg.notify(NotifyType.COOKIE)
        if cookie is not None:
            self._count_retry("COOKIE")
            self.cookie = cookie.data
            log.info("gateway asked for a COOKIE, retrying")
            return Status.RETRY
        invalid_ke = msg.notify(NotifyType.INVALID_KE_PAYLOAD)
        if invalid_ke is not None:
            self._count_retry("INVALID_KE_PAYLOAD")
            if len(invalid_ke.data) != 2:
                raise RemoteProtocolError("INVALID_KE_PAYLOAD without a 2-byte group")
            (group,) = struct.unpack("!H", invalid_ke.data)
            self.proposals = with_dh_first(self.proposals, group)
            self.group = group
            self.ke = new_key_exchange(group)
            log.info("gateway asked for key exchange group %d, retrying", group)
            return Status.RETRY
        if msg.notify(NotifyType.NO_PROPOSAL_CHOSEN) is not None:
            raise NoProposalChosen("the gateway accepted none of our IKE proposals")
        for n in msg.notifies():
            if n.notify_type < 16384:
                raise RemoteProtocolError(f"IKE_SA_INIT failed with notify {n.notify_type}")

        sa_payload = msg.get(SaPayload)
        ke = msg.get(KePayload)
        nonce = msg.get(NoncePayload)
        if sa_payload is None or ke is None or nonce is None:
            raise RemoteProtocolError("IKE_SA_INIT response lacks SA, KE or Nonce")
        if len(sa_payload.proposals) != 1:
            raise RemoteProtocolError("IKE_SA_INIT response must carry exactly one proposal")
        chosen = check_selected(self.proposals, sa_payload.proposals[0])
        if chosen.protocol != ProtocolId.IKE:
            raise RemoteProtocolError("the chosen proposal is not for IKE")
        dh = chosen.first(TransformType.DH)
        if dh is None or dh.id != self.group or ke.group != self.group:
            raise RemoteProtocolError("the gateway's key exchange group differs from ours")
        shared = self.ke.shared_secret(ke.data)

        encr = chosen.first(TransformType.ENCR)
        integ = chosen.first(TransformType.INTEG)
        prf_t = chosen.first(TransformType.PRF)
        assert encr is not None and prf_t is not None  # check_selected guarantees them
        cipher = SkCipher(encr.id, encr.key_length, integ.id if integ else None)
        prf = prf_for(prf_t.id)
        sa = self.sa
        sa.spi_r = msg.spi_r
        sa.nr = nonce.data
        sa.prf = prf
        sa.ike_proposal = chosen
        sa.ike_proposal_name = format_proposal(chosen)
        keys = derive_ike_keys(
            prf, cipher.encr_key_len, cipher.integ_key_len, shared,
            sa.ni, sa.nr, sa.spi_i, sa.spi_r,
        )
        sa.keys = keys
        sa.sk = SkContext(cipher, keys.sk_ei, keys.sk_ai, keys.sk_er, keys.sk_ar, rng=sa.rng)
        sa.init_response = msg.raw
        hashes = msg.notify(NotifyType.SIGNATURE_HASH_ALGORITHMS)
        sa.peer_hash_algorithms = set(decode_hash_algorithms(hashes.data)) if hashes else None
        sa.peer_fragmentation = (
            msg.notify(NotifyType.IKEV2_FRAGMENTATION_SUPPORTED) is not None
        )
        sa.peer_multiple_auth = msg.notify(NotifyType.MULTIPLE_AUTH_SUPPORTED) is not None
        log.info("IKE proposal %s selected", sa.ike_proposal_name)
        return Status.DONE

    def _redirect(self, data: bytes) -> None:
        """RFC 5685 4: the REDIRECT carries our nonce, so a blind forgery cannot send us away."""
        if not self.sa.config.follow_redirects:
            raise RemoteProtocolError("the gateway redirected us, but redirects are disabled")
        # The nonce first: whoever did not see our request gets no further, not even
        # to the parse of the name.
        kind, ident, nonce = split_gateway(data)
        if not hmac.compare_digest(nonce, self.nonce):
            raise RemoteProtocolError("REDIRECT in IKE_SA_INIT without our nonce")
        raise RedirectRequested(gateway_name(kind, ident))

    def _count_retry(self, what: str) -> None:
        self.retries += 1
        if self.retries > MAX_RETRIES:
            raise RemoteProtocolError(f"too many {what} rounds in IKE_SA_INIT")
