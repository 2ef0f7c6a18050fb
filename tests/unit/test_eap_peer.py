"""EapPeer driven by gateway packets built in the test (strongSwan's framing)."""

import hashlib

import pytest

from client.ikev2.auth.eap import mschapv2 as m
from client.ikev2.auth.eap.peer import EapPeer
from client.ikev2.constants import EapCode, EapType
from client.ikev2.errors import (
    AuthenticationFailed,
    LocalProtocolError,
    PeerNotTrusted,
    RemoteProtocolError,
)

PEER_CHALLENGE = bytes(range(16, 32))
AUTH_CHALLENGE = bytes(range(100, 116))


def rng(n: int) -> bytes:
    assert n == 16
    return PEER_CHALLENGE


def eap(code: int, ident: int, data: bytes = b"") -> bytes:
    return bytes((code, ident)) + (4 + len(data)).to_bytes(2, "big") + data


def request(ident: int, eap_type: int, data: bytes = b"") -> bytes:
    return eap(EapCode.REQUEST, ident, bytes((eap_type,)) + data)


def mschap(opcode: int, ms_id: int, body: bytes) -> bytes:
    return bytes((opcode, ms_id)) + (4 + len(body)).to_bytes(2, "big") + body


def challenge_request(ident: int = 2, ms_id: int = 9) -> bytes:
    body = bytes((16,)) + AUTH_CHALLENGE + b"strongSwan"
    return request(ident, EapType.MSCHAPV2, mschap(m.OP_CHALLENGE, ms_id, body))


def success_request(auth_response: str, ident: int = 3) -> bytes:
    # strongSwan sends the message NUL-terminated.
    body = (auth_response + " M=Welcome2strongSwan").encode() + b"\0"
    return request(ident, EapType.MSCHAPV2, mschap(m.OP_SUCCESS, 9, body))


def run_to_response(peer: EapPeer, identity: str) -> bytes:
    assert peer.handle(request(1, EapType.IDENTITY)) == eap(
        EapCode.RESPONSE, 1, bytes((EapType.IDENTITY,)) + identity.encode()
    )
    return peer.handle(challenge_request())


def test_full_mschapv2_exchange() -> None:
    identity, password = "CORP\\alice", "correct horse"
    peer = EapPeer(identity, password, rng=rng)
    response = run_to_response(peer, identity)

    # The gateway's view: parse our response exactly as strongSwan lays it out.
    assert response[:2] == bytes((EapCode.RESPONSE, 2))
    assert int.from_bytes(response[2:4], "big") == len(response)
    assert response[4] == EapType.MSCHAPV2
    type_data = response[5:]
    assert type_data[0] == m.OP_RESPONSE and type_data[1] == 9
    assert int.from_bytes(type_data[2:4], "big") == len(response) - 5
    assert type_data[4] == 49
    assert type_data[5:21] == PEER_CHALLENGE
    assert type_data[21:29] == bytes(8)
    nt_response = type_data[29:53]
    assert type_data[53] == 0
    assert type_data[54:] == identity.encode()
    assert nt_response == m.generate_nt_response(AUTH_CHALLENGE, PEER_CHALLENGE, b"alice", password)
    assert peer.method == EapType.MSCHAPV2 and peer.msk is None

    auth = m.generate_authenticator_response(
        password, nt_response, PEER_CHALLENGE, AUTH_CHALLENGE, b"alice"
    )
    reply = peer.handle(success_request(auth))
    assert reply == eap(EapCode.RESPONSE, 3, bytes((EapType.MSCHAPV2, m.OP_SUCCESS)))
    assert not peer.succeeded and peer.msk is None

    assert peer.handle(eap(EapCode.SUCCESS, 4)) is None
    assert peer.succeeded
    assert peer.msk == m.msk(password, nt_response)
    assert len(peer.msk) == 64
    with pytest.raises(RemoteProtocolError):
        peer.handle(eap(EapCode.SUCCESS, 5))


def test_wrong_authenticator_response_is_not_trusted() -> None:
    peer = EapPeer("alice", "pw", rng=rng)
    run_to_response(peer, "alice")
    with pytest.raises(PeerNotTrusted):
        peer.handle(success_request("S=" + "0" * 40))


def test_eap_success_before_mschapv2_success_is_not_trusted() -> None:
    peer = EapPeer("alice", "pw", rng=rng)
    run_to_response(peer, "alice")
    with pytest.raises(PeerNotTrusted):
        peer.handle(eap(EapCode.SUCCESS, 3))


def test_mschapv2_failure_request_means_bad_credentials() -> None:
    peer = EapPeer("alice", "wrong", rng=rng)
    run_to_response(peer, "alice")
    body = b"E=691 R=1 C=" + b"00" * 16 + b" V=3 M=Authentication failure"
    with pytest.raises(
        AuthenticationFailed,
        match=r"^EAP: the gateway rejected the credentials "
        r"\(MSCHAPv2 error 691: authentication failure\)$",
    ):
        peer.handle(request(3, EapType.MSCHAPV2, mschap(m.OP_FAILURE, 9, body)))


