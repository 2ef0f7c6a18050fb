"""A minimal in-memory IKEv2 responder (gateway) that exercises the client's IkeSA honestly.

Real RFC 7296 on the wire from the client's codec and crypto, with its own protocol logic:
IKE_SA_INIT (proposal choice, NAT-D, COOKIE, INVALID_KE_PAYLOAD), IKE_AUTH with PSK or a
certificate plus EAP-MSCHAPv2 (2.16), the first CHILD_SA with CP, INFORMATIONAL both ways.
"""

from __future__ import annotations

import copy
import hashlib
import secrets
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import ip_address, ip_network
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from client.ikev2.auth import pubkey
from client.ikev2.auth.eap import mschapv2 as ms
from client.ikev2.auth.octets import signed_octets
from client.ikev2.auth.psk import psk_auth_data, psk_verify
from client.ikev2.constants import (
    CertEncoding,
    CfgAttr,
    CfgType,
    EapCode,
    EapType,
    ExchangeType,
    NotifyType,
    ProtocolId,
    TransformType,
)
from client.ikev2.crypto import SkCipher, encr_keymat_len, integ_for, new_key_exchange, prf_for
from client.ikev2.events import ChildSaKeys
from client.ikev2.keymat import derive_child_keys, derive_ike_keys
from client.ikev2.message import Message, SkContext, parse_header
from client.ikev2.payloads import (
    AuthPayload,
    CertPayload,
    CpPayload,
    DeletePayload,
    EapPayload,
    IdiPayload,
    IdrPayload,
    KePayload,
    NoncePayload,
    NotifyPayload,
    Payload,
    SaPayload,
    TrafficSelector,
    TsiPayload,
    TsrPayload,
)
from client.ikev2.proposals import Proposal, parse_proposals
from client.ikev2.tasks.ike_natd import natd_hash


@dataclass
class GatewayConfig:
    ike_proposals: str = "aes256gcm16-prfsha384-ecp384"
    esp_proposals: str = "aes256gcm16"
    identity: str = "vpn.example.com"
    psk: bytes | None = None  # PSK authentication of both sides when set
    key: Any = None  # else: certificate authentication of the gateway ...
    certs: list[x509.Certificate] = field(default_factory=list)  # leaf first
    rfc7427: bool = True  # sign as RFC 7427 when the client announced hashes
    eap_users: dict[str, str] = field(default_factory=dict)  # ... and EAP-MSCHAPv2 for it
    demand_cookie: bool = False
    address: tuple[str, int] = ("203.0.113.1", 500)
    client_seen_as: tuple[str, int] = ("198.51.100.10", 500)  # differs from it: a NAT
    virtual_ip: str = "198.18.0.10"
    dns: str = "198.18.0.1"
    dns_domain: str = "corp.example.com"
    protected: str = "198.18.0.0/15"


def choose(offered: list[Proposal], accepted: list[Proposal], ke_group: int | None = None
           ) -> Proposal | None:
    """The first of the initiator's proposals one of ours covers (RFC 7296 2.7).

    Per transform type the initiator's first acceptable transform wins, except that the
    group of its KE payload is preferred when acceptable (so no INVALID_KE round is needed).
    """
    for theirs in offered:
        for ours in accepted:
            types = list(dict.fromkeys(t.type for t in theirs.transforms))
            if set(types) != {t.type for t in ours.transforms}:
                continue
            picked = []
            for ttype in types:
                options = [t for t in theirs.of_type(ttype) if t in ours.transforms]
                preferred = [t for t in options if t.id == ke_group]
                if ttype == TransformType.DH and preferred:
                    options = preferred
                if not options:
                    break
                picked.append(options[0])
            else:
                return Proposal(theirs.number, theirs.protocol, b"", picked)
    return None


def framed(code: int, ident: int, body: bytes = b"") -> bytes:
    """EAP packets and MSCHAPv2 type data share a header: code, identifier, total length."""
    return struct.pack("!BBH", code, ident, 4 + len(body)) + body


