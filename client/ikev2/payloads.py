"""IKEv2 payloads (RFC 7296 section 3): dataclasses with strict, bounded codecs.

Each payload class encodes and decodes only its body; the 4-byte generic payload
header (next payload, critical bit, length) is handled by `encode_chain`/`decode_chain`.
The SK payload is opaque here: message.py decrypts it and decodes the inner chain.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import IntEnum
from ipaddress import (
    IPv4Address,
    IPv4Interface,
    IPv4Network,
    IPv6Address,
    IPv6Interface,
    IPv6Network,
)
from typing import ClassVar, Self, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from .buffer import Reader
from .constants import (
    AuthMethod,
    CertEncoding,
    CfgAttr,
    CfgType,
    EapCode,
    EapType,
    IdType,
    NotifyType,
    PayloadType,
    ProtocolId,
    TransformAttr,
    TransformType,
    TsType,
)
from .errors import LocalProtocolError, RemoteProtocolError
from .identity import classify_identity, dn_from_der, dn_to_string, same_dn
from .proposals import Proposal, Transform

_E = TypeVar("_E", bound=IntEnum)


def _enum(enum: type[_E], value: int) -> _E | int:
    """The enum member for a known value, else the plain int (unknown values survive)."""
    try:
        return enum(value)
    except ValueError:
        return value


def _show(value: int) -> str:
    return value.name if isinstance(value, IntEnum) else str(value)


class Payload:
    """Base of every payload; concrete classes are dataclasses with a `critical` flag."""

    TYPE: ClassVar[int]
    critical: bool

    def wire_type(self) -> int:
        return self.TYPE

    def encode_body(self) -> bytes:
        raise NotImplementedError

    @classmethod
    def decode_body(cls, body: bytes) -> Self:
        raise NotImplementedError


@dataclass
class _Known(Payload):
    # kw_only keeps `critical` last in every subclass's constructor.
    critical: bool = field(default=False, kw_only=True)


# --- SA (3.3) --------------------------------------------------------------------------

_LAST_PROPOSAL, _MORE_PROPOSALS = 0, 2
_LAST_TRANSFORM, _MORE_TRANSFORMS = 0, 3
_ATTR_TV = 0x8000
_SPI_SIZES = {ProtocolId.IKE: (0, 8), ProtocolId.AH: (4,), ProtocolId.ESP: (4,)}


def _encode_transform(t: Transform, last: bool) -> bytes:
    attrs = b""
    if t.key_length is not None:
        attrs = struct.pack("!HH", _ATTR_TV | TransformAttr.KEY_LENGTH, t.key_length)
    flag = _LAST_TRANSFORM if last else _MORE_TRANSFORMS
    return struct.pack("!BBHBBH", flag, 0, 8 + len(attrs), t.type, 0, t.id) + attrs


def _decode_transform(r: Reader) -> Transform:
    ttype = _enum(TransformType, r.u8())
    r.skip(1)
    tid = r.u16()
    key_length: int | None = None
    while r.remaining:
        atype = r.u16()
        if atype & _ATTR_TV:
            value = r.u16()
        else:
            r.skip(r.u16())  # TLV: bounded skip, still rejected below
            value = None
        if atype & ~_ATTR_TV != TransformAttr.KEY_LENGTH:
            # RFC 7296 3.3.6: a transform with an unknown attribute is unusable.
            raise RemoteProtocolError(f"SA: unsupported transform attribute {atype & 0x7FFF}")
        if value is None:
            raise RemoteProtocolError("SA: KEY_LENGTH attribute must use the TV format")
        if key_length is not None:
            raise RemoteProtocolError("SA: duplicate KEY_LENGTH attribute")
        key_length = value
    return Transform(ttype, tid, key_length)


def _encode_proposal(p: Proposal, last: bool) -> bytes:
    if len(p.transforms) > 255 or len(p.spi) > 255:
        raise LocalProtocolError("SA: too many transforms or SPI too long")
    body = b"".join(
        _encode_transform(t, i == len(p.transforms) - 1) for i, t in enumerate(p.transforms)
    )
    flag = _LAST_PROPOSAL if last else _MORE_PROPOSALS
    length = 8 + len(p.spi) + len(body)
    head = struct.pack("!BBHBBBB", flag, 0, length, p.number, p.protocol, len(p.spi),
                       len(p.transforms))
    return head + p.spi + body


def _decode_proposal(r: Reader) -> Proposal:
    number = r.u8()
    protocol = _enum(ProtocolId, r.u8())
    spi_size = r.u8()
    count = r.u8()
    allowed = _SPI_SIZES.get(protocol)
    if allowed is not None and spi_size not in allowed:
        raise RemoteProtocolError(f"SA: SPI size {spi_size} invalid for protocol {_show(protocol)}")
    spi = r.bytes(spi_size)
    transforms: list[Transform] = []
    for i in range(count):
        if r.remaining < 8:
            raise RemoteProtocolError("SA: proposal shorter than its transform count says")
        flag = r.u8()
        r.skip(1)
        length = r.u16()
        expected = _LAST_TRANSFORM if i == count - 1 else _MORE_TRANSFORMS
        if flag != expected:
            raise RemoteProtocolError(f"SA: transform 'last' flag {flag}, expected {expected}")
        if length < 8:
            raise RemoteProtocolError(f"SA: transform length {length} < 8")
        transforms.append(_decode_transform(r.sub(length - 4, "SA transform")))
    r.end()
    return Proposal(number, protocol, spi, transforms)


@dataclass
class SaPayload(_Known):
    TYPE: ClassVar[PayloadType] = PayloadType.SA
    proposals: list[Proposal] = field(default_factory=list)

    def encode_body(self) -> bytes:
        n = len(self.proposals)
        return b"".join(_encode_proposal(p, i == n - 1) for i, p in enumerate(self.proposals))

    @classmethod
    def decode_body(cls, body: bytes) -> Self:
        r = Reader(body, "SA")
        proposals: list[Proposal] = []
        while r.remaining:
            flag = r.u8()
            r.skip(1)
            length = r.u16()
            if length < 8:
                raise RemoteProtocolError(f"SA: proposal length {length} < 8")
            proposals.append(_decode_proposal(r.sub(length - 4, "SA proposal")))
            more = r.remaining > 0
            if flag != (_MORE_PROPOSALS if more else _LAST_PROPOSAL):
                raise RemoteProtocolError(f"SA: proposal 'last' flag {flag} inconsistent")
        if not proposals:
            raise RemoteProtocolError("SA: no proposals")
        return cls(proposals)


# --- KE (3.4) ---------------------------------------------------------------------------


@dataclass
class KePayload(_Known):
    TYPE: ClassVar[PayloadType] = PayloadType.KE
    group: int
    data: bytes

    def encode_body(self) -> bytes:
        return struct.pack("!HH", self.group, 0) + self.data

    @classmethod
    def decode_body(cls, body: bytes) -> Self:
        r = Reader(body, "KE")
        group = r.u16()
        r.skip(2)
        data = r.rest()
        if not data:
            raise RemoteProtocolError("KE: empty key exchange data")
        return cls(group, data)


# --- ID (3.5) ---------------------------------------------------------------------------

@dataclass
class IdPayload(_Known):
    """Common body of IDi and IDr; use the subclasses on the wire."""

    id_type: int
    data: bytes

    def encode_body(self) -> bytes:
        return struct.pack("!B3x", self.id_type) + self.data

    @classmethod
    def decode_body(cls, body: bytes) -> Self:
        r = Reader(body, "ID")
        id_type = _enum(IdType, r.u8())
        r.skip(3)
        data = r.rest()
        want = {IdType.IPV4_ADDR: 4, IdType.IPV6_ADDR: 16}.get(id_type)
        if want is not None and len(data) != want:
            raise RemoteProtocolError(f"ID: {_show(id_type)} with {len(data)} bytes")
        if not data:
            raise RemoteProtocolError("ID: empty identification data")
        if id_type == IdType.DER_ASN1_DN:
            try:
                dn_from_der(data)
            except ValueError as e:
                raise RemoteProtocolError("ID: malformed DER_ASN1_DN") from e
        return cls(id_type, data)

    @classmethod
    def from_string(cls, s: str) -> Self:
        """Classify a configured identity the way strongSwan does (raises ValueError)."""
        return cls(*classify_identity(s))

    def dn(self) -> x509.Name | None:
        """The parsed DN of a DER_ASN1_DN identity, else None."""
        if self.id_type != IdType.DER_ASN1_DN:
            return None
        try:
            return dn_from_der(self.data)
        except ValueError:
            return None

    def same_identity(self, other: IdPayload) -> bool:
        """Semantic equality: DNs as identity.same_dn, FQDN/email case-insensitively."""
        if self.id_type != other.id_type:
            return False
        if self.id_type == IdType.DER_ASN1_DN:
            mine, theirs = self.dn(), other.dn()
            return mine is not None and theirs is not None and same_dn(mine, theirs)
        if self.id_type in (IdType.FQDN, IdType.RFC822_ADDR):
            return self.data.lower() == other.data.lower()
        return self.data == other.data

    def __str__(self) -> str:
        t = self.id_type
        if t == IdType.IPV4_ADDR and len(self.data) == 4:
            return str(IPv4Address(self.data))
        if t == IdType.IPV6_ADDR and len(self.data) == 16:
            return str(IPv6Address(self.data))
        if t in (IdType.FQDN, IdType.RFC822_ADDR):
            return self.data.decode("utf-8", "backslashreplace")
        if t == IdType.DER_ASN1_DN:
            name = self.dn()
            if name is not None:
                return dn_to_string(name)
        if t == IdType.KEY_ID:
            return "@#" + self.data.hex()
        return f"{t}:{self.data.hex()}"


@dataclass
class IdiPayload(IdPayload):
    TYPE: ClassVar[PayloadType] = PayloadType.IDi


@dataclass
class IdrPayload(IdPayload):
    TYPE: ClassVar[PayloadType] = PayloadType.IDr


# --- CERT, CERTREQ (3.6, 3.7) -----------------------------------------------------------


@dataclass
class _EncodedData(_Known):
    encoding: int
    data: bytes

    def encode_body(self) -> bytes:
        return struct.pack("!B", self.encoding) + self.data

    @classmethod
    def decode_body(cls, body: bytes) -> Self:
        r = Reader(body, cls.__name__)
        encoding = _enum(CertEncoding, r.u8())
        return cls(encoding, r.rest())


@dataclass
class CertPayload(_EncodedData):
    TYPE: ClassVar[PayloadType] = PayloadType.CERT

    @classmethod
    def decode_body(cls, body: bytes) -> Self:
        p = super().decode_body(body)
        if not p.data:
            raise RemoteProtocolError("CERT: empty certificate data")
        return p


_SHA1_LEN = 20


@dataclass
class CertReqPayload(_EncodedData):
    """Certificate request: data is the SHA-1 hashes of trusted CAs' SubjectPublicKeyInfo."""

    TYPE: ClassVar[PayloadType] = PayloadType.CERTREQ

    @classmethod
    def decode_body(cls, body: bytes) -> Self:
        p = super().decode_body(body)
        if p.encoding == CertEncoding.X509_SIGNATURE and len(p.data) % _SHA1_LEN:
            raise RemoteProtocolError(f"CERTREQ: {len(p.data)} bytes is not a list of SHA-1s")
        return p

    @classmethod
    def for_cas(cls, certs: Iterable[x509.Certificate]) -> Self:
        spki = serialization.PublicFormat.SubjectPublicKeyInfo
        der = serialization.Encoding.DER
        hashes = (hashlib.sha1(c.public_key().public_bytes(der, spki)).digest() for c in certs)
        return cls(CertEncoding.X509_SIGNATURE, b"".join(hashes))

    def hashes(self) -> list[bytes]:
        if self.encoding != CertEncoding.X509_SIGNATURE:
            return []
        return [self.data[i : i + _SHA1_LEN] for i in range(0, len(self.data), _SHA1_LEN)]


