"""EAP MD5-Challenge (RFC 3748 section 5.4, hashing as CHAP, RFC 1994).

Type-Data: Value-Size, Value (the challenge), Name. One-way authentication, no MSK.
"""

import hashlib

from client.ikev2.errors import RemoteProtocolError


def parse_challenge(type_data: bytes) -> bytes:
    if len(type_data) < 1:
        raise RemoteProtocolError("EAP-MD5: empty request")
    size = type_data[0]
    if size == 0 or 1 + size > len(type_data):
        raise RemoteProtocolError(f"EAP-MD5: Value-Size {size} does not fit the request")
    return type_data[1 : 1 + size]


def md5_response(identifier: int, password: bytes, challenge: bytes) -> bytes:
    """MD5(Identifier | secret | challenge)."""
    return hashlib.md5(bytes((identifier,)) + password + challenge).digest()


def response_type_data(identifier: int, password: bytes, type_data: bytes) -> bytes:
    """Our Type-Data answering the request's Type-Data: Value-Size 16 and the hash."""
    value = md5_response(identifier, password, parse_challenge(type_data))
    return bytes((len(value),)) + value
