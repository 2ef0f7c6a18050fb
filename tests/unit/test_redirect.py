"""RFC 5685 redirect data (section 8/9 layouts) and the redirect loop limit."""

import pytest

from client.ikev2.errors import RemoteProtocolError
from client.ikev2.tasks.ike_redirect import (
    MAX_REDIRECTS,
    REDIRECT_PERIOD,
    RedirectLimiter,
    decode_gateway,
    encode_gateway,
)


@pytest.mark.parametrize("gateway,wire", [
    ("192.0.2.7", "01 04 c0000207"),
    ("2001:db8::1", "02 10 20010db8000000000000000000000001"),
    ("vpn2.example.com", "03 10" + b"vpn2.example.com".hex()),
])
def test_gateway_identity_layout(gateway, wire):
    data = bytes.fromhex(wire)
    assert encode_gateway(gateway) == data
    assert decode_gateway(data) == (gateway, b"")


def test_nonce_follows_the_identity():
    """In an IKE_SA_INIT response the initiator's nonce comes after the identity."""
    nonce = bytes(range(32))
    assert decode_gateway(encode_gateway("198.51.100.2") + nonce) == ("198.51.100.2", nonce)


@pytest.mark.parametrize("wire,reason", [
    ("", "truncated"),
    ("01", "truncated"),
    ("01 05 c000020700", "type 1, length 5"),
    ("01 04 c00002", "truncated"),
    ("02 04 c0000207", "type 2, length 4"),
    ("04 04 c0000207", "type 4"),
    ("00 00", "type 0"),
    ("03 00", "not a host name"),
    ("03 05" + b"a b.c".hex(), "not a host name"),
    ("03 03" + b"-ab".hex(), "not a host name"),
])
def test_malformed_gateway_identities(wire, reason):
    with pytest.raises(RemoteProtocolError, match=reason):
        decode_gateway(bytes.fromhex(wire))


def test_unencodable_gateway():
    with pytest.raises(ValueError):
        encode_gateway("not a host/name")


def test_loop_limit():
    limiter = RedirectLimiter()
    assert all(limiter.allow(float(t)) for t in range(MAX_REDIRECTS))
    assert not limiter.allow(10.0)
    # The oldest redirect leaves the window: one more is allowed, then none again.
    assert limiter.allow(REDIRECT_PERIOD)
    assert not limiter.allow(REDIRECT_PERIOD + 0.5)
    assert limiter.allow(10 * REDIRECT_PERIOD)