# --- AUTH, Nonce, Notify, Delete, Vendor (3.8 - 3.12) -----------------------------------


@dataclass
class AuthPayload(_Known):
    TYPE: ClassVar[PayloadType] = PayloadType.AUTH
    method: int
    data: bytes

    def encode_body(self) -> bytes:
        return struct.pack("!B3x", self.method) + self.data

    @classmethod
    def decode_body(cls, body: bytes) -> Self:
        r = Reader(body, "AUTH")
        method = r.u8()
        r.skip(3)
        data = r.rest()
        if not data:
            raise RemoteProtocolError("AUTH: empty authentication data")
        return cls(_enum(AuthMethod, method), data)


NONCE_MIN, NONCE_MAX = 16, 256


@dataclass
class NoncePayload(_Known):
    TYPE: ClassVar[PayloadType] = PayloadType.NONCE
    data: bytes

    def encode_body(self) -> bytes:
        return self.data

    @classmethod
    def decode_body(cls, body: bytes) -> Self:
        if not NONCE_MIN <= len(body) <= NONCE_MAX:
            raise RemoteProtocolError(f"Nonce: {len(body)} bytes, must be 16..256")
        return cls(bytes(body))


# Fixed notification data sizes we can check without context (as strongSwan does).
_NOTIFY_DATA_LEN: dict[int, tuple[int, ...]] = {
    NotifyType.INVALID_KE_PAYLOAD: (2,),
    NotifyType.NAT_DETECTION_SOURCE_IP: (20,),
    NotifyType.NAT_DETECTION_DESTINATION_IP: (20,),
    NotifyType.ADDITIONAL_IP4_ADDRESS: (4,),
    NotifyType.ADDITIONAL_IP6_ADDRESS: (16,),
    NotifyType.AUTH_LIFETIME: (4,),
}