def test_eap_failure_means_bad_credentials() -> None:
    peer = EapPeer("alice", "pw", rng=rng)
    run_to_response(peer, "alice")
    with pytest.raises(AuthenticationFailed, match="rejected the credentials"):
        peer.handle(eap(EapCode.FAILURE, 3))


def test_md5_challenge_exchange_has_no_msk() -> None:
    peer = EapPeer("bob", "pw", methods=(EapType.MD5_CHALLENGE,))
    challenge = bytes(range(16))
    reply = peer.handle(request(5, EapType.MD5_CHALLENGE, b"\x10" + challenge))
    digest = hashlib.md5(b"\x05pw" + challenge).digest()
    assert reply == eap(EapCode.RESPONSE, 5, bytes((EapType.MD5_CHALLENGE, 16)) + digest)
    assert peer.handle(eap(EapCode.SUCCESS, 6)) is None
    assert peer.succeeded and peer.msk is None and peer.method == EapType.MD5_CHALLENGE


def test_nak_lists_allowed_methods() -> None:
    peer = EapPeer("bob", "pw", methods=(EapType.MSCHAPV2, EapType.MD5_CHALLENGE))
    reply = peer.handle(request(1, EapType.TLS, b"\x20"))
    assert reply == eap(EapCode.RESPONSE, 1, bytes((EapType.NAK, 26, 4)))
    only_mschap = EapPeer("bob", "pw", methods=(EapType.MSCHAPV2,))
    reply = only_mschap.handle(request(1, EapType.MD5_CHALLENGE, b"\x01a"))
    assert reply == eap(EapCode.RESPONSE, 1, bytes((EapType.NAK, 26)))
    assert only_mschap.method is None
    # After the Nak the gateway proposes MSCHAPv2 and the exchange goes on.
    assert only_mschap.handle(challenge_request())[4] == EapType.MSCHAPV2


def test_notification_is_acknowledged() -> None:
    peer = EapPeer("bob", "pw")
    reply = peer.handle(request(7, EapType.NOTIFICATION, b"Password expires soon"))
    assert reply == eap(EapCode.RESPONSE, 7, bytes((EapType.NOTIFICATION,)))
    assert peer.notifications == ["Password expires soon"]


def test_method_switch_is_rejected() -> None:
    peer = EapPeer("alice", "pw", rng=rng)
    run_to_response(peer, "alice")
    with pytest.raises(RemoteProtocolError):
        peer.handle(request(3, EapType.MD5_CHALLENGE, b"\x01a"))


def test_missing_password_is_a_local_error() -> None:
    with pytest.raises(LocalProtocolError):
        EapPeer("alice", None).handle(challenge_request())


def test_success_without_any_method_is_rejected() -> None:
    peer = EapPeer("alice", "pw")
    peer.handle(request(1, EapType.IDENTITY))
    with pytest.raises(RemoteProtocolError):
        peer.handle(eap(EapCode.SUCCESS, 2))


@pytest.mark.parametrize(
    "packet",
    [
        b"",
        b"\x01\x01\x00",
        b"\x01\x01\x00\x09\x01",  # Length beyond the packet
        b"\x01\x01\x00\x04",  # request without a Type
        eap(EapCode.RESPONSE, 1, b"\x01"),  # a response sent to the peer
        eap(9, 1),
        eap(EapCode.SUCCESS, 1, b"\x00"),  # Success with data
        request(1, EapType.NAK, b"\x04"),
        request(2, EapType.MSCHAPV2, b""),
        request(2, EapType.MSCHAPV2, mschap(m.OP_CHALLENGE, 1, b"\x08" + bytes(8) + b"x")),
        request(2, EapType.MSCHAPV2, mschap(m.OP_CHALLENGE, 1, b"\x10" + bytes(10))),
        request(2, EapType.MSCHAPV2, mschap(m.OP_CHALLENGE, 1, b"\x10" + bytes(16))[:-1] + b"xy"),
        request(2, EapType.MSCHAPV2, mschap(m.OP_SUCCESS, 1, b"S=" + b"0" * 40)),  # out of order
        request(2, EapType.MD5_CHALLENGE, b"\x10abc"),
    ],
)
def test_malformed_packets(packet: bytes) -> None:
    peer = EapPeer("alice", "pw", rng=rng, methods=(EapType.MSCHAPV2, EapType.MD5_CHALLENGE))
    with pytest.raises(RemoteProtocolError):
        peer.handle(packet)


@pytest.mark.parametrize(
    "body",
    [b"M=hello", b"S=ABC M=x", "S=\u00e9".encode()],
)
def test_malformed_success_requests(body: bytes) -> None:
    peer = EapPeer("alice", "pw", rng=rng)
    run_to_response(peer, "alice")
    with pytest.raises(RemoteProtocolError):
        peer.handle(request(3, EapType.MSCHAPV2, mschap(m.OP_SUCCESS, 9, body)))
