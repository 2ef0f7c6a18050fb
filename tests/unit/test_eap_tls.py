"""EAP-TLS (RFC 5216, RFC 9190): framing, fragmentation, and whole handshakes against an
OpenSSL EAP-TLS server in memory."""

from __future__ import annotations

import datetime

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from OpenSSL import SSL

from client.ikev2.auth.eap import tls as t
from client.ikev2.auth.eap.peer import EapPeer
from client.ikev2.constants import EapCode, EapType
from client.ikev2.errors import AuthenticationFailed, PeerNotTrusted, RemoteProtocolError
from tests.exchange.eap_tls_server import FAILURE, REQUEST, SUCCESS, EapTlsServer, make_cert

NOW = datetime.datetime.now(datetime.UTC)


# --- a small PKI ----------------------------------------------------------------------

def _cert(cn: str, issuer=None, **kw):
    return make_cert(cn, issuer, now=NOW, **kw)


@pytest.fixture(scope="module")
def pki():
    ca = _cert("EAP-TLS Test CA", ca=True)
    other_ca = _cert("Other CA", ca=True)
    server_eku, client_eku = ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH
    return {
        "ca": ca,
        "gateway": _cert("vpn.example.com", ca, san=x509.DNSName("vpn.example.com"),
                         eku=server_eku),
        "impostor": _cert("vpn.example.com", other_ca, san=x509.DNSName("vpn.example.com"),
                          eku=server_eku),
        "other_name": _cert("other.example.com", ca, san=x509.DNSName("other.example.com"),
                            eku=server_eku),
        # RSA: a certificate flight of well over one EAP packet
        "alice": _cert("alice@example.com", ca, san=x509.RFC822Name("alice@example.com"),
                       eku=client_eku, rsa_key=True),
        "mallory": _cert("mallory@example.com", other_ca,
                         san=x509.RFC822Name("mallory@example.com"), eku=client_eku),
    }


def creds(pki, client="alice", remote_id="vpn.example.com") -> t.TlsCredentials:
    cert, key = pki[client]
    return t.TlsCredentials(key, cert, [pki["ca"][0]], [pki["ca"][0]], remote_id,
                            lambda: NOW)


def server(pki, gateway="gateway", **kw) -> EapTlsServer:
    cert, key = pki[gateway]
    return EapTlsServer(cert, key, pki["ca"][0], **kw)


def converse(peer: t.EapTlsPeer, srv: EapTlsServer, limit: int = 200) -> tuple[str, int]:
    """Run the conversation to its end: (SUCCESS|FAILURE, number of client packets)."""
    kind, data = REQUEST, srv.start()
    for n in range(limit):
        reply = peer.handle(data)
        kind, data = srv.handle(reply)
        if kind != REQUEST:
            return kind, n + 1
    raise AssertionError("no end to the conversation")


# --- framing --------------------------------------------------------------------------

def test_small_message_is_one_packet_without_flags() -> None:
    assert t.fragment(b"hello") == [b"\x00hello"]


def test_fragments_fit_and_carry_flags_and_total_length() -> None:
    message = bytes(range(256)) * 20  # 5120 octets
    frames = t.fragment(message, max_packet=1000)
    assert all(t.EAP_HEADER_LEN + len(f) <= 1000 for f in frames)
    assert frames[0][0] == t.FLAG_LENGTH | t.FLAG_MORE
    assert int.from_bytes(frames[0][1:5], "big") == len(message)
    assert all(f[0] == t.FLAG_MORE for f in frames[1:-1])
    assert frames[-1][0] == 0
    r = t.Reassembler()
    results = [r.add(t.parse_frame(f)) for f in frames]
    assert results[:-1] == [None] * (len(frames) - 1)
    assert results[-1] == message


def test_unfragmented_message_with_length_field() -> None:
    frame = t.parse_frame(bytes((t.FLAG_LENGTH,)) + (3).to_bytes(4, "big") + b"abc")
    assert t.Reassembler().add(frame) == b"abc"


@pytest.mark.parametrize("type_data, reason", [
    (b"", "without Flags"),
    (bytes((t.FLAG_LENGTH, 0, 0)), "no TLS Message Length"),
    (bytes((t.FLAG_LENGTH,)) + (t.MAX_TLS_MESSAGE + 1).to_bytes(4, "big"), "exceeds"),
    (bytes((t.FLAG_LENGTH,)) + (2).to_bytes(4, "big") + b"abc", "less than"),
])
def test_malformed_frames(type_data: bytes, reason: str) -> None:
    with pytest.raises(RemoteProtocolError, match=reason):
        t.parse_frame(type_data)


def _lm(total: int, data: bytes) -> t.Frame:
    return t.parse_frame(bytes((t.FLAG_LENGTH | t.FLAG_MORE,)) + total.to_bytes(4, "big") + data)


def test_first_fragment_needs_the_length() -> None:
    with pytest.raises(RemoteProtocolError, match="without the L flag"):
        t.Reassembler().add(t.parse_frame(bytes((t.FLAG_MORE,)) + b"abc"))