@dataclass
class NotifyPayload(_Known):
    TYPE: ClassVar[PayloadType] = PayloadType.NOTIFY
    notify_type: int
    data: bytes = b""
    protocol: int = 0
    spi: bytes = b""

    @property
    def is_error(self) -> bool:
        return self.notify_type < 16384

    def encode_body(self) -> bytes:
        if len(self.spi) > 255:
            raise LocalProtocolError("N: SPI too long")
        head = struct.pack("!BBH", self.protocol, len(self.spi), self.notify_type)
        return head + self.spi + self.data

    @classmethod
    def decode_body(cls, body: bytes) -> Self:
        r = Reader(body, "N")
        protocol = _enum(ProtocolId, r.u8())
        spi_size = r.u8()
        ntype = _enum(NotifyType, r.u16())
        spi = r.bytes(spi_size)
        data = r.rest()
        sizes = _NOTIFY_DATA_LEN.get(ntype)
        if sizes is not None and len(data) not in sizes:
            raise RemoteProtocolError(f"N({_show(ntype)}): {len(data)} data bytes")
        if ntype == NotifyType.COOKIE and not 1 <= len(data) <= 64:
            raise RemoteProtocolError(f"N(COOKIE): {len(data)} bytes, must be 1..64")
        return cls(ntype, data, protocol, spi)


