"""Payload codec (RFC 7296 section 3): round trips, wire layouts, strict rejection."""

import datetime
import hashlib
import random
from ipaddress import ip_address, ip_interface, ip_network

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from client.ikev2.buffer import Reader
from client.ikev2.constants import (
    AuthMethod,
    CertEncoding,
    CfgAttr,
    CfgType,
    EapCode,
    EapType,
    EncrId,
    IdType,
    NotifyType,
    PayloadType,
    ProtocolId,
    TransformType,
    TsType,
)
from client.ikev2.errors import RemoteProtocolError
from client.ikev2.payloads import (
    PAYLOAD_CLASSES,
    AuthPayload,
    CertPayload,
    CertReqPayload,
    CpPayload,
    DeletePayload,
    EapPayload,
    IdiPayload,
    IdPayload,
    IdrPayload,
    KePayload,
    NoncePayload,
    NotifyPayload,
    SaPayload,
    SkPayload,
    TrafficSelector,
    TsiPayload,
    TsrPayload,
    UnknownPayload,
    VendorPayload,
    decode_chain,
    encode_chain,
)
from client.ikev2.proposals import Proposal, Transform

IKE_PROPOSAL = Proposal(1, ProtocolId.IKE, b"", [
    Transform(TransformType.ENCR, EncrId.AES_CBC, 256),
    Transform(TransformType.INTEG, 12),
    Transform(TransformType.PRF, 5),
    Transform(TransformType.DH, 31),
])
ESP_PROPOSAL = Proposal(2, ProtocolId.ESP, b"\xc0\x01\x02\x03", [
    Transform(TransformType.ENCR, EncrId.AES_GCM_16, 128),
    Transform(TransformType.ESN, 0),
])


def cp_reply() -> CpPayload:
    return CpPayload(CfgType.CFG_REPLY, [
        (CfgAttr.INTERNAL_IP4_ADDRESS, bytes([198, 18, 0, 7])),
        (CfgAttr.INTERNAL_IP4_DNS, bytes([198, 18, 0, 1])),
        (CfgAttr.INTERNAL_IP6_ADDRESS, ip_address("2001:db8::7").packed + bytes([64])),
        (CfgAttr.INTERNAL_IP6_DNS, ip_address("2001:db8::53").packed),
        (CfgAttr.INTERNAL_IP4_SUBNET, bytes([198, 18, 4, 0, 255, 255, 252, 0])),
        (CfgAttr.INTERNAL_IP6_SUBNET, ip_address("2001:db8:1::").packed + bytes([48])),
        (CfgAttr.INTERNAL_DNS_DOMAIN, b"corp.example."),
        (CfgAttr.APPLICATION_VERSION, b"strongSwan 5.9.8"),
    ])


ALL_PAYLOADS = [
    SaPayload([IKE_PROPOSAL]),
    SaPayload([Proposal(1, ProtocolId.ESP, b"\x01\x02\x03\x04", ESP_PROPOSAL.transforms),
               ESP_PROPOSAL]),
    KePayload(31, bytes(range(32))),
    IdiPayload(IdType.RFC822_ADDR, b"carol@example.org"),
    IdrPayload(IdType.IPV4_ADDR, bytes([192, 0, 2, 1]), critical=True),
    CertPayload(CertEncoding.X509_SIGNATURE, b"\x30\x03\x02\x01\x00"),
    CertReqPayload(CertEncoding.X509_SIGNATURE, bytes(40)),
    CertReqPayload(CertEncoding.X509_SIGNATURE, b""),
    AuthPayload(AuthMethod.PSK, b"\xaa" * 32),
    NoncePayload(b"\x5a" * 32),
    NotifyPayload(NotifyType.NAT_DETECTION_SOURCE_IP, b"\x01" * 20),
    NotifyPayload(NotifyType.REKEY_SA, protocol=ProtocolId.ESP, spi=b"\x01\x02\x03\x04"),
    NotifyPayload(40000, b"unknown status"),
    DeletePayload(ProtocolId.IKE, []),
    DeletePayload(ProtocolId.ESP, [b"\x00\x00\x10\x00", b"\x00\x00\x20\x00"]),
    VendorPayload(b"\x88\x2f\xe5\x6d\x6f\xd2\x0d\xbc\x22\x86\x61\x2e\x7f\x24\x38\x42"),
    TsiPayload([TrafficSelector.from_network(ip_network("198.18.0.7/32")),
                TrafficSelector.from_network(ip_network("2001:db8::7/128"), protocol=17)]),
    TsrPayload([TrafficSelector.any_ipv4(), TrafficSelector.any_ipv6()]),
    CpPayload.request_addresses(),
    cp_reply(),
    EapPayload(bytes([EapCode.REQUEST, 7, 0, 10, EapType.IDENTITY]) + b"hello"),
    EapPayload(bytes([EapCode.SUCCESS, 8, 0, 4])),
    UnknownPayload(200, b"opaque", False),
]