class Responder:
    def __init__(self, cfg: GatewayConfig, rng: Callable[[int], bytes] = secrets.token_bytes
                 ) -> None:
        self.cfg, self.rng = cfg, rng
        self.spi_i = self.spi_r = self.ni = self.nr = b""
        self.init_request = self.init_response = b""
        self.sk: SkContext | None = None
        self.prf: Any = None  # and self.keys: set by IKE_SA_INIT
        self.client_hashes: set[int] | None = None
        self.idi: IdiPayload | None = None
        self.idr = IdrPayload.from_string(cfg.identity)
        self.auth_request: Message | None = None  # IKE_AUTH request with the SA, TS and CP
        self.established = self.closed = False
        self.child: ChildSaKeys | None = None  # from the gateway's point of view
        # EAP-MSCHAPv2 authenticator
        self.eap_id, self.eap_user, self.challenge, self.nt_response = 0, "", b"", b""
        self.msk: bytes | None = None
        # Message IDs and retransmission (RFC 7296 2.1, 2.2), both directions
        self.next_request_id = self.my_next_id = 0
        self.last_response: Message | None = None
        self.last_response_bytes = self.last_request = b""
        self.pending_id: int | None = None  # of our request in flight
        self.responses: list[Message] = []  # answers to our own requests
        self.requests: list[Message] = []  # every request we accepted
        self.cookies_sent = self.invalid_ke_sent = 0
        self._secret = rng(16)
        self._out: list[bytes] = []

    # -- the wire ----------------------------------------------------------------------
    def datagrams_to_send(self) -> list[bytes]:
        out, self._out = self._out, []
        return out

    def receive(self, data: bytes) -> None:
        h = parse_header(data)
        if h.is_response:
            if h.message_id != self.pending_id:
                return  # a late retransmission: nothing to do
            assert h.is_initiator and h.spi_r == self.spi_r  # the I flag: who began the SA
            self.responses.append(Message.decode(data, self.sk))
            self.pending_id = None
            return
        assert h.is_initiator, "requests come from the original initiator"
        if h.message_id == self.next_request_id - 1 and self.last_response_bytes:
            self._out.append(self.last_response_bytes)  # the client retransmitted
            return
        assert h.message_id == self.next_request_id, f"request {h.message_id} out of order"
        if h.exchange == ExchangeType.IKE_SA_INIT:
            self._ike_sa_init(Message.decode(data), data)
            return
        assert h.spi_i == self.spi_i and h.spi_r == self.spi_r and self.sk is not None
        msg = Message.decode(data, self.sk)
        self.requests.append(msg)
        if h.exchange == ExchangeType.IKE_AUTH:
            payloads = self._ike_auth(msg)
        elif h.exchange == ExchangeType.INFORMATIONAL:
            payloads = self._informational(msg)
        else:
            payloads = [NotifyPayload(NotifyType.NO_ADDITIONAL_SAS)]
        self._respond(msg, payloads)

    def _respond(self, request: Message, payloads: list[Payload]) -> None:
        self.next_request_id += 1
        self.last_response = Message(
            spi_i=request.spi_i, spi_r=self.spi_r, exchange=request.exchange, is_response=True,
            is_initiator=False, message_id=request.message_id, payloads=payloads,
            encrypted=request.exchange != ExchangeType.IKE_SA_INIT,
        )
        self.last_response_bytes = self.last_response.encode(self.sk)
        self._out.append(self.last_response_bytes)

    def _stateless(self, request: Message, notify: NotifyPayload) -> None:
        """COOKIE / INVALID_KE_PAYLOAD / NO_PROPOSAL_CHOSEN: answer, keep no state."""
        reply = Message(spi_i=request.spi_i, spi_r=bytes(8), exchange=request.exchange,
                        is_response=True, is_initiator=False, message_id=request.message_id,
                        payloads=[notify])
        self._out.append(reply.encode())

    def forge(self, edit: Callable[[Message], None]) -> bytes:
        """Our last response again, changed by `edit`, properly protected: a test's forgery."""
        assert self.last_response is not None
        msg = copy.deepcopy(self.last_response)
        edit(msg)
        return msg.encode(self.sk if msg.encrypted else None)

    # -- IKE_SA_INIT -------------------------------------------------------------------
    def _ike_sa_init(self, msg: Message, raw: bytes) -> None:
        sa, ke, nonce = msg.get(SaPayload), msg.get(KePayload), msg.get(NoncePayload)
        assert sa is not None and ke is not None and nonce is not None
        assert msg.spi_r == bytes(8) and any(msg.spi_i)
        if self.cfg.demand_cookie:
            cookie = hashlib.sha256(self._secret + nonce.data + msg.spi_i).digest()[:16]
            first = msg.payloads[0]
            if not (isinstance(first, NotifyPayload) and first.notify_type == NotifyType.COOKIE
                    and first.data == cookie):
                self.cookies_sent += 1
                self._stateless(msg, NotifyPayload(NotifyType.COOKIE, cookie))
                return
        accepted = parse_proposals(self.cfg.ike_proposals, ProtocolId.IKE)
        chosen = choose(sa.proposals, accepted, ke.group)
        if chosen is None:
            self._stateless(msg, NotifyPayload(NotifyType.NO_PROPOSAL_CHOSEN))
            return
        group = chosen.first(TransformType.DH).id
        if group != ke.group:
            self.invalid_ke_sent += 1
            self._stateless(msg, NotifyPayload(NotifyType.INVALID_KE_PAYLOAD,
                                               struct.pack("!H", group)))
            return
        self.spi_i, self.spi_r, self.ni, self.nr = msg.spi_i, self.rng(8), nonce.data, self.rng(32)
        our_ke = new_key_exchange(group)
        shared = our_ke.shared_secret(ke.data)
        encr, integ = chosen.first(TransformType.ENCR), chosen.first(TransformType.INTEG)
        cipher = SkCipher(encr.id, encr.key_length, integ.id if integ else None)
        self.prf = prf_for(chosen.first(TransformType.PRF).id)
        self.keys = k = derive_ike_keys(self.prf, cipher.encr_key_len, cipher.integ_key_len,
                                        shared, self.ni, self.nr, self.spi_i, self.spi_r)
        hashes = msg.notify(NotifyType.SIGNATURE_HASH_ALGORITHMS)
        self.client_hashes = set(pubkey.decode_hash_algorithms(hashes.data)) if hashes else None
        payloads: list[Payload] = [
            SaPayload([chosen]), KePayload(group, our_ke.public_bytes), NoncePayload(self.nr),
            NotifyPayload(NotifyType.NAT_DETECTION_SOURCE_IP,
                          natd_hash(self.spi_i, self.spi_r, *self.cfg.address)),
            NotifyPayload(NotifyType.NAT_DETECTION_DESTINATION_IP,
                          natd_hash(self.spi_i, self.spi_r, *self.cfg.client_seen_as)),
        ]
        if self.cfg.key is not None:
            payloads.append(NotifyPayload(NotifyType.SIGNATURE_HASH_ALGORITHMS,
                                          pubkey.encode_hash_algorithms([2, 3, 4])))
        self.init_request = raw
        self._respond(msg, payloads)  # unprotected: self.sk is still None
        self.init_response = self.last_response_bytes
        self.sk = SkContext(cipher, k.sk_er, k.sk_ar, k.sk_ei, k.sk_ai, rng=self.rng)

    # -- IKE_AUTH ----------------------------------------------------------------------
    def _octets(self, mine: bool) -> bytes:
        if mine:
            return signed_octets(self.init_response, self.ni, self.prf, self.keys.sk_pr,
                                 self.idr.encode_body())
        assert self.idi is not None
        return signed_octets(self.init_request, self.nr, self.prf, self.keys.sk_pi,
                             self.idi.encode_body())

    def _ike_auth(self, msg: Message) -> list[Payload]:
        auth = msg.get(AuthPayload)
        if self.idi is None:  # first round
            self.idi = msg.get(IdiPayload)
            self.auth_request = msg
            assert self.idi is not None
            wanted = msg.get(IdrPayload)  # the client may name the gateway it wants
            if wanted is not None and not wanted.same_identity(self.idr):
                return [NotifyPayload(NotifyType.AUTHENTICATION_FAILED)]
            if self.cfg.psk is not None:
                if auth is None or not psk_verify(self.prf, self.cfg.psk, self._octets(False),
                                                  auth.data):
                    return [NotifyPayload(NotifyType.AUTHENTICATION_FAILED)]
                mine = AuthPayload(2, psk_auth_data(self.prf, self.cfg.psk, self._octets(True)))
                return [self.idr, mine, *self._child()]
            assert auth is None, "an EAP client sends no AUTH in its first IKE_AUTH"
            method, data = pubkey.sign(
                self.cfg.key, self._octets(True), rsa_pss=False,
                peer_hashes=self.client_hashes if self.cfg.rfc7427 else None)
            certs = [CertPayload(CertEncoding.X509_SIGNATURE, c.public_bytes(Encoding.DER))
                     for c in self.cfg.certs]
            self.eap_id = 1
            return [self.idr, *certs, AuthPayload(method, data),
                    EapPayload(framed(EapCode.REQUEST, 1, bytes((EapType.IDENTITY,))))]
        if auth is not None:  # after EAP-Success: AUTH from the MSK (RFC 7296 2.16)
            assert self.msk is not None
            if not psk_verify(self.prf, self.msk, self._octets(False), auth.data):
                return [NotifyPayload(NotifyType.AUTHENTICATION_FAILED)]
            mine = AuthPayload(2, psk_auth_data(self.prf, self.msk, self._octets(True)))
            return [mine, *self._child()]
        eap = msg.get(EapPayload)
        assert eap is not None and eap.code == EapCode.RESPONSE and eap.identifier == self.eap_id
        return [EapPayload(self._eap(eap.data))]

    def _eap(self, packet: bytes) -> bytes:
        """EAP-MSCHAPv2 authenticator (RFC 2759, draft-kamath-pppext-eap-mschapv2)."""
        eap_type, data = packet[4], packet[5:]
        self.eap_id += 1
        if eap_type == EapType.IDENTITY:
            self.eap_user = data.decode()
            self.challenge = self.rng(16)
            body = bytes((16,)) + self.challenge + self.cfg.identity.encode()
            return self._mschapv2(ms.OP_CHALLENGE, self.eap_id, body)
        assert eap_type == EapType.MSCHAPV2, f"client answered with EAP type {eap_type}"
        opcode = data[0]
        if opcode == ms.OP_SUCCESS:  # the client accepted our authenticator response (1 octet)
            assert len(data) == 1
            password = self.cfg.eap_users[self.eap_user]
            self.msk = ms.msk(password, self.nt_response)
            return framed(EapCode.SUCCESS, self.eap_id - 1)
        assert opcode == ms.OP_RESPONSE and data[4] == ms.RESPONSE_VALUE_LEN
        ms_id, ms_length = data[1], int.from_bytes(data[2:4])
        assert ms_id == self.eap_id - 1 and ms_length == len(data)
        peer_challenge, self.nt_response = data[5:21], data[29:53]
        self.eap_user = data[54:].decode()
        user, password = ms.username_for_hash(self.eap_user), self.cfg.eap_users.get(self.eap_user)
        expected = password and ms.generate_nt_response(self.challenge, peer_challenge, user,
                                                        password)
        if expected != self.nt_response:
            text = f"E=691 R=0 C={self.challenge.hex().upper()} V=3 M=Authentication failed"
            return self._mschapv2(ms.OP_FAILURE, ms_id, text.encode())
        s = ms.generate_authenticator_response(password, self.nt_response, peer_challenge,
                                               self.challenge, user)
        return self._mschapv2(ms.OP_SUCCESS, ms_id, f"{s} M=Welcome".encode())

    def _mschapv2(self, opcode: int, ms_id: int, body: bytes) -> bytes:
        data = bytes((EapType.MSCHAPV2,)) + framed(opcode, ms_id, body)
        return framed(EapCode.REQUEST, self.eap_id, data)

    def _child(self) -> list[Payload]:
        """The first CHILD_SA (SA, TSi, TSr) and the CP reply, from the first request."""
        req = self.auth_request
        assert req is not None
        sa = req.get(SaPayload)
        accepted = parse_proposals(self.cfg.esp_proposals, ProtocolId.ESP)
        chosen = choose(sa.proposals, accepted) if sa else None
        if chosen is None:
            return [NotifyPayload(NotifyType.NO_PROPOSAL_CHOSEN)]
        their_spi = int.from_bytes(next(p.spi for p in sa.proposals if p.number == chosen.number))
        our_spi = int.from_bytes(self.rng(4)) | 0x100
        chosen.spi = struct.pack("!I", our_spi)
        encr, integ = chosen.first(TransformType.ENCR), chosen.first(TransformType.INTEG)
        integ_len = integ_for(integ.id).key_size if integ else 0
        km = derive_child_keys(self.prf, self.keys.sk_d, self.ni, self.nr,
                               encr_keymat_len(encr.id, encr.key_length), integ_len)
        self.child = ChildSaKeys(
            spi_in=our_spi, spi_out=their_spi, encr_id=encr.id, key_bits=encr.key_length,
            integ_id=integ.id if integ else None,
            encr_key_in=km.encr_i, integ_key_in=km.integ_i,
            encr_key_out=km.encr_r, integ_key_out=km.integ_r)
        self.established = True
        payloads: list[Payload] = []
        cp = req.get(CpPayload)
        if cp is not None and cp.cfg_type == CfgType.CFG_REQUEST:
            payloads.append(CpPayload(CfgType.CFG_REPLY, [
                (CfgAttr.INTERNAL_IP4_ADDRESS, ip_address(self.cfg.virtual_ip).packed),
                (CfgAttr.INTERNAL_IP4_DNS, ip_address(self.cfg.dns).packed),
                (CfgAttr.INTERNAL_DNS_DOMAIN, self.cfg.dns_domain.encode()),
            ]))
        if req.notify(NotifyType.MOBIKE_SUPPORTED) is not None:
            payloads.append(NotifyPayload(NotifyType.MOBIKE_SUPPORTED))
        return payloads + [
            SaPayload([chosen]),
            TsiPayload([TrafficSelector.from_network(ip_network(self.cfg.virtual_ip))]),
            TsrPayload([TrafficSelector.from_network(self.cfg.protected)]),
        ]

    # -- INFORMATIONAL -----------------------------------------------------------------
    def _informational(self, msg: Message) -> list[Payload]:
        reply: list[Payload] = []
        for d in msg.get_all(DeletePayload):
            if d.protocol == ProtocolId.IKE:
                self.closed = True
                return []  # RFC 7296 1.4.1: the response to a Delete of the IKE SA is empty
            if self.child is not None and struct.pack("!I", self.child.spi_out) in d.spis:
                reply.append(DeletePayload(ProtocolId.ESP, [struct.pack("!I", self.child.spi_in)]))
                self.child = None
        return reply

    def request(self, payloads: list[Payload]) -> bytes:
        """Send an INFORMATIONAL request of our own (one at a time, as RFC 7296 2.3 allows)."""
        assert self.sk is not None and self.pending_id is None, "one request at a time"
        msg = Message(spi_i=self.spi_i, spi_r=self.spi_r, exchange=ExchangeType.INFORMATIONAL,
                      is_response=False, is_initiator=False, message_id=self.my_next_id,
                      payloads=payloads, encrypted=True)
        self.pending_id, self.my_next_id = self.my_next_id, self.my_next_id + 1
        self.last_request = msg.encode(self.sk)
        self._out.append(self.last_request)
        return self.last_request

    def delete_ike(self) -> bytes:
        self.closed = True
        return self.request([DeletePayload(ProtocolId.IKE, [])])

    def delete_child(self) -> bytes:
        assert self.child is not None
        return self.request([DeletePayload(ProtocolId.ESP, [self.child.spi_in.to_bytes(4)])])

    def liveness(self) -> bytes:
        return self.request([])

    def retransmit(self) -> None:
        """Our last request again (as if its response had been lost)."""
        self._out.append(self.last_request)