@dataclass
class DeletePayload(_Known):
    TYPE: ClassVar[PayloadType] = PayloadType.DELETE
    protocol: int
    spis: list[bytes] = field(default_factory=list)

    def encode_body(self) -> bytes:
        size = len(self.spis[0]) if self.spis else 0
        if any(len(s) != size for s in self.spis) or size > 255 or len(self.spis) > 0xFFFF:
            raise LocalProtocolError("D: SPIs must all have the same size")
        return struct.pack("!BBH", self.protocol, size, len(self.spis)) + b"".join(self.spis)

    @classmethod
    def decode_body(cls, body: bytes) -> Self:
        r = Reader(body, "D")
        protocol = _enum(ProtocolId, r.u8())
        size = r.u8()
        count = r.u16()
        expected = {ProtocolId.IKE: 0, ProtocolId.AH: 4, ProtocolId.ESP: 4}.get(protocol)
        if expected is None:
            raise RemoteProtocolError(f"D: unknown protocol {protocol}")
        if size != expected:
            raise RemoteProtocolError(f"D: SPI size {size} invalid for {_show(protocol)}")
        if protocol == ProtocolId.IKE and count:
            raise RemoteProtocolError("D: IKE SA deletion carries no SPIs")
        spis = [r.bytes(size) for _ in range(count)]
        r.end()
        return cls(protocol, spis)