@pytest.mark.parametrize("payload", ALL_PAYLOADS, ids=lambda p: type(p).__name__)
def test_round_trip_single(payload):
    first, data = encode_chain([payload])
    assert first == payload.wire_type()
    assert decode_chain(first, data) == [payload]
    if not isinstance(payload, UnknownPayload):
        # The critical flag lives in the generic header, so compare bodies here.
        body = payload.encode_body()
        assert type(payload).decode_body(body).encode_body() == body


def test_round_trip_chain_of_everything():
    first, data = encode_chain(ALL_PAYLOADS)
    assert decode_chain(first, data) == ALL_PAYLOADS


def test_registry_covers_every_known_payload():
    assert set(PAYLOAD_CLASSES) == {int(t) for t in PayloadType} - {0, 46, 53}


def test_generic_header_layout_and_critical_bit():
    first, data = encode_chain([NoncePayload(b"\x01" * 16, critical=True), VendorPayload(b"x")])
    assert first == PayloadType.NONCE
    assert data == bytes.fromhex("2b800014") + b"\x01" * 16 + bytes.fromhex("00000005") + b"x"


# --- Reader ------------------------------------------------------------------------------

def test_reader_bounds():
    r = Reader(b"\x01\x02\x03", "thing")
    assert r.u16() == 0x0102
    with pytest.raises(RemoteProtocolError, match="thing: truncated"):
        r.u16()
    assert r.u8() == 3 and r.remaining == 0
    with pytest.raises(RemoteProtocolError):
        Reader(b"", "x").bytes(1)
    r = Reader(b"\x00" * 9, "x")
    assert r.u64() == 0
    with pytest.raises(RemoteProtocolError, match="trailing"):
        r.end()


# --- SA -----------------------------------------------------------------------------------

SA_BODY = bytes.fromhex(
    "0000002c 01010004"            # last proposal, length 44, #1, IKE, SPI size 0, 4 transforms
    "0300000c 0100000c 800e0100"   # ENCR AES_CBC, KEY_LENGTH 256 (TV)
    "03000008 0300000c"            # INTEG HMAC_SHA2_256_128
    "03000008 02000005"            # PRF HMAC_SHA2_256
    "00000008 0400001f"            # last transform: DH curve25519
)


def test_sa_wire_layout():
    assert SaPayload([IKE_PROPOSAL]).encode_body() == SA_BODY
    (proposal,) = SaPayload.decode_body(SA_BODY).proposals
    assert proposal == IKE_PROPOSAL
    assert proposal.protocol is ProtocolId.IKE
    assert proposal.transforms[0].type is TransformType.ENCR


def test_sa_multiple_proposals_last_flags():
    body = SaPayload([IKE_PROPOSAL, IKE_PROPOSAL]).encode_body()
    assert body[0] == 2 and body[len(SA_BODY)] == 0
    # Swap the flags: the first says "last" although another follows.
    bad = bytearray(body)
    bad[0], bad[len(SA_BODY)] = 0, 2
    with pytest.raises(RemoteProtocolError, match="last"):
        SaPayload.decode_body(bytes(bad))


def _patched(data: bytes, offset: int, value: bytes) -> bytes:
    return data[:offset] + value + data[offset + len(value):]