def test_fragments_beyond_the_announced_length() -> None:
    r = t.Reassembler()
    r.add(_lm(5, b"abc"))
    with pytest.raises(RemoteProtocolError, match="more than the announced"):
        r.add(t.parse_frame(bytes((t.FLAG_MORE,)) + b"def"))


def test_last_fragment_short_of_the_announced_length() -> None:
    r = t.Reassembler()
    r.add(_lm(10, b"abc"))
    with pytest.raises(RemoteProtocolError, match="5 of 10"):
        r.add(t.parse_frame(b"\x00" + b"de"))


def test_length_changing_between_fragments() -> None:
    r = t.Reassembler()
    r.add(_lm(10, b"abc"))
    with pytest.raises(RemoteProtocolError, match="changed"):
        r.add(_lm(11, b"def"))


def test_reassembly_is_bounded() -> None:
    r = t.Reassembler()
    with pytest.raises(RemoteProtocolError, match="exceeds"):
        r.add(_lm(t.MAX_TLS_MESSAGE + 1, b"x"))


def test_empty_fragment_with_more_flag() -> None:
    r = t.Reassembler()
    r.add(_lm(10, b"abc"))
    with pytest.raises(RemoteProtocolError, match="empty fragment"):
        r.add(t.parse_frame(bytes((t.FLAG_MORE,))))


# --- the peer's state machine ---------------------------------------------------------

def test_request_before_start(pki) -> None:
    with pytest.raises(RemoteProtocolError, match="before the Start"):
        t.EapTlsPeer(creds(pki)).handle(b"\x00abc")


def test_start_with_data(pki) -> None:
    with pytest.raises(RemoteProtocolError, match="Start packet with TLS data"):
        t.EapTlsPeer(creds(pki)).handle(bytes((t.FLAG_START,)) + b"x")


def test_second_start(pki) -> None:
    peer = t.EapTlsPeer(creds(pki), max_packet=4000)
    hello = peer.handle(bytes((t.FLAG_START,)))
    assert hello[0] == 0 and hello[1] == 0x16  # one packet: a TLS handshake record
    with pytest.raises(RemoteProtocolError, match="Start in the middle"):
        peer.handle(bytes((t.FLAG_START,)))


def test_ack_with_nothing_to_acknowledge(pki) -> None:
    peer = t.EapTlsPeer(creds(pki), max_packet=4000)
    peer.handle(bytes((t.FLAG_START,)))
    with pytest.raises(RemoteProtocolError, match="no fragment to acknowledge"):
        peer.handle(t.ACK)


def test_data_while_our_fragments_are_outstanding(pki) -> None:
    peer = t.EapTlsPeer(creds(pki), max_packet=100)
    first = peer.handle(bytes((t.FLAG_START,)))  # ClientHello: > 100 octets
    assert first[0] == t.FLAG_LENGTH | t.FLAG_MORE
    with pytest.raises(RemoteProtocolError, match="outstanding"):
        peer.handle(b"\x00\x16\x03\x03")


def test_empty_tls_message(pki) -> None:
    peer = t.EapTlsPeer(creds(pki), max_packet=4000)
    peer.handle(bytes((t.FLAG_START,)))
    with pytest.raises(RemoteProtocolError, match="Length 0"):
        peer.handle(bytes((t.FLAG_LENGTH,)) + bytes(4))


def test_garbage_instead_of_tls(pki) -> None:
    peer = t.EapTlsPeer(creds(pki), max_packet=4000)
    peer.handle(bytes((t.FLAG_START,)))
    with pytest.raises(RemoteProtocolError, match="TLS handshake failed"):
        peer.handle(b"\x00" + b"\x16\x03\x03\x00\x05hello")


def test_endless_requests_are_cut_off(pki) -> None:
    peer = t.EapTlsPeer(creds(pki), max_packet=4000)
    peer.handle(bytes((t.FLAG_START,)))
    peer.handle(bytes((t.FLAG_LENGTH | t.FLAG_MORE,)) + (60000).to_bytes(4, "big") + b"\x16")
    with pytest.raises(RemoteProtocolError, match="more than"):
        for _ in range(t.MAX_REQUESTS):
            assert peer.handle(bytes((t.FLAG_MORE,)) + b"\x03") == t.ACK


# --- whole handshakes -----------------------------------------------------------------

@pytest.mark.parametrize("version, indication, name", [
    (SSL.TLS1_2_VERSION, True, "TLSv1.2"),
    (SSL.TLS1_3_VERSION, True, "TLSv1.3"),
    (SSL.TLS1_3_VERSION, False, "TLSv1.3"),  # strongSwan before 5.9.10
])
def test_handshake_agrees_on_the_msk(pki, version: int, indication: bool, name: str) -> None:
    peer = t.EapTlsPeer(creds(pki))
    srv = server(pki, max_version=version, indication=indication)
    result, _ = converse(peer, srv)
    assert result == SUCCESS
    assert peer.done and peer.version == name
    assert srv.msk is not None and len(srv.msk) == 64
    assert peer.msk == srv.msk