@dataclass
class VendorPayload(_Known):
    TYPE: ClassVar[PayloadType] = PayloadType.VENDOR
    data: bytes

    def encode_body(self) -> bytes:
        return self.data

    @classmethod
    def decode_body(cls, body: bytes) -> Self:
        return cls(bytes(body))


# --- TSi, TSr (3.13) --------------------------------------------------------------------

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network
_TS_LEN = {TsType.IPV4_ADDR_RANGE: (16, 4), TsType.IPV6_ADDR_RANGE: (40, 16)}
_PROTO_NAMES = {1: "icmp", 6: "tcp", 17: "udp", 58: "ipv6-icmp"}


@dataclass(frozen=True)
class TrafficSelector:
    ts_type: int
    ip_protocol: int
    start_port: int
    end_port: int
    start_addr: IPAddress
    end_addr: IPAddress

    @classmethod
    def from_network(cls, net: IPNetwork | str, protocol: int = 0) -> TrafficSelector:
        net = ipaddress.ip_network(net)
        ts_type = TsType.IPV4_ADDR_RANGE if net.version == 4 else TsType.IPV6_ADDR_RANGE
        return cls(ts_type, protocol, 0, 0xFFFF, net.network_address, net.broadcast_address)

    @classmethod
    def any_ipv4(cls) -> TrafficSelector:
        return cls.from_network(IPv4Network("0.0.0.0/0"))

    @classmethod
    def any_ipv6(cls) -> TrafficSelector:
        return cls.from_network(IPv6Network("::/0"))

    def to_networks(self) -> list[IPNetwork]:
        return list(ipaddress.summarize_address_range(self.start_addr, self.end_addr))

    def encode(self) -> bytes:
        length = 16 if self.ts_type == TsType.IPV4_ADDR_RANGE else 40
        head = struct.pack("!BBHHH", self.ts_type, self.ip_protocol, length,
                           self.start_port, self.end_port)
        return head + self.start_addr.packed + self.end_addr.packed

    @classmethod
    def decode(cls, r: Reader) -> TrafficSelector:
        ts_type = _enum(TsType, r.u8())
        proto = r.u8()
        length = r.u16()
        sizes = _TS_LEN.get(ts_type)
        if sizes is None:
            raise RemoteProtocolError(f"TS: unsupported selector type {ts_type}")
        if length != sizes[0]:
            raise RemoteProtocolError(f"TS: {_show(ts_type)} with selector length {length}")
        start_port, end_port = r.u16(), r.u16()
        addr = IPv4Address if ts_type == TsType.IPV4_ADDR_RANGE else IPv6Address
        start, end = addr(r.bytes(sizes[1])), addr(r.bytes(sizes[1]))
        if start > end:
            raise RemoteProtocolError(f"TS: start address {start} above end address {end}")
        return cls(ts_type, proto, start_port, end_port, start, end)

    def __str__(self) -> str:
        nets = self.to_networks()
        where = str(nets[0]) if len(nets) == 1 else f"{self.start_addr}..{self.end_addr}"
        if self.ip_protocol == 0 and (self.start_port, self.end_port) == (0, 0xFFFF):
            return where
        proto = _PROTO_NAMES.get(self.ip_protocol, str(self.ip_protocol))
        if (self.start_port, self.end_port) == (0, 0xFFFF):
            return f"{where}[{proto}]"
        ports = (str(self.start_port) if self.start_port == self.end_port
                 else f"{self.start_port}-{self.end_port}")
        return f"{where}[{proto}/{ports}]"


@dataclass
class _TsPayload(_Known):
    selectors: list[TrafficSelector] = field(default_factory=list)

    def encode_body(self) -> bytes:
        if len(self.selectors) > 255:
            raise LocalProtocolError("TS: more than 255 selectors")
        return struct.pack("!B3x", len(self.selectors)) + b"".join(
            ts.encode() for ts in self.selectors
        )

    @classmethod
    def decode_body(cls, body: bytes) -> Self:
        r = Reader(body, "TS")
        count = r.u8()
        r.skip(3)
        if count == 0:
            raise RemoteProtocolError("TS: no traffic selectors")
        selectors = [TrafficSelector.decode(r) for _ in range(count)]
        r.end()
        return cls(selectors)