@pytest.mark.parametrize("bad", [
    b"",                                              # no proposals
    SA_BODY[:-1],                                     # truncated
    _patched(SA_BODY, 2, b"\x00\x07"),                # proposal length < 8
    _patched(SA_BODY, 2, b"\x00\x2d"),                # proposal length past the end
    _patched(SA_BODY, 2, b"\x00\x24"),                # proposal length cuts a transform
    _patched(SA_BODY, 7, b"\x05"),                    # more transforms than present
    _patched(SA_BODY, 7, b"\x03"),                    # fewer transforms than present
    _patched(SA_BODY, 10, b"\x00\x07"),               # transform length < 8
    _patched(SA_BODY, 10, b"\x00\x10"),               # transform length past its neighbours
    _patched(SA_BODY, 8, b"\x00"),                    # transform 'last' flag too early
    _patched(SA_BODY, 36, b"\x03"),                   # last transform not marked last
    _patched(SA_BODY, 6, b"\x04"),                    # IKE SPI size 4
    bytes.fromhex("00000014 01010001 0000000c 01000014 000e0000"),  # KEY_LENGTH as TLV
    _patched(SA_BODY, 16, b"\x80\x0f"),               # unknown attribute
    SA_BODY + b"\x00",                                # trailing byte
])
def test_sa_malformed(bad):
    with pytest.raises(RemoteProtocolError):
        SaPayload.decode_body(bad)


def test_sa_esp_spi_size_enforced():
    body = SaPayload([ESP_PROPOSAL]).encode_body()
    assert body[6] == 4
    with pytest.raises(RemoteProtocolError, match="SPI size"):
        SaPayload.decode_body(SaPayload([Proposal(1, ProtocolId.ESP, b"\x01\x02",
                                                  ESP_PROPOSAL.transforms)]).encode_body())


def test_sa_unknown_transform_type_is_kept():
    body = _patched(SA_BODY, 32, b"\x09")  # the PRF transform becomes type 9
    (proposal,) = SaPayload.decode_body(body).proposals
    assert proposal.transforms[2] == Transform(9, 5)


# --- KE, AUTH, Nonce -------------------------------------------------------------------

def test_ke_layout_and_errors():
    assert KePayload(19, b"\x04" * 64).encode_body() == bytes.fromhex("00130000") + b"\x04" * 64
    for bad in (b"", b"\x00\x13\x00", b"\x00\x13\x00\x00"):
        with pytest.raises(RemoteProtocolError):
            KePayload.decode_body(bad)


def test_auth_layout_and_errors():
    assert AuthPayload(2, b"\x01").encode_body() == bytes.fromhex("0200000001")
    auth = AuthPayload.decode_body(bytes.fromhex("0e00000001"))
    assert auth.method is AuthMethod.DIGITAL_SIGNATURE
    with pytest.raises(RemoteProtocolError):
        AuthPayload.decode_body(bytes.fromhex("02000000"))


@pytest.mark.parametrize("size,ok", [(15, False), (16, True), (256, True), (257, False)])
def test_nonce_length_bounds(size, ok):
    if ok:
        assert NoncePayload.decode_body(bytes(size)).data == bytes(size)
    else:
        with pytest.raises(RemoteProtocolError, match="Nonce"):
            NoncePayload.decode_body(bytes(size))


# --- ID -----------------------------------------------------------------------------------

@pytest.mark.parametrize("text,id_type,data", [
    ("192.0.2.1", IdType.IPV4_ADDR, bytes([192, 0, 2, 1])),
    ("2001:db8::1", IdType.IPV6_ADDR, bytes.fromhex("20010db8" + "00" * 11 + "01")),
    ("carol@example.org", IdType.RFC822_ADDR, b"carol@example.org"),
    ("@vpn.example.org", IdType.FQDN, b"vpn.example.org"),
    ("vpn.example.org", IdType.FQDN, b"vpn.example.org"),
    ("@#0a0b", IdType.KEY_ID, b"\x0a\x0b"),
    ("fqdn:192.0.2.1", IdType.FQDN, b"192.0.2.1"),
])
def test_id_from_string(text, id_type, data):
    ident = IdiPayload.from_string(text)
    assert isinstance(ident, IdiPayload)
    assert (ident.id_type, ident.data) == (id_type, data)


def test_id_dn_in_certificate_order():
    ident = IdrPayload.from_string("C=CH, O=strongSwan, CN=vpn@example.org")
    assert isinstance(ident, IdrPayload) and ident.id_type == IdType.DER_ASN1_DN
    expected = x509.Name([
        x509.NameAttribute(NameOID.COUNTRY_NAME, "CH"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "strongSwan"),
        x509.NameAttribute(NameOID.COMMON_NAME, "vpn@example.org"),
    ])
    assert ident.data == expected.public_bytes()
    assert str(ident) == "C=CH, O=strongSwan, CN=vpn@example.org"
    assert IdrPayload.decode_body(ident.encode_body()) == ident
    assert IdPayload.from_string("CN=carol").data == x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, "carol")]).public_bytes()


