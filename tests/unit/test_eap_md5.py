"""EAP MD5-Challenge (RFC 3748 5.4 / RFC 1994)."""

import hashlib

import pytest

from client.ikev2.auth.eap import md5
from client.ikev2.errors import RemoteProtocolError


def test_response_is_md5_of_id_secret_challenge() -> None:
    challenge = bytes(range(16))
    expected = hashlib.md5(b"\x07" + b"pass" + challenge).digest()
    assert md5.md5_response(7, b"pass", challenge) == expected
    request = bytes((16,)) + challenge + b"gateway"
    assert md5.response_type_data(7, b"pass", request) == b"\x10" + expected


@pytest.mark.parametrize("bad", [b"", b"\x00", b"\x10" + bytes(15), b"\x05abc"])
def test_malformed_challenge(bad: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        md5.parse_challenge(bad)