@dataclass
class TsiPayload(_TsPayload):
    TYPE: ClassVar[PayloadType] = PayloadType.TSi


@dataclass
class TsrPayload(_TsPayload):
    TYPE: ClassVar[PayloadType] = PayloadType.TSr


# --- CP (3.15) --------------------------------------------------------------------------

# RFC 7296 3.15.1 (and RFC 8598 for DNS domains): allowed value lengths; None: any.
_CP_LENGTHS: dict[int, tuple[int, ...] | None] = {
    CfgAttr.INTERNAL_IP4_ADDRESS: (0, 4),
    CfgAttr.INTERNAL_IP4_NETMASK: (0, 4),
    CfgAttr.INTERNAL_IP4_DNS: (0, 4),
    CfgAttr.INTERNAL_IP4_NBNS: (0, 4),
    CfgAttr.INTERNAL_IP4_DHCP: (0, 4),
    CfgAttr.APPLICATION_VERSION: None,
    CfgAttr.INTERNAL_IP6_ADDRESS: (0, 17),
    CfgAttr.INTERNAL_IP6_DNS: (0, 16),
    CfgAttr.INTERNAL_IP6_DHCP: (0, 16),
    CfgAttr.INTERNAL_IP4_SUBNET: (0, 8),
    CfgAttr.INTERNAL_IP6_SUBNET: (0, 17),
    CfgAttr.INTERNAL_DNS_DOMAIN: None,
}
_DOMAIN_RE = re.compile(rb"^(?=.{1,253}\.?\Z)[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?\.?\Z")


def _check_cp_attr(atype: int, value: bytes) -> None:
    lengths = _CP_LENGTHS.get(atype)
    if lengths is not None and len(value) not in lengths:
        raise RemoteProtocolError(f"CP: attribute {_show(atype)} with {len(value)} bytes")
    if atype == CfgAttr.SUPPORTED_ATTRIBUTES and len(value) % 2:
        raise RemoteProtocolError("CP: SUPPORTED_ATTRIBUTES of odd length")
    if atype in (CfgAttr.INTERNAL_IP6_ADDRESS, CfgAttr.INTERNAL_IP6_SUBNET) and value:
        if value[16] > 128:
            raise RemoteProtocolError(f"CP: IPv6 prefix length {value[16]}")
    if atype == CfgAttr.INTERNAL_IP4_SUBNET and value:
        try:
            IPv4Network((IPv4Address(value[:4]), str(IPv4Address(value[4:]))), strict=False)
        except ValueError:
            raise RemoteProtocolError("CP: INTERNAL_IP4_SUBNET with invalid netmask") from None
    if atype == CfgAttr.INTERNAL_DNS_DOMAIN and value and not _DOMAIN_RE.match(value):
        raise RemoteProtocolError("CP: INTERNAL_DNS_DOMAIN is not a domain name")