def test_id_dn_matches_semantically():
    printable = x509.Name([x509.NameAttribute(
        NameOID.COMMON_NAME, "moon", x509.name._ASN1Type.PrintableString)]).public_bytes()
    from_cert = IdrPayload(IdType.DER_ASN1_DN, printable)
    configured = IdrPayload.from_string("CN=moon")
    assert from_cert.data != configured.data
    assert from_cert.same_identity(configured)
    assert not from_cert.same_identity(IdrPayload.from_string("CN=sun"))
    assert IdrPayload.from_string("VPN.example.org").same_identity(
        IdrPayload.from_string("vpn.example.org"))


@pytest.mark.parametrize("text", ["192.0.2.1", "2001:db8::1", "carol@example.org",
                                  "vpn.example.org", "C=CH, O=strongSwan, CN=moon"])
def test_id_str_round_trip(text):
    assert str(IdiPayload.from_string(text)) == text


def test_id_from_string_rejects_bad_dn():
    with pytest.raises(ValueError):
        IdPayload.from_string("CN=a, ==broken")


@pytest.mark.parametrize("body", [
    bytes.fromhex("01000000c00002"),          # IPv4 of 3 bytes
    bytes.fromhex("05000000") + bytes(4),     # IPv6 of 4 bytes
    bytes.fromhex("02000000"),                # empty FQDN
    bytes.fromhex("090000003003020100"),      # DN that is not a Name
    bytes.fromhex("09000000300a"),            # DN truncated
    bytes.fromhex("09000000 300c310a30080603550403 1d0141"),  # value with an unknown tag
    bytes.fromhex("010000"),                  # header truncated
])
def test_id_malformed(body):
    with pytest.raises(RemoteProtocolError):
        IdiPayload.decode_body(body)


# --- CERT, CERTREQ ----------------------------------------------------------------------

def _ca(name: str) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(1).not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=1))
            .sign(key, hashes.SHA256()))


