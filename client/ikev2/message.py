"""IKEv2 messages (RFC 7296 section 3.1), SK payload protection (section 3.14) and
IKE fragments (RFC 7383 section 2.5, the SKF payload).

A fragmented message is its inner payload chain cut into pieces, each sealed on its own
under an SKF header that carries Fragment Number and Total Fragments (covered by the ICV).
`Message.encode_fragments` cuts, `decode_fragment` verifies and opens one piece, and
`Message.from_fragments` decodes the reassembled chain (fragments.py collects the pieces).
"""

from __future__ import annotations

import secrets
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from .constants import (
    FLAG_INITIATOR,
    FLAG_RESPONSE,
    IKE_HEADER_LEN,
    CfgType,
    EapCode,
    EapType,
    ExchangeType,
    NotifyType,
    PayloadType,
)
from .crypto import SkCipher
from .errors import LocalProtocolError, RemoteProtocolError
from .payloads import (
    CpPayload,
    EapPayload,
    NotifyPayload,
    Payload,
    SkPayload,
    UnknownPayload,
    decode_chain,
    encode_chain,
)

IKE_VERSION = 0x20  # major 2, minor 0
_SK_HEADER_LEN = 4
_HEADER = struct.Struct("!8s8sBBBBII")
# SKF: generic payload header, then Fragment Number and Total Fragments (RFC 7383 2.5).
_SKF_HEADER = struct.Struct("!BBHHH")
SKF_HEADER_LEN = _SKF_HEADER.size


@dataclass
class Header:
    spi_i: bytes
    spi_r: bytes
    next_payload: int
    version: int
    exchange: int
    flags: int
    message_id: int
    length: int

    @property
    def is_response(self) -> bool:
        return bool(self.flags & FLAG_RESPONSE)

    @property
    def is_initiator(self) -> bool:
        return bool(self.flags & FLAG_INITIATOR)


def parse_header(data: bytes) -> Header:
    """Parse and sanity-check the fixed IKE header, enough to route a datagram."""
    if len(data) < IKE_HEADER_LEN:
        raise RemoteProtocolError(f"IKE header: truncated ({len(data)} bytes)")
    h = Header(*_HEADER.unpack_from(data))
    if h.version >> 4 != 2:
        raise RemoteProtocolError(f"IKE header: unsupported major version {h.version >> 4}")
    if h.length != len(data):
        raise RemoteProtocolError(f"IKE header: length field {h.length}, datagram {len(data)}")
    return h


class SkContext:
    """Keys of one IKE SA for SK payload protection: out = our direction, in = the peer's."""

    def __init__(
        self,
        cipher: SkCipher,
        encr_out: bytes,
        integ_out: bytes,
        encr_in: bytes,
        integ_in: bytes,
        rng: Callable[[int], bytes] = secrets.token_bytes,
    ) -> None:
        self.cipher = cipher
        self.encr_out, self.integ_out = encr_out, integ_out
        self.encr_in, self.integ_in = encr_in, integ_in
        self.rng = rng

    def __repr__(self) -> str:  # never show keys
        return f"SkContext({self.cipher!r})"


_P = TypeVar("_P", bound=Payload)