@dataclass
class CpPayload(_Known):
    TYPE: ClassVar[PayloadType] = PayloadType.CP
    cfg_type: int
    attributes: list[tuple[int, bytes]] = field(default_factory=list)

    def encode_body(self) -> bytes:
        out = [struct.pack("!B3x", self.cfg_type)]
        for atype, value in self.attributes:
            if len(value) > 0xFFFF or not 0 <= atype <= 0x7FFF:
                raise LocalProtocolError(f"CP: attribute {atype} cannot be encoded")
            out.append(struct.pack("!HH", atype, len(value)) + value)
        return b"".join(out)

    @classmethod
    def decode_body(cls, body: bytes) -> Self:
        r = Reader(body, "CP")
        cfg_type = _enum(CfgType, r.u8())
        r.skip(3)
        attributes: list[tuple[int, bytes]] = []
        while r.remaining:
            atype = _enum(CfgAttr, r.u16() & 0x7FFF)  # the R bit is ignored on receipt
            value = r.bytes(r.u16())
            _check_cp_attr(atype, value)
            attributes.append((atype, value))
        return cls(cfg_type, attributes)

    @classmethod
    def request_addresses(cls, ipv4: bool = True, ipv6: bool = True, dns: bool = True) -> Self:
        wanted: list[int] = []
        if ipv4:
            wanted += [CfgAttr.INTERNAL_IP4_ADDRESS] + ([CfgAttr.INTERNAL_IP4_DNS] if dns else [])
        if ipv6:
            wanted += [CfgAttr.INTERNAL_IP6_ADDRESS] + ([CfgAttr.INTERNAL_IP6_DNS] if dns else [])
        if dns:
            wanted.append(CfgAttr.INTERNAL_DNS_DOMAIN)
        return cls(CfgType.CFG_REQUEST, [(a, b"") for a in wanted])

    def _values(self, *types: int) -> list[tuple[int, bytes]]:
        return [(t, v) for t, v in self.attributes if t in types and v]

    def addresses(self) -> list[IPv4Interface | IPv6Interface]:
        """Assigned virtual IPs; IPv4 as /32 (the netmask is meaningless for a tunnel)."""
        out: list[IPv4Interface | IPv6Interface] = []
        for t, v in self._values(CfgAttr.INTERNAL_IP4_ADDRESS, CfgAttr.INTERNAL_IP6_ADDRESS):
            if t == CfgAttr.INTERNAL_IP4_ADDRESS:
                out.append(IPv4Interface((IPv4Address(v), 32)))
            else:
                out.append(IPv6Interface((IPv6Address(v[:16]), v[16])))
        return out

    def dns_servers(self) -> list[IPAddress]:
        out: list[IPAddress] = []
        for t, v in self._values(CfgAttr.INTERNAL_IP4_DNS, CfgAttr.INTERNAL_IP6_DNS):
            out.append(IPv4Address(v) if t == CfgAttr.INTERNAL_IP4_DNS else IPv6Address(v))
        return out

    def dns_domains(self) -> list[str]:
        return [v.decode("ascii").rstrip(".") for _, v in self._values(CfgAttr.INTERNAL_DNS_DOMAIN)]

    def subnets(self) -> list[IPNetwork]:
        out: list[IPNetwork] = []
        for t, v in self._values(CfgAttr.INTERNAL_IP4_SUBNET, CfgAttr.INTERNAL_IP6_SUBNET):
            if t == CfgAttr.INTERNAL_IP4_SUBNET:
                mask = str(IPv4Address(v[4:]))
                out.append(IPv4Network((IPv4Address(v[:4]), mask), strict=False))
            else:
                out.append(IPv6Network((IPv6Address(v[:16]), v[16]), strict=False))
        return out


# --- EAP (3.16) -------------------------------------------------------------------------


@dataclass
class EapPayload(_Known):
    """The raw EAP packet (RFC 3748 section 4); code/identifier/type are read from it."""

    TYPE: ClassVar[PayloadType] = PayloadType.EAP
    data: bytes

    def encode_body(self) -> bytes:
        return self.data

    @classmethod
    def decode_body(cls, body: bytes) -> Self:
        r = Reader(body, "EAP")
        code = r.u8()
        r.skip(1)
        length = r.u16()
        if length != len(body):
            raise RemoteProtocolError(f"EAP: length field {length}, payload has {len(body)}")
        if code in (EapCode.REQUEST, EapCode.RESPONSE):
            if length < 5:
                raise RemoteProtocolError("EAP: request/response without a type")
        elif code in (EapCode.SUCCESS, EapCode.FAILURE):
            if length != 4:
                raise RemoteProtocolError("EAP: success/failure with data")
        else:
            raise RemoteProtocolError(f"EAP: unknown code {code}")
        return cls(bytes(body))

    @property
    def code(self) -> int:
        return _enum(EapCode, self.data[0]) if self.data else 0

    @property
    def identifier(self) -> int:
        return self.data[1] if len(self.data) > 1 else 0

    @property
    def eap_type(self) -> int | None:
        """The method type of a request/response, None for success/failure."""
        return _enum(EapType, self.data[4]) if len(self.data) > 4 else None