def test_certreq_for_cas_hashes_spki():
    cas = [_ca("Root A"), _ca("Root B")]
    req = CertReqPayload.for_cas(cas)
    assert req.encoding == CertEncoding.X509_SIGNATURE
    spki = [c.public_key().public_bytes(serialization.Encoding.DER,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
            for c in cas]
    assert req.hashes() == [hashlib.sha1(s).digest() for s in spki]
    # The SPKI DER is embedded verbatim in the certificate's TBS part.
    assert all(s in c.tbs_certificate_bytes for s, c in zip(spki, cas, strict=True))


def test_certreq_and_cert_malformed():
    with pytest.raises(RemoteProtocolError, match="SHA-1"):
        CertReqPayload.decode_body(b"\x04" + bytes(21))
    with pytest.raises(RemoteProtocolError):
        CertReqPayload.decode_body(b"")
    with pytest.raises(RemoteProtocolError):
        CertPayload.decode_body(b"\x04")


# --- Notify, Delete -----------------------------------------------------------------------

def test_notify_wire_order():
    n = NotifyPayload(NotifyType.REKEY_SA, b"", ProtocolId.ESP, b"\x0a\x0b\x0c\x0d")
    assert n.encode_body() == bytes.fromhex("03044009 0a0b0c0d")
    n = NotifyPayload.decode_body(bytes.fromhex("00004004") + bytes(20))
    assert n.notify_type is NotifyType.NAT_DETECTION_SOURCE_IP and n.protocol == 0
    assert not n.is_error and NotifyPayload(NotifyType.NO_PROPOSAL_CHOSEN).is_error


@pytest.mark.parametrize("body", [
    bytes.fromhex("000040040000"),              # NATD with 2 bytes
    bytes.fromhex("00000011") + b"\x00",        # INVALID_KE with 1 byte
    bytes.fromhex("00004006"),                  # empty COOKIE
    bytes.fromhex("03044009 0a0b0c"),           # SPI truncated
    bytes.fromhex("000040"),                    # header truncated
])
def test_notify_malformed(body):
    with pytest.raises(RemoteProtocolError):
        NotifyPayload.decode_body(body)


@pytest.mark.parametrize("body", [
    bytes.fromhex("01040001 00000001"),      # IKE with 4-byte SPI
    bytes.fromhex("01000001"),               # IKE with a count
    bytes.fromhex("03040002 00000001"),      # ESP: 2 SPIs announced, 1 present
    bytes.fromhex("03040001 00000001 00"),   # trailing byte
    bytes.fromhex("03080001") + bytes(8),    # ESP with 8-byte SPI
    bytes.fromhex("07000000"),               # unknown protocol
])
def test_delete_malformed(body):
    with pytest.raises(RemoteProtocolError):
        DeletePayload.decode_body(body)


# --- TS -----------------------------------------------------------------------------------

def test_ts_wire_layout():
    ts = TrafficSelector.from_network(ip_network("198.18.0.0/16"), protocol=6)
    assert ts.encode() == bytes.fromhex("07060010 0000ffff c6120000 c612ffff")
    assert TsiPayload([ts]).encode_body()[:4] == b"\x01\x00\x00\x00"
    assert str(ts) == "198.18.0.0/16[tcp]"


def test_ts_networks():
    ts = TrafficSelector(TsType.IPV4_ADDR_RANGE, 0, 0, 0xFFFF,
                         ip_address("198.18.0.1"), ip_address("198.18.0.6"))
    assert ts.to_networks() == [ip_network("198.18.0.1/32"), ip_network("198.18.0.2/31"),
                                ip_network("198.18.0.4/31"), ip_network("198.18.0.6/32")]
    assert TrafficSelector.any_ipv4().to_networks() == [ip_network("0.0.0.0/0")]
    assert TrafficSelector.any_ipv6().to_networks() == [ip_network("::/0")]
    assert TrafficSelector.any_ipv6().ts_type == TsType.IPV6_ADDR_RANGE
    assert str(ts) == "198.18.0.1..198.18.0.6"


V4_TS = bytes.fromhex("07000010 0000ffff c6120000 c612ffff")


@pytest.mark.parametrize("body", [
    bytes.fromhex("00000000"),                                  # no selectors
    bytes.fromhex("02000000") + V4_TS,                          # 2 announced, 1 present
    bytes.fromhex("01000000") + V4_TS + b"\x00",                # trailing byte
    bytes.fromhex("01000000") + _patched(V4_TS, 2, b"\x00\x28"),  # IPv4 with length 40
    bytes.fromhex("01000000") + _patched(V4_TS, 0, b"\x08"),    # IPv6 type, IPv4 length
    bytes.fromhex("01000000") + _patched(V4_TS, 0, b"\x0a"),    # unknown TS type
    bytes.fromhex("01000000") + _patched(V4_TS, 8, b"\xc7"),    # start above end
    bytes.fromhex("01000000") + V4_TS[:-1],                     # truncated
])
def test_ts_malformed(body):
    with pytest.raises(RemoteProtocolError):
        TsrPayload.decode_body(body)


# --- CP -----------------------------------------------------------------------------------

def test_cp_request_layout():
    body = CpPayload.request_addresses(ipv6=False).encode_body()
    assert body == bytes.fromhex("01000000 00010000 00030000 00190000")
    assert [a for a, _ in CpPayload.request_addresses(dns=False).attributes] == [
        CfgAttr.INTERNAL_IP4_ADDRESS, CfgAttr.INTERNAL_IP6_ADDRESS]


def test_cp_reply_helpers():
    cp = CpPayload.decode_body(cp_reply().encode_body())
    assert cp.cfg_type is CfgType.CFG_REPLY
    assert cp.addresses() == [ip_interface("198.18.0.7/32"), ip_interface("2001:db8::7/64")]
    assert cp.dns_servers() == [ip_address("198.18.0.1"), ip_address("2001:db8::53")]
    assert cp.dns_domains() == ["corp.example"]
    assert cp.subnets() == [ip_network("198.18.4.0/22"), ip_network("2001:db8:1::/48")]
    assert CpPayload.request_addresses().addresses() == []


def test_cp_reserved_bit_ignored():
    cp = CpPayload.decode_body(bytes.fromhex("02000000 80010004 c6120007"))
    assert cp.addresses() == [ip_interface("198.18.0.7/32")]


@pytest.mark.parametrize("attr", [
    "00010003 c61200",                         # IPv4 address of 3 bytes
    "00030005 c612000100",                     # IPv4 DNS of 5 bytes
    "00080010" + "20010db8" + "00" * 12,       # IPv6 address without prefix
    "00080011" + "20010db8" + "00" * 12 + "81",  # IPv6 prefix 129
    "000d0008 c6120400 ff00ff00",              # non-contiguous netmask
    "000a0004 c6120001",                       # IPv6 DNS of 4 bytes
    "000e0003 000100",                         # SUPPORTED_ATTRIBUTES odd
    "00190006 6578 2061 2e62",                 # domain with a space
    "00010004 c612",                           # value truncated
])
def test_cp_malformed(attr):
    with pytest.raises(RemoteProtocolError):
        CpPayload.decode_body(bytes.fromhex("02000000" + attr))


# --- EAP ----------------------------------------------------------------------------------

def test_eap_fields():
    eap = EapPayload.decode_body(bytes([1, 42, 0, 6, 26, 1]))
    assert (eap.code, eap.identifier, eap.eap_type) == (EapCode.REQUEST, 42, EapType.MSCHAPV2)
    assert EapPayload.decode_body(bytes([4, 1, 0, 4])).eap_type is None


@pytest.mark.parametrize("body", [
    bytes([1, 1, 0, 7, 1, 0]),     # length field larger than data
    bytes([1, 1, 0, 5, 1, 0]),     # smaller
    bytes([1, 1, 0, 4]),           # request without type
    bytes([3, 1, 0, 5, 0]),        # success with data
    bytes([9, 1, 0, 4]),           # unknown code
    bytes([1, 1, 0]),              # truncated
])
def test_eap_malformed(body):
    with pytest.raises(RemoteProtocolError):
        EapPayload.decode_body(body)


# --- chains -------------------------------------------------------------------------------

def test_unknown_payloads():
    data = bytes.fromhex("2b000006 abcd 00000004")  # type 200 -> V -> end
    assert decode_chain(200, data) == [UnknownPayload(200, b"\xab\xcd", False),
                                       VendorPayload(b"")]
    with pytest.raises(RemoteProtocolError, match="UNSUPPORTED_CRITICAL_PAYLOAD") as exc:
        decode_chain(200, bytes.fromhex("00800004"))
    assert exc.value.unsupported_critical == 200
    # A known payload with the critical bit is fine; the flag is kept.
    (v,) = decode_chain(PayloadType.VENDOR, bytes.fromhex("00800005 01"))
    assert v.critical


def test_sk_payload_stops_the_chain():
    data = bytes.fromhex("23000008 01020304")  # SK, first inner payload IDi (35)
    assert decode_chain(PayloadType.SK, data) == [SkPayload(b"\x01\x02\x03\x04", 35)]
    first, out = encode_chain([SkPayload(b"\x01\x02\x03\x04", 35)])
    assert (first, out) == (PayloadType.SK, data)
    with pytest.raises(RemoteProtocolError, match="last"):
        decode_chain(PayloadType.SK, data + bytes.fromhex("00000004"))
    with pytest.raises(RemoteProtocolError, match="SKF"):
        decode_chain(PayloadType.SKF, bytes.fromhex("00000008 00010001"))


@pytest.mark.parametrize("first,data", [
    (PayloadType.VENDOR, bytes.fromhex("000000")),          # header truncated
    (PayloadType.VENDOR, bytes.fromhex("00000003")),        # length < 4
    (PayloadType.VENDOR, bytes.fromhex("00000006 01")),     # length past the end
    (PayloadType.VENDOR, bytes.fromhex("00000004 00")),     # trailing byte
    (PayloadType.VENDOR, bytes.fromhex("2b000004")),        # next payload missing
    (PayloadType.VENDOR, b""),                              # first payload missing
])
def test_chain_malformed(first, data):
    with pytest.raises(RemoteProtocolError):
        decode_chain(first, data)


def test_fuzz_chain_only_raises_remote_protocol_error():
    first, valid = encode_chain(ALL_PAYLOADS)
    rng = random.Random(7296)
    outcomes = {"ok": 0, "error": 0}
    for _ in range(4000):
        data = bytearray(valid)
        for _ in range(rng.randint(1, 4)):
            if rng.random() < 0.2:
                del data[rng.randrange(len(data)):]
                if not data:
                    break
            else:
                data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        try:
            decode_chain(first, bytes(data))
            outcomes["ok"] += 1
        except RemoteProtocolError:
            outcomes["error"] += 1
    assert outcomes["ok"] and outcomes["error"]  # the loop did reach both outcomes