@dataclass
class Message:
    spi_i: bytes
    spi_r: bytes
    exchange: int
    is_response: bool
    is_initiator: bool
    message_id: int
    payloads: list[Payload] = field(default_factory=list)
    encrypted: bool = False
    # The datagram a decoded message came from (AUTH signs the IKE_SA_INIT bytes).
    raw: bytes = field(default=b"", repr=False, compare=False)

    # -- convenience ----------------------------------------------------------------------
    def get(self, cls: type[_P]) -> _P | None:
        return next((p for p in self.payloads if isinstance(p, cls)), None)

    def get_all(self, cls: type[_P]) -> list[_P]:
        return [p for p in self.payloads if isinstance(p, cls)]

    def notifies(self) -> list[NotifyPayload]:
        return self.get_all(NotifyPayload)

    def notify(self, ntype: int) -> NotifyPayload | None:
        return next((n for n in self.notifies() if n.notify_type == ntype), None)

    # -- codec ----------------------------------------------------------------------------
    def _header(self, next_payload: int, length: int) -> bytes:
        if len(self.spi_i) != 8 or len(self.spi_r) != 8:
            raise LocalProtocolError("IKE SPIs must be 8 bytes")
        flags = (FLAG_RESPONSE if self.is_response else 0) | (
            FLAG_INITIATOR if self.is_initiator else 0
        )
        return _HEADER.pack(self.spi_i, self.spi_r, next_payload, IKE_VERSION, self.exchange,
                            flags, self.message_id, length)

    def _inner_chain(self) -> tuple[int, bytes]:
        if any(isinstance(p, SkPayload) for p in self.payloads):
            raise LocalProtocolError("put inner payloads in Message.payloads, not an SkPayload")
        return encode_chain(self.payloads)

    def encode(self, sk: SkContext | None = None) -> bytes:
        first, chain = self._inner_chain()
        if not self.encrypted:
            return self._header(first, IKE_HEADER_LEN + len(chain)) + chain
        if sk is None:
            raise LocalProtocolError("an encrypted message needs SK keys")
        sk_len = _SK_HEADER_LEN + sk.cipher.body_length(len(chain))
        if sk_len > 0xFFFF:
            raise LocalProtocolError(f"SK payload too long ({sk_len} bytes); needs fragmentation")
        # The ICV/AEAD tag covers the IKE header and the SK generic header (RFC 7296 3.14).
        aad = self._header(PayloadType.SK, IKE_HEADER_LEN + sk_len)
        aad += struct.pack("!BBH", first, 0, sk_len)
        return aad + _seal(sk, aad, chain, sk_len - _SK_HEADER_LEN)

    def encode_fragments(self, sk: SkContext, max_size: int) -> list[bytes]:
        """The message as datagrams of at most `max_size` bytes (IKE header included).

        One ordinary SK datagram when it fits; otherwise SKF fragments (RFC 7383 2.5),
        each sealed separately, the first naming the first inner payload type.
        """
        if not self.encrypted:
            raise LocalProtocolError("only protected messages can be fragmented")
        first, chain = self._inner_chain()
        whole = IKE_HEADER_LEN + _SK_HEADER_LEN + sk.cipher.body_length(len(chain))
        if whole <= max_size:
            return [self.encode(sk)]
        room = fragment_capacity(sk, max_size)
        total = -(-len(chain) // room)
        if total > 0xFFFF:
            raise LocalProtocolError(f"{len(chain)} bytes need more than 65535 fragments")
        out = []
        for number in range(1, total + 1):
            piece = chain[(number - 1) * room : number * room]
            body_len = sk.cipher.body_length(len(piece))
            skf_len = SKF_HEADER_LEN + body_len
            aad = self._header(PayloadType.SKF, IKE_HEADER_LEN + skf_len)
            # RFC 7383 2.5: only the first fragment names the first inner payload.
            aad += _SKF_HEADER.pack(first if number == 1 else 0, 0, skf_len, number, total)
            out.append(aad + _seal(sk, aad, piece, body_len))
        return out

    @classmethod
    def from_fragments(cls, header: Header, first_payload: int, chain: bytes) -> Message:
        """The message whose inner chain was reassembled from verified fragments."""
        payloads = decode_chain(first_payload, chain)
        if any(isinstance(p, SkPayload) for p in payloads):
            raise RemoteProtocolError("SK payload inside a fragmented message")
        return cls(
            spi_i=header.spi_i,
            spi_r=header.spi_r,
            exchange=_known(ExchangeType, header.exchange),
            is_response=header.is_response,
            is_initiator=header.is_initiator,
            message_id=header.message_id,
            payloads=payloads,
            encrypted=True,
        )

    @classmethod
    def decode(cls, data: bytes, sk: SkContext | None = None) -> Message:
        """Parse a datagram; an SK payload is verified and decrypted with `sk`'s in-keys.

        Raises RemoteProtocolError for malformed input and CryptoError when the
        integrity check fails (such messages must be dropped silently).
        """
        data = bytes(data)
        h = parse_header(data)
        payloads = decode_chain(h.next_payload, data[IKE_HEADER_LEN:])
        encrypted = bool(payloads) and isinstance(payloads[-1], SkPayload)
        if encrypted:
            skp = payloads[-1]
            assert isinstance(skp, SkPayload)
            if len(payloads) != 1:
                raise RemoteProtocolError("unprotected payloads next to the SK payload")
            if sk is None:
                raise RemoteProtocolError("encrypted message but no keys to decrypt it")
            aad = data[: IKE_HEADER_LEN + _SK_HEADER_LEN]
            inner = sk.cipher.open(sk.encr_in, sk.integ_in, aad, skp.body)
            payloads = decode_chain(skp.inner_first, inner)
            if any(isinstance(p, SkPayload) for p in payloads):
                raise RemoteProtocolError("SK payload nested inside an SK payload")
        return cls(
            spi_i=h.spi_i,
            spi_r=h.spi_r,
            exchange=_known(ExchangeType, h.exchange),
            is_response=h.is_response,
            is_initiator=h.is_initiator,
            message_id=h.message_id,
            payloads=payloads,
            encrypted=encrypted,
            raw=data,
        )

    # -- logging --------------------------------------------------------------------------
    def summary(self) -> str:
        """One line in strongSwan's style: `IKE_AUTH request 1 [ IDi AUTH SA TSi TSr ]`."""
        try:
            exchange = ExchangeType(self.exchange).name
        except ValueError:
            exchange = f"EXCHANGE({self.exchange})"
        kind = "response" if self.is_response else "request"
        items = " ".join(_describe(p) for p in self.payloads)
        return f"{exchange} {kind} {self.message_id} [ {items + ' ' if items else ''}]"


def _seal(sk: SkContext, aad: bytes, plaintext: bytes, body_len: int) -> bytes:
    body = sk.cipher.seal(sk.encr_out, sk.integ_out, sk.rng(sk.cipher.iv_size), aad, plaintext)
    if len(body) != body_len:
        raise LocalProtocolError("SK cipher produced a body of unexpected length")
    return body


def fragment_capacity(sk: SkContext, max_size: int) -> int:
    """How many inner-chain bytes one SKF datagram of at most `max_size` bytes carries."""
    budget = max_size - IKE_HEADER_LEN - SKF_HEADER_LEN
    room = budget - sk.cipher.iv_size - sk.cipher.icv_size - 1
    while room > 0 and sk.cipher.body_length(room) > budget:
        room -= 1  # CBC padding: at most one block's worth of steps
    if room < 1:
        raise LocalProtocolError(f"a fragment of {max_size} bytes has no room for data")
    return room


@dataclass(frozen=True)
class Fragment:
    """One verified, decrypted SKF payload (RFC 7383 2.5)."""

    header: Header
    number: int
    total: int
    first_payload: int  # the SKF's Next Payload: meaningful in fragment 1 only
    data: bytes = field(repr=False)
    size: int = 0  # of the datagram, for logging


def decode_fragment(data: bytes, sk: SkContext) -> Fragment:
    """Parse a datagram whose only payload is SKF; verify and decrypt it with `sk`.

    Raises RemoteProtocolError for malformed input and CryptoError when the integrity
    check fails (such a fragment is dropped; the others of its message are kept).
    """
    data = bytes(data)
    h = parse_header(data)
    if h.next_payload != PayloadType.SKF:
        raise RemoteProtocolError("not an IKE fragment (first payload is not SKF)")
    if len(data) < IKE_HEADER_LEN + SKF_HEADER_LEN:
        raise RemoteProtocolError("SKF payload: truncated header")
    next_type, _, length, number, total = _SKF_HEADER.unpack_from(data, IKE_HEADER_LEN)
    if length != len(data) - IKE_HEADER_LEN:
        raise RemoteProtocolError(
            f"SKF payload: length {length}, but {len(data) - IKE_HEADER_LEN} bytes follow the"
            " header (it must be the only payload)"
        )
    if not 1 <= number <= total:
        raise RemoteProtocolError(f"SKF payload: fragment {number} of {total}")
    aad = data[: IKE_HEADER_LEN + SKF_HEADER_LEN]
    plain = sk.cipher.open(sk.encr_in, sk.integ_in, aad, data[IKE_HEADER_LEN + SKF_HEADER_LEN :])
    return Fragment(h, number, total, next_type, plain, len(data))


def _known(enum: type, value: int) -> int:
    try:
        return enum(value)
    except ValueError:
        return value


# strongSwan's payload abbreviations (payload.c payload_type_short_names).
PAYLOAD_SHORT_NAMES: dict[int, str] = {
    PayloadType.SA: "SA", PayloadType.KE: "KE", PayloadType.IDi: "IDi", PayloadType.IDr: "IDr",
    PayloadType.CERT: "CERT", PayloadType.CERTREQ: "CERTREQ", PayloadType.AUTH: "AUTH",
    PayloadType.NONCE: "No", PayloadType.NOTIFY: "N", PayloadType.DELETE: "D",
    PayloadType.VENDOR: "V", PayloadType.TSi: "TSi", PayloadType.TSr: "TSr",
    PayloadType.SK: "E", PayloadType.CP: "CP", PayloadType.EAP: "EAP", PayloadType.SKF: "EF",
}

# strongSwan's notify abbreviations (notify_payload.c notify_type_short_names); the raw
# numbers are IANA types our NotifyType enum does not list.
NOTIFY_SHORT_NAMES: dict[int, str] = {
    NotifyType.UNSUPPORTED_CRITICAL_PAYLOAD: "CRIT",
    NotifyType.INVALID_IKE_SPI: "INVAL_IKE_SPI",
    NotifyType.INVALID_MAJOR_VERSION: "INVAL_MAJOR",
    NotifyType.INVALID_SYNTAX: "INVAL_SYN",
    NotifyType.INVALID_MESSAGE_ID: "INVAL_MID",
    NotifyType.INVALID_SPI: "INVAL_SPI",
    NotifyType.NO_PROPOSAL_CHOSEN: "NO_PROP",
    NotifyType.INVALID_KE_PAYLOAD: "INVAL_KE",
    NotifyType.AUTHENTICATION_FAILED: "AUTH_FAILED",
    NotifyType.SINGLE_PAIR_REQUIRED: "SINGLE_PAIR",
    NotifyType.NO_ADDITIONAL_SAS: "NO_ADD_SAS",
    NotifyType.INTERNAL_ADDRESS_FAILURE: "INT_ADDR_FAIL",
    NotifyType.FAILED_CP_REQUIRED: "FAIL_CP_REQ",
    NotifyType.TS_UNACCEPTABLE: "TS_UNACCEPT",
    NotifyType.INVALID_SELECTORS: "INVAL_SEL",
    NotifyType.UNACCEPTABLE_ADDRESSES: "UNACCEPT_ADDR",
    NotifyType.UNEXPECTED_NAT_DETECTED: "UNEXPECT_NAT",
    NotifyType.USE_ASSIGNED_HoA: "ASSIGNED_HoA",
    NotifyType.TEMPORARY_FAILURE: "TEMP_FAIL",
    NotifyType.CHILD_SA_NOT_FOUND: "NO_CHILD_SA",
    NotifyType.INITIAL_CONTACT: "INIT_CONTACT",
    NotifyType.SET_WINDOW_SIZE: "SET_WINSIZE",
    NotifyType.ADDITIONAL_TS_POSSIBLE: "ADD_TS_POSS",
    NotifyType.IPCOMP_SUPPORTED: "IPCOMP_SUP",
    NotifyType.NAT_DETECTION_SOURCE_IP: "NATD_S_IP",
    NotifyType.NAT_DETECTION_DESTINATION_IP: "NATD_D_IP",
    NotifyType.COOKIE: "COOKIE",
    NotifyType.USE_TRANSPORT_MODE: "USE_TRANSP",
    NotifyType.HTTP_CERT_LOOKUP_SUPPORTED: "HTTP_CERT_LOOK",
    NotifyType.REKEY_SA: "REKEY_SA",
    NotifyType.ESP_TFC_PADDING_NOT_SUPPORTED: "ESP_TFC_PAD_N",
    NotifyType.NON_FIRST_FRAGMENTS_ALSO: "NON_FIRST_FRAG",
    NotifyType.MOBIKE_SUPPORTED: "MOBIKE_SUP",
    NotifyType.ADDITIONAL_IP4_ADDRESS: "ADD_4_ADDR",
    NotifyType.ADDITIONAL_IP6_ADDRESS: "ADD_6_ADDR",
    NotifyType.NO_ADDITIONAL_ADDRESSES: "NO_ADD_ADDR",
    NotifyType.UPDATE_SA_ADDRESSES: "UPD_SA_ADDR",
    NotifyType.COOKIE2: "COOKIE2",
    NotifyType.NO_NATS_ALLOWED: "NO_NATS",
    NotifyType.AUTH_LIFETIME: "AUTH_LFT",
    NotifyType.MULTIPLE_AUTH_SUPPORTED: "MULT_AUTH",
    NotifyType.ANOTHER_AUTH_FOLLOWS: "AUTH_FOLLOWS",
    NotifyType.REDIRECT_SUPPORTED: "REDIR_SUP",
    NotifyType.REDIRECT: "REDIR",
    NotifyType.REDIRECTED_FROM: "REDIR_FROM",
    NotifyType.EAP_ONLY_AUTHENTICATION: "EAP_ONLY",
    NotifyType.IKEV2_FRAGMENTATION_SUPPORTED: "FRAG_SUP",
    NotifyType.SIGNATURE_HASH_ALGORITHMS: "HASH_ALG",
    16418: "CHDLESS_SUP",  # CHILDLESS_IKEV2_SUPPORTED (RFC 6023)
    16438: "IKE_INT_SUP",  # INTERMEDIATE_EXCHANGE_SUPPORTED (RFC 9242)
}

_CP_PREFIX = {CfgType.CFG_REQUEST: "RQ(", CfgType.CFG_REPLY: "RP(", CfgType.CFG_SET: "S(",
              CfgType.CFG_ACK: "A("}
# strongSwan's configuration attribute abbreviations (attributes.c), by attribute type.
_CP_ATTR_SHORT = {
    1: "ADDR", 2: "MASK", 3: "DNS", 4: "NBNS", 5: "EXP", 6: "DHCP", 7: "VER", 8: "ADDR6",
    9: "MASK6", 10: "DNS6", 11: "NBNS6", 12: "DHCP6", 13: "SUBNET", 14: "SUP", 15: "SUBNET6",
    25: "DOMAIN", 26: "TA",
}
_EAP_CODE_SHORT = {EapCode.REQUEST: "REQ", EapCode.RESPONSE: "RES", EapCode.SUCCESS: "SUCC",
                   EapCode.FAILURE: "FAIL"}
_EAP_TYPE_SHORT = {EapType.IDENTITY: "ID", EapType.NOTIFICATION: "NTF", EapType.NAK: "NAK",
                   EapType.MD5_CHALLENGE: "MD5", EapType.TLS: "TLS", EapType.MSCHAPV2: "MSCHAPV2"}


def _describe(p: Payload) -> str:
    if isinstance(p, UnknownPayload):
        return f"UNKN({p.ptype})"
    name = PAYLOAD_SHORT_NAMES.get(p.wire_type(), str(p.wire_type()))
    if isinstance(p, NotifyPayload):
        return f"N({NOTIFY_SHORT_NAMES.get(p.notify_type, str(int(p.notify_type)))})"
    if isinstance(p, EapPayload):
        text = f"EAP/{_EAP_CODE_SHORT.get(p.code, str(p.code))}"
        if p.eap_type is not None:
            text += f"/{_EAP_TYPE_SHORT.get(p.eap_type, str(int(p.eap_type)))}"
        return text
    if isinstance(p, CpPayload) and p.attributes:
        attrs = " ".join(_CP_ATTR_SHORT.get(t, str(int(t))) for t, _ in p.attributes)
        return f"CP{_CP_PREFIX.get(p.cfg_type, '(')}{attrs})"
    return name