# --- Unknown and SK -------------------------------------------------------------------


@dataclass
class UnknownPayload(Payload):
    """A non-critical payload type we do not understand; kept so it can be logged."""

    TYPE: ClassVar[PayloadType] = PayloadType.NONE
    ptype: int
    body: bytes
    critical: bool = False

    def wire_type(self) -> int:
        return self.ptype

    def encode_body(self) -> bytes:
        return self.body


@dataclass
class SkPayload(Payload):
    """Encrypted and authenticated payload (3.14), opaque here: IV || ciphertext || ICV.

    `inner_first` is the SK header's Next Payload field: the type of the first inner payload.
    """

    TYPE: ClassVar[PayloadType] = PayloadType.SK
    body: bytes
    inner_first: int
    critical: bool = False

    def encode_body(self) -> bytes:
        return self.body


PAYLOAD_CLASSES: dict[int, type[Payload]] = {
    cls.TYPE: cls
    for cls in (
        SaPayload, KePayload, IdiPayload, IdrPayload, CertPayload, CertReqPayload,
        AuthPayload, NoncePayload, NotifyPayload, DeletePayload, VendorPayload,
        TsiPayload, TsrPayload, CpPayload, EapPayload,
    )
}

def decode_chain(first_type: int, data: bytes) -> list[Payload]:
    """Walk generic payload headers from `first_type`; an SK payload must come last."""
    r = Reader(data, "payload chain")
    out: list[Payload] = []
    ptype = first_type
    while ptype != PayloadType.NONE:
        if r.remaining < 4:
            raise RemoteProtocolError(f"payload chain: truncated header of payload type {ptype}")
        next_type = r.u8()
        critical = bool(r.u8() & 0x80)  # the other 7 bits are reserved: ignored
        length = r.u16()
        if length < 4:
            raise RemoteProtocolError(f"payload {ptype}: length {length} < 4")
        if length - 4 > r.remaining:
            raise RemoteProtocolError(f"payload {ptype}: length {length} runs past the message")
        body = r.bytes(length - 4)
        if ptype == PayloadType.SK:
            if r.remaining:
                raise RemoteProtocolError("SK payload is not the last payload")
            out.append(SkPayload(body, next_type, critical))
            return out
        if ptype == PayloadType.SKF:
            # RFC 7383: a fragment's SKF is its only payload; message.decode_fragment reads
            # it before any chain is walked, so an SKF here follows other payloads.
            raise RemoteProtocolError("SKF payload after other payloads")
        cls = PAYLOAD_CLASSES.get(ptype)
        if cls is None:
            if critical:
                err = RemoteProtocolError(
                    f"UNSUPPORTED_CRITICAL_PAYLOAD: payload type {ptype} marked critical"
                )
                err.unsupported_critical = ptype
                raise err
            out.append(UnknownPayload(ptype, body, critical))
        else:
            payload = cls.decode_body(body)
            payload.critical = critical
            out.append(payload)
        ptype = next_type
    if r.remaining:
        raise RemoteProtocolError(f"payload chain: {r.remaining} bytes after the last payload")
    return out


def encode_chain(payloads: list[Payload]) -> tuple[int, bytes]:
    """Encode payloads with their generic headers; returns (first payload type, bytes)."""
    out: list[bytes] = []
    for i, p in enumerate(payloads):
        if isinstance(p, SkPayload):
            if i != len(payloads) - 1:
                raise LocalProtocolError("SK payload must be the last payload")
            next_type = p.inner_first
        else:
            next_type = payloads[i + 1].wire_type() if i + 1 < len(payloads) else 0
        body = p.encode_body()
        if len(body) + 4 > 0xFFFF:
            raise LocalProtocolError(f"payload {p.wire_type()} too long ({len(body)} bytes)")
        out.append(struct.pack("!BBH", next_type, 0x80 if p.critical else 0, len(body) + 4))
        out.append(body)
    first = payloads[0].wire_type() if payloads else PayloadType.NONE
    return first, b"".join(out)
