"""Shared-key AUTH data (RFC 7296 section 2.15), also used after EAP (section 2.16)."""

import hmac
from collections.abc import Callable

Prf = Callable[[bytes, bytes], bytes]

KEY_PAD = b"Key Pad for IKEv2"


def psk_auth_data(prf: Prf, secret: bytes, octets: bytes) -> bytes:
    """AUTH = prf(prf(secret, "Key Pad for IKEv2"), signed octets).

    For EAP the secret is the MSK, or SK_pi/SK_pr when the method produced no MSK.
    """
    return prf(prf(secret, KEY_PAD), octets)


def psk_verify(prf: Prf, secret: bytes, octets: bytes, auth_data: bytes) -> bool:
    """Check the peer's AUTH data in constant time."""
    return hmac.compare_digest(psk_auth_data(prf, secret, octets), auth_data)
