"""A minimal in-memory IKEv2 responder (gateway) that exercises the client's IkeSA honestly.

Real RFC 7296 on the wire from the client's codec and crypto, with its own protocol logic:
IKE_SA_INIT (proposal choice, NAT-D, COOKIE, INVALID_KE_PAYLOAD), IKE_AUTH with PSK or a
certificate plus EAP-MSCHAPv2 (2.16), the first CHILD_SA with CP, INFORMATIONAL both ways;
IKE fragmentation (RFC 7383) both ways and gateway redirects (RFC 5685) on request.
"""

from __future__ import annotations

import copy
import hashlib
import secrets
import struct
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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
    PayloadType,
    ProtocolId,
    TransformType,
)
from client.ikev2.crypto import SkCipher, encr_keymat_len, integ_for, new_key_exchange, prf_for
from client.ikev2.events import ChildSaKeys
from client.ikev2.keymat import derive_child_keys, derive_ike_keys, derive_rekeyed_ike_keys
from client.ikev2.message import Message, SkContext, decode_fragment, parse_header
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
from client.ikev2.proposals import Proposal, parse_proposals, without_dh
from client.ikev2.tasks.ike_natd import natd_hash
from client.ikev2.tasks.ike_redirect import encode_gateway


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
    # A downgrading gateway: after the identity it proposes EAP-MD5; a Nak is answered
    # by proposing MD5 again ("again") or by EAP-Failure ("failure").
    eap_md5_downgrade: str | None = None
    demand_cookie: bool = False
    address: tuple[str, int] = ("203.0.113.1", 500)
    client_seen_as: tuple[str, int] = ("198.51.100.10", 500)  # differs from it: a NAT
    virtual_ip: str = "198.18.0.10"
    dns: str = "198.18.0.1"
    dns_domain: str = "corp.example.com"
    protected: str = "198.18.0.0/15"
    fragmentation: bool = False  # RFC 7383: announce it; fragment what exceeds fragment_max
    fragment_max: int = 1200  # largest IKE message we send once fragmentation is agreed
    redirect_init: str | None = None  # REDIRECT in the IKE_SA_INIT response (RFC 5685 4)
    redirect_auth: str | None = None  # REDIRECT in the last IKE_AUTH response (section 6)
    auth_lifetime: int | None = None  # N(AUTH_LIFETIME) in the last IKE_AUTH response
    # Rekeying (CREATE_CHILD_SA): answer this many of the client's requests with
    # TEMPORARY_FAILURE, and delete what a rekey replaced by ourselves, as strongSwan does.
    temporary_failures: int = 0
    auto_delete: bool = True


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
        self.eap_responses: list[int] = []  # the EAP Type of each of the client's responses
        self.msk: bytes | None = None
        # Message IDs and retransmission (RFC 7296 2.1, 2.2), both directions
        self.next_request_id = self.my_next_id = 0
        self.last_response: Message | None = None
        self.last_response_bytes = self.last_request = b""
        self.pending_id: int | None = None  # of our request in flight
        self.responses: list[Message] = []  # answers to our own requests
        self.requests: list[Message] = []  # every request we accepted
        self.cookies_sent = self.invalid_ke_sent = 0
        # RFC 7383 / RFC 5685, as the client announced them in IKE_SA_INIT
        self.client_fragmentation = self.client_redirect_supported = False
        self.client_redirected_from: bytes | None = None
        self.fragments: dict[int, bytes] = {}  # number -> plaintext of the message being built
        self.fragment_first = 0  # the first inner payload type, from fragment 1
        self.fragments_received = 0  # SKF datagrams accepted (verified)
        self.last_response_datagrams: list[bytes] = []
        self.last_request_datagrams: list[bytes] = []
        self._secret = rng(16)
        self._out: list[bytes] = []
        self._init_rekeying()

    # -- the wire ----------------------------------------------------------------------
    def datagrams_to_send(self) -> list[bytes]:
        out, self._out = self._out, []
        return out

    def receive(self, data: bytes) -> None:
        h = parse_header(data)
        old = self.old_sa_for(h)
        if old is not None:  # for an IKE SA a rekey replaced: handled with its own state
            with self.on_sa(old):
                self.receive(data)
            return
        whole: Message | None = None
        if h.next_payload == PayloadType.SKF:
            whole = self._fragment(data)
            if whole is None:
                return
        if h.is_response:
            if h.message_id != self.pending_id:
                return  # a late retransmission: nothing to do
            # the I flag: who began the SA
            assert h.is_initiator != self.gw_initiator and h.spi_r == self.spi_r
            self.responses.append(whole or Message.decode(data, self.sk))
            self.pending_id = None
            self._answered(self.responses[-1])
            return
        assert h.is_initiator != self.gw_initiator, "the I flag marks the original initiator"
        if h.message_id == self.next_request_id - 1 and self.last_response_bytes and not whole:
            self._out.extend(self.last_response_datagrams)  # the client retransmitted
            return
        assert h.message_id == self.next_request_id, f"request {h.message_id} out of order"
        if h.exchange == ExchangeType.IKE_SA_INIT:
            self._ike_sa_init(Message.decode(data), data)
            return
        assert h.spi_i == self.spi_i and h.spi_r == self.spi_r and self.sk is not None
        msg = whole or Message.decode(data, self.sk)
        self.requests.append(msg)
        if h.exchange == ExchangeType.IKE_AUTH:
            payloads = self._ike_auth(msg)
        elif h.exchange == ExchangeType.INFORMATIONAL:
            payloads = self._informational(msg)
        elif h.exchange == ExchangeType.CREATE_CHILD_SA:
            payloads = self._create_child_sa(msg)
        else:
            payloads = [NotifyPayload(NotifyType.NO_ADDITIONAL_SAS)]
        self._respond(msg, payloads)
        after, self.after_response = self.after_response, None
        if after is not None:
            after()

    def _respond(self, request: Message, payloads: list[Payload]) -> None:
        self.next_request_id += 1
        self.last_response = Message(
            spi_i=request.spi_i, spi_r=self.spi_r, exchange=request.exchange, is_response=True,
            is_initiator=self.gw_initiator, message_id=request.message_id, payloads=payloads,
            encrypted=request.exchange != ExchangeType.IKE_SA_INIT,
        )
        self.last_response_datagrams = self._encode(self.last_response)
        self.last_response_bytes = self.last_response_datagrams[0]
        self._out.extend(self.last_response_datagrams)

    def _encode(self, msg: Message) -> list[bytes]:
        if msg.encrypted and self.cfg.fragmentation and self.client_fragmentation:
            return msg.encode_fragments(self.sk, self.cfg.fragment_max)
        return [msg.encode(self.sk)]

    def _fragment(self, data: bytes) -> Message | None:
        """RFC 7383 2.6, the simple way: verify, keep by number, decode when all are in."""
        frag = decode_fragment(data, self.sk)  # a forged fragment raises here
        h = frag.header
        if not h.is_response and h.message_id == self.next_request_id - 1:
            if frag.number == 1:  # 2.6.1: only fragment 1 of a retransmission counts
                self._out.extend(self.last_response_datagrams)
            return None
        self.fragments_received += 1
        self.fragments[frag.number] = frag.data
        if frag.number == 1:
            self.fragment_first = frag.first_payload
        if len(self.fragments) < frag.total:
            return None
        chain = b"".join(self.fragments[n] for n in range(1, frag.total + 1))
        self.fragments = {}
        return Message.from_fragments(h, self.fragment_first, chain)

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
        self.client_fragmentation = (
            msg.notify(NotifyType.IKEV2_FRAGMENTATION_SUPPORTED) is not None
        )
        self.client_redirect_supported = msg.notify(NotifyType.REDIRECT_SUPPORTED) is not None
        came_from = msg.notify(NotifyType.REDIRECTED_FROM)
        self.client_redirected_from = came_from.data if came_from else None
        if self.cfg.redirect_init:
            data = encode_gateway(self.cfg.redirect_init) + nonce.data
            self._stateless(msg, NotifyPayload(NotifyType.REDIRECT, data))
            return
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
        if self.cfg.fragmentation:
            payloads.append(NotifyPayload(NotifyType.IKEV2_FRAGMENTATION_SUPPORTED))
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
                return [self.idr, mine, *self._child_or_redirect()]
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
            return [mine, *self._child_or_redirect()]
        eap = msg.get(EapPayload)
        assert eap is not None and eap.code == EapCode.RESPONSE and eap.identifier == self.eap_id
        return [EapPayload(self._eap(eap.data))]

    def _eap(self, packet: bytes) -> bytes:
        """EAP-MSCHAPv2 authenticator (RFC 2759, draft-kamath-pppext-eap-mschapv2)."""
        eap_type, data = packet[4], packet[5:]
        self.eap_id += 1
        self.eap_responses.append(eap_type)
        if self.cfg.eap_md5_downgrade and eap_type in (EapType.IDENTITY, EapType.NAK):
            if eap_type == EapType.NAK and self.cfg.eap_md5_downgrade == "failure":
                return framed(EapCode.FAILURE, self.eap_id)
            md5_request = bytes((EapType.MD5_CHALLENGE, 16)) + self.rng(16)
            return framed(EapCode.REQUEST, self.eap_id, md5_request)
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

    def _child_or_redirect(self) -> list[Payload]:
        if self.cfg.redirect_auth:  # no CHILD_SA: the client goes elsewhere (RFC 5685 6)
            return [NotifyPayload(NotifyType.REDIRECT, encode_gateway(self.cfg.redirect_auth))]
        return self._child()

    def _child(self) -> list[Payload]:
        """The first CHILD_SA (SA, TSi, TSr) and the CP reply, from the first request."""
        req = self.auth_request
        assert req is not None
        sa = req.get(SaPayload)
        # The first CHILD_SA has no key exchange of its own (RFC 7296 1.2).
        accepted = without_dh(parse_proposals(self.cfg.esp_proposals, ProtocolId.ESP))
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
        self.children = [self.child]
        payloads: list[Payload] = []
        if self.cfg.auth_lifetime is not None:
            payloads.append(NotifyPayload(NotifyType.AUTH_LIFETIME,
                                          struct.pack("!I", self.cfg.auth_lifetime)))
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
                if self.in_old_sa is not None:
                    self.in_old_sa["gone"] = True  # the Delete of an SA a rekey replaced
                else:
                    self.closed = True
                return []  # RFC 7296 1.4.1: the response to a Delete of the IKE SA is empty
            if d.protocol == ProtocolId.ESP:
                reply += self._client_deletes_children(d.spis)
        return reply

    def request(self, payloads: list[Payload],
                exchange: int = ExchangeType.INFORMATIONAL) -> bytes:
        """Send a request of our own (one at a time, as RFC 7296 2.3 allows)."""
        assert self.sk is not None and self.pending_id is None, "one request at a time"
        msg = Message(spi_i=self.spi_i, spi_r=self.spi_r, exchange=exchange,
                      is_response=False, is_initiator=self.gw_initiator,
                      message_id=self.my_next_id, payloads=payloads, encrypted=True)
        self.pending_id, self.my_next_id = self.my_next_id, self.my_next_id + 1
        self.last_request_datagrams = self._encode(msg)
        self.last_request = self.last_request_datagrams[0]
        self._out.extend(self.last_request_datagrams)
        return self.last_request

    def delete_ike(self) -> bytes:
        self.closed = True
        return self.request([DeletePayload(ProtocolId.IKE, [])])

    def delete_child(self, child: ChildSaKeys | None = None) -> bytes:
        child = child or self.child
        assert child is not None
        self.pending = ("delete-child", child)
        return self.request([DeletePayload(ProtocolId.ESP, [child.spi_in.to_bytes(4)])])

    def liveness(self) -> bytes:
        return self.request([])

    def retransmit(self) -> None:
        """Our last request again (as if its response had been lost)."""
        self._out.extend(self.last_request_datagrams)

    def redirect(self, gateway: str) -> bytes:
        """Send the client elsewhere on the established SA (RFC 5685 5)."""
        return self.request([NotifyPayload(NotifyType.REDIRECT, encode_gateway(gateway))])

    # -- CREATE_CHILD_SA: rekeying both ways (RFC 7296 1.3.2, 1.3.3, 2.8) ----------------
    # Every IKE SA has its own keys, SPIs, message IDs and I flag; an SA a rekey replaced
    # lives on in `old_sas` (these attributes, saved) until its Delete exchange is over.
    PER_SA = ("spi_i", "spi_r", "sk", "prf", "keys", "gw_initiator", "next_request_id",
              "my_next_id", "last_response", "last_response_bytes", "last_response_datagrams",
              "last_request", "last_request_datagrams", "pending_id", "pending", "fragments",
              "fragment_first")

    def _init_rekeying(self) -> None:
        self.gw_initiator = False  # we are the initiator of the current IKE SA
        self.children: list[ChildSaKeys] = []  # from our point of view, the newest last
        self.deleted_children: list[ChildSaKeys] = []
        self.pending: tuple[str, Any] | None = None  # what our request in flight is for
        self.after_response: Callable[[], None] | None = None
        self.old_sas: list[dict[str, Any]] = []
        self.in_old_sa: dict[str, Any] | None = None
        # The client's rekey that crossed ours: (what it created, its lower nonce).
        self.crossing: tuple[Any, bytes] | None = None
        self.rekey_errors: list[int] = []  # error notifies in answers to our rekeys
        self.ike_rekeys = 0  # IKE SAs we switched to

    def old_sa_for(self, h) -> dict[str, Any] | None:
        if self.in_old_sa is not None:
            return None
        return next((o for o in self.old_sas
                     if (o["spi_i"], o["spi_r"]) == (h.spi_i, h.spi_r)), None)

    @contextmanager
    def on_sa(self, state: dict[str, Any]) -> Iterator[None]:
        """Act as the IKE SA `state` describes (a replaced one) for a while."""
        saved = {n: getattr(self, n) for n in self.PER_SA}
        for n in self.PER_SA:
            setattr(self, n, state[n])
        self.in_old_sa = state
        try:
            yield
        finally:
            state.update({n: getattr(self, n) for n in self.PER_SA})
            for n, v in saved.items():
                setattr(self, n, v)
            self.in_old_sa = None
            if state.get("gone"):
                self.old_sas.remove(state)

    def _create_child_sa(self, msg: Message) -> list[Payload]:
        if self.temporary_failures_left():
            return [NotifyPayload(NotifyType.TEMPORARY_FAILURE)]
        rekey = msg.notify(NotifyType.REKEY_SA)
        if rekey is not None:
            return self._answer_child_rekey(msg, rekey)
        sa = msg.get(SaPayload)
        if sa is not None and sa.proposals[0].protocol == ProtocolId.IKE:
            return self._answer_ike_rekey(msg)
        return [NotifyPayload(NotifyType.NO_ADDITIONAL_SAS)]

    def temporary_failures_left(self) -> bool:
        if self.cfg.temporary_failures > 0:
            self.cfg.temporary_failures -= 1
            return True
        return False

    def _new_child(self, chosen: Proposal, spi_in: int, spi_out: int, ni: bytes, nr: bytes,
                   shared: bytes | None, initiator: bool) -> ChildSaKeys:
        encr, integ = chosen.first(TransformType.ENCR), chosen.first(TransformType.INTEG)
        integ_len = integ_for(integ.id).key_size if integ else 0
        km = derive_child_keys(self.prf, self.keys.sk_d, ni, nr,
                               encr_keymat_len(encr.id, encr.key_length), integ_len, shared)
        mine, theirs = ((km.encr_i, km.integ_i), (km.encr_r, km.integ_r))
        if not initiator:
            mine, theirs = theirs, mine
        return ChildSaKeys(spi_in=spi_in, spi_out=spi_out, encr_id=encr.id,
                           key_bits=encr.key_length, integ_id=integ.id if integ else None,
                           encr_key_in=theirs[0], integ_key_in=theirs[1],
                           encr_key_out=mine[0], integ_key_out=mine[1])

    def _key_exchange(self, chosen: Proposal, ke: KePayload | None
                      ) -> tuple[Any, bytes | None] | NotifyPayload:
        dh = chosen.first(TransformType.DH)
        if dh is None:
            return None, None
        if ke is None or ke.group != dh.id:
            return NotifyPayload(NotifyType.INVALID_KE_PAYLOAD, struct.pack("!H", dh.id))
        ours = new_key_exchange(dh.id)
        return ours, ours.shared_secret(ke.data)

    # the client rekeys a CHILD_SA
    def _answer_child_rekey(self, msg: Message, rekey: NotifyPayload) -> list[Payload]:
        old = next((c for c in self.children if c.spi_out.to_bytes(4) == rekey.spi), None)
        if old is None:
            return [NotifyPayload(NotifyType.CHILD_SA_NOT_FOUND, protocol=ProtocolId.ESP,
                                  spi=rekey.spi)]
        if self.pending == ("delete-child", old):
            return [NotifyPayload(NotifyType.TEMPORARY_FAILURE)]  # RFC 7296 2.25.1
        sa, nonce, ke = msg.get(SaPayload), msg.get(NoncePayload), msg.get(KePayload)
        chosen = choose(sa.proposals, parse_proposals(self.cfg.esp_proposals, ProtocolId.ESP),
                        ke.group if ke else None)
        if chosen is None:
            return [NotifyPayload(NotifyType.NO_PROPOSAL_CHOSEN)]
        kex = self._key_exchange(chosen, ke)
        if isinstance(kex, NotifyPayload):
            return [kex]
        ours, shared = kex
        their_spi = int.from_bytes(next(p.spi for p in sa.proposals if p.number == chosen.number))
        spi = int.from_bytes(self.rng(4)) | 0x100
        nr = self.rng(32)
        new = self._new_child(chosen, spi, their_spi, nonce.data, nr, shared, initiator=False)
        self.children.append(new)
        self.child = new
        if self.pending is not None and self.pending[0] == "child-rekey" \
                and self.pending[1]["old"] is old:
            self.crossing = (new, min(nonce.data, nr))
        chosen.spi = spi.to_bytes(4)
        return [SaPayload([chosen]), NoncePayload(nr),
                *([KePayload(ours.group, ours.public_bytes)] if ours else []),
                msg.get(TsiPayload), msg.get(TsrPayload)]

    def _client_deletes_children(self, spis: list[bytes]) -> list[Payload]:
        ours = []
        for spi in spis:
            child = next((c for c in self.children if c.spi_out.to_bytes(4) == spi), None)
            if child is None:
                continue
            if self.pending != ("delete-child", child):  # both deleting it: neither names it
                ours.append(child.spi_in.to_bytes(4))
            self._forget_child(child)
        return [DeletePayload(ProtocolId.ESP, ours)] if ours else []

    def _forget_child(self, child: ChildSaKeys) -> None:
        if child in self.children:
            self.children.remove(child)
            self.deleted_children.append(child)
        self.child = self.children[-1] if self.children else None

    # we rekey a CHILD_SA
    def rekey_child(self, child: ChildSaKeys | None = None) -> bytes:
        old = child or self.child
        assert old is not None
        nonce, spi = self.rng(32), int.from_bytes(self.rng(4)) | 0x100
        proposals = parse_proposals(self.cfg.esp_proposals, ProtocolId.ESP)
        for p in proposals:
            p.spi = spi.to_bytes(4)
        group = next((t.id for p in proposals for t in p.of_type(TransformType.DH)), None)
        ke = new_key_exchange(group) if group else None
        self.pending = ("child-rekey", {"old": old, "nonce": nonce, "spi": spi, "ke": ke,
                                        "proposals": proposals})
        self.crossing = None
        vip = ip_network(self.cfg.virtual_ip)
        return self.request([
            NotifyPayload(NotifyType.REKEY_SA, protocol=ProtocolId.ESP, spi=old.spi_in.to_bytes(4)),
            SaPayload(proposals), NoncePayload(nonce),
            *([KePayload(group, ke.public_bytes)] if ke else []),
            TsiPayload([TrafficSelector.from_network(self.cfg.protected)]),
            TsrPayload([TrafficSelector.from_network(vip)]),
        ], ExchangeType.CREATE_CHILD_SA)

    def _answered(self, msg: Message) -> None:
        """The client answered our request: finish what it was for."""
        kind, ctx = self.pending or ("", None)
        self.pending = None
        if kind == "delete-child":
            self._forget_child(ctx)
        elif kind == "delete-ike":
            self.in_old_sa["gone"] = True
        elif kind == "child-rekey":
            self._child_rekey_answered(msg, ctx)
        elif kind == "ike-rekey":
            self._ike_rekey_answered(msg, ctx)

    def _child_rekey_answered(self, msg: Message, ctx: dict[str, Any]) -> None:
        errors = [n.notify_type for n in msg.notifies() if n.is_error]
        if errors:
            self.rekey_errors += errors
            return
        (chosen,) = msg.get(SaPayload).proposals
        nonce, ke = msg.get(NoncePayload), msg.get(KePayload)
        shared = ctx["ke"].shared_secret(ke.data) if ke else None
        new = self._new_child(chosen, ctx["spi"], int.from_bytes(chosen.spi), ctx["nonce"],
                              nonce.data, shared, initiator=True)
        self.children.append(new)
        self.child = new
        old, to_delete = ctx["old"], ctx["old"]
        if self.crossing is not None:
            theirs, their_nonce = self.crossing
            if min(ctx["nonce"], nonce.data) < their_nonce:
                to_delete = new  # ours is redundant; the client deletes the old one
                self.child = theirs
        if old not in self.children and to_delete is old:
            return
        if self.cfg.auto_delete:
            self.delete_child(to_delete)

    # the client rekeys the IKE SA
    def _answer_ike_rekey(self, msg: Message) -> list[Payload]:
        sa, nonce, ke = msg.get(SaPayload), msg.get(NoncePayload), msg.get(KePayload)
        chosen = choose(sa.proposals, parse_proposals(self.cfg.ike_proposals, ProtocolId.IKE),
                        ke.group)
        if chosen is None:
            return [NotifyPayload(NotifyType.NO_PROPOSAL_CHOSEN)]
        kex = self._key_exchange(chosen, ke)
        if isinstance(kex, NotifyPayload):
            return [kex]
        ours, shared = kex
        their_spi = next(p.spi for p in sa.proposals if p.number == chosen.number)
        spi, nr = self.rng(8), self.rng(32)
        state = self._new_ike_sa(chosen, shared, nonce.data, nr, their_spi, spi, gw_init=False)
        if self.pending is not None and self.pending[0] == "ike-rekey":
            self.crossing = (state, min(nonce.data, nr))
        else:
            self.after_response = lambda: self._switch_ike(state, delete_old=False)
        chosen.spi = spi
        return [SaPayload([chosen]), NoncePayload(nr), KePayload(ours.group, ours.public_bytes)]

    def _new_ike_sa(self, chosen: Proposal, shared: bytes, ni: bytes, nr: bytes, spi_i: bytes,
                    spi_r: bytes, gw_init: bool) -> dict[str, Any]:
        encr, integ = chosen.first(TransformType.ENCR), chosen.first(TransformType.INTEG)
        cipher = SkCipher(encr.id, encr.key_length, integ.id if integ else None)
        prf = prf_for(chosen.first(TransformType.PRF).id)
        k = derive_rekeyed_ike_keys(self.prf, self.keys.sk_d, prf, cipher.encr_key_len,
                                    cipher.integ_key_len, shared, ni, nr, spi_i, spi_r)
        if gw_init:
            sk = SkContext(cipher, k.sk_ei, k.sk_ai, k.sk_er, k.sk_ar, rng=self.rng)
        else:
            sk = SkContext(cipher, k.sk_er, k.sk_ar, k.sk_ei, k.sk_ai, rng=self.rng)
        return {"spi_i": spi_i, "spi_r": spi_r, "sk": sk, "prf": prf, "keys": k,
                "gw_initiator": gw_init, "next_request_id": 0, "my_next_id": 0,
                "last_response": None, "last_response_bytes": b"",
                "last_response_datagrams": [], "last_request": b"",
                "last_request_datagrams": [], "pending_id": None, "pending": None,
                "fragments": {}, "fragment_first": 0}

    def _switch_ike(self, state: dict[str, Any], delete_old: bool) -> None:
        """`state` is the IKE SA from now on; the current one waits for its Delete."""
        old = {n: getattr(self, n) for n in self.PER_SA}
        self.old_sas.append(old)
        for n in self.PER_SA:
            setattr(self, n, state[n])
        self.ike_rekeys += 1
        if delete_old and self.cfg.auto_delete:
            self.delete_old_ike(old)

    def delete_old_ike(self, old: dict[str, Any]) -> None:
        with self.on_sa(old):
            self.pending = ("delete-ike", None)
            self.request([DeletePayload(ProtocolId.IKE, [])])

    # we rekey the IKE SA
    def rekey_ike(self) -> bytes:
        spi, nonce = self.rng(8), self.rng(32)
        proposals = parse_proposals(self.cfg.ike_proposals, ProtocolId.IKE)
        for p in proposals:
            p.spi = spi
        group = proposals[0].first(TransformType.DH).id
        ke = new_key_exchange(group)
        self.pending = ("ike-rekey", {"spi": spi, "nonce": nonce, "ke": ke})
        self.crossing = None
        return self.request([SaPayload(proposals), NoncePayload(nonce),
                             KePayload(group, ke.public_bytes)], ExchangeType.CREATE_CHILD_SA)

    def _ike_rekey_answered(self, msg: Message, ctx: dict[str, Any]) -> None:
        errors = [n.notify_type for n in msg.notifies() if n.is_error]
        crossing, self.crossing = self.crossing, None
        if errors:
            self.rekey_errors += errors
            if crossing is not None:
                self._switch_ike(crossing[0], delete_old=False)
            return
        (chosen,) = msg.get(SaPayload).proposals
        nonce, ke = msg.get(NoncePayload), msg.get(KePayload)
        shared = ctx["ke"].shared_secret(ke.data)
        state = self._new_ike_sa(chosen, shared, ctx["nonce"], nonce.data, ctx["spi"],
                                 chosen.spi, gw_init=True)
        if crossing is not None and min(ctx["nonce"], nonce.data) < crossing[1]:
            # Ours is redundant (RFC 7296 2.8.2): delete it; the client deletes the old one.
            self._switch_ike(crossing[0], delete_old=False)
            self.old_sas.append(state)
            if self.cfg.auto_delete:
                self.delete_old_ike(state)
            return
        self._switch_ike(state, delete_old=True)
        if crossing is not None:
            self.old_sas.append(crossing[0])  # the client deletes its redundant SA