@pytest.mark.parametrize("version", [SSL.TLS1_2_VERSION, SSL.TLS1_3_VERSION])
def test_fragmented_both_ways(pki, version: int) -> None:
    peer = t.EapTlsPeer(creds(pki), max_packet=200)
    srv = server(pki, max_version=version, max_packet=150)
    result, packets = converse(peer, srv)
    assert result == SUCCESS and peer.msk == srv.msk
    assert packets > 20  # every fragment acknowledged, in both directions


@pytest.mark.parametrize("gateway, remote_id, reason", [
    ("impostor", "vpn.example.com", "does not lead to a trusted CA"),
    ("other_name", "vpn.example.com", "does not carry the identity"),
    ("gateway", "vpn2.example.com", "does not carry the identity"),
])
@pytest.mark.parametrize("version", [SSL.TLS1_2_VERSION, SSL.TLS1_3_VERSION])
def test_untrusted_gateway_never_gets_our_flight(pki, gateway, remote_id, reason, version
                                                 ) -> None:
    peer = t.EapTlsPeer(creds(pki, remote_id=remote_id))
    srv = server(pki, gateway=gateway, max_version=version, max_packet=4000)
    sent = []
    kind, data = REQUEST, srv.start()
    with pytest.raises(PeerNotTrusted, match=reason):
        while kind == REQUEST:
            sent.append(peer.handle(data))
            kind, data = srv.handle(sent[-1])
    # Nothing after the ClientHello's fragments left: no certificate, no Finished.
    hello = b"".join(f[5:] if f[0] & t.FLAG_LENGTH else f[1:] for f in sent)
    assert hello[0] == 0x16 and hello[5] == 1  # a handshake record with a ClientHello
    assert len(hello) == 5 + int.from_bytes(hello[3:5], "big")
    assert peer.msk is None


def _eap(code: int, ident: int, data: bytes = b"") -> bytes:
    return bytes((code, ident)) + (4 + len(data)).to_bytes(2, "big") + data


def _run_eap(eap: EapPeer, srv: EapTlsServer) -> str:
    """EapPeer against the server, EAP framing included; raises what EapPeer raises."""
    ident = 1
    packet = _eap(EapCode.REQUEST, ident, bytes((EapType.IDENTITY,)))
    assert eap.handle(packet)[5:] == b"alice@example.com"
    kind, data = REQUEST, srv.start()
    while kind == REQUEST:
        ident += 1
        reply = eap.handle(_eap(EapCode.REQUEST, ident, bytes((EapType.TLS,)) + data))
        assert reply[0] == EapCode.RESPONSE and reply[1] == ident and reply[4] == EapType.TLS
        kind, data = srv.handle(reply[5:])
    code = EapCode.SUCCESS if kind == SUCCESS else EapCode.FAILURE
    assert eap.handle(_eap(code, ident)) is None
    return kind


@pytest.mark.parametrize("version", [SSL.TLS1_2_VERSION, SSL.TLS1_3_VERSION])
def test_eap_peer_runs_eap_tls(pki, version: int) -> None:
    eap = EapPeer("alice@example.com", None, methods=(EapType.TLS,), tls=creds(pki))
    srv = server(pki, max_version=version)
    assert _run_eap(eap, srv) == SUCCESS
    assert eap.succeeded and eap.method == EapType.TLS and eap.msk == srv.msk


@pytest.mark.parametrize("version", [SSL.TLS1_2_VERSION, SSL.TLS1_3_VERSION])
def test_gateway_refusing_our_certificate_is_a_credentials_failure(pki, version) -> None:
    eap = EapPeer("alice@example.com", None, methods=(EapType.TLS,),
                  tls=creds(pki, client="mallory"))
    srv = server(pki, max_version=version)
    with pytest.raises(AuthenticationFailed, match="refused our certificate"):
        _run_eap(eap, srv)
    assert srv.state == "failed" and eap.msk is None


def test_success_before_the_handshake_completes(pki) -> None:
    eap = EapPeer("alice@example.com", None, methods=(EapType.TLS,), tls=creds(pki))
    eap.handle(_eap(EapCode.REQUEST, 1, bytes((EapType.IDENTITY,))))
    eap.handle(_eap(EapCode.REQUEST, 2, bytes((EapType.TLS, t.FLAG_START))))
    with pytest.raises(PeerNotTrusted, match="before the TLS handshake completed"):
        eap.handle(_eap(EapCode.SUCCESS, 2))


def test_nak_to_tls_without_a_certificate() -> None:
    eap = EapPeer("alice", "pw")  # MSCHAPv2 only
    reply = eap.handle(_eap(EapCode.REQUEST, 1, bytes((EapType.TLS, t.FLAG_START))))
    assert reply[4] == EapType.NAK and reply[5:] == bytes((EapType.MSCHAPV2,))


def test_failure_result_is_failure(pki) -> None:
    # the server's own verdict for an unknown client CA, for the record
    peer = t.EapTlsPeer(creds(pki, client="mallory"))
    assert converse(peer, server(pki, max_version=SSL.TLS1_2_VERSION))[0] == FAILURE
