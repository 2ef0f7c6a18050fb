"""Signed octets (RFC 7296 2.15) and shared-key AUTH data."""

import hashlib
import hmac

import pytest

from client.ikev2.auth.octets import signed_octets
from client.ikev2.auth.psk import psk_auth_data, psk_verify


def prf(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha256).digest()


ID_BODY = bytes((2, 0, 0, 0)) + b"client.example.org"  # ID_FQDN


def test_signed_octets_layout() -> None:
    octets = signed_octets(b"MSG", b"NONCE", prf, b"skp", ID_BODY)
    assert octets == b"MSGNONCE" + hmac.new(b"skp", ID_BODY, hashlib.sha256).digest()


def test_signed_octets_rejects_truncated_id_body() -> None:
    with pytest.raises(ValueError):
        signed_octets(b"MSG", b"NONCE", prf, b"skp", b"\x02\x00")


def test_psk_auth_data_is_the_rfc_formula() -> None:
    secret, octets = b"s3cret", b"octets to authenticate"
    inner = hmac.new(secret, b"Key Pad for IKEv2", hashlib.sha256).digest()
    expected = hmac.new(inner, octets, hashlib.sha256).digest()
    assert psk_auth_data(prf, secret, octets) == expected


def test_psk_verify_accepts_match_and_rejects_any_change() -> None:
    auth = psk_auth_data(prf, b"s3cret", b"octets")
    assert psk_verify(prf, b"s3cret", b"octets", auth)
    assert not psk_verify(prf, b"wrong", b"octets", auth)
    assert not psk_verify(prf, b"s3cret", b"octetz", auth)
    assert not psk_verify(prf, b"s3cret", b"octets", auth[:-1])
    assert not psk_verify(prf, b"s3cret", b"octets", bytes(len(auth)))
