"""A tiny DER writer and strict reader for the few structures IKE handles itself.

cryptography parses certificates; this covers what it has no public API for:
RFC 7427 AlgorithmIdentifiers (auth/pubkey.py) and bare DER Names (identity.py).
"""

SEQUENCE, SET, OID, NULL, INTEGER, BIT_STRING = 0x30, 0x31, 0x06, 0x05, 0x02, 0x03


class DerError(Exception):
    """Malformed or unsupported DER."""


def tlv(tag: int, content: bytes) -> bytes:
    """Encode one element with a definite, minimal length."""
    n = len(content)
    if n < 0x80:
        return bytes((tag, n)) + content
    size = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((tag, 0x80 | len(size))) + size + content


def read_tlv(data: bytes, pos: int) -> tuple[int, bytes, int]:
    """Read one definite-length element at pos; return (tag, content, next position)."""
    if pos + 2 > len(data):
        raise DerError("truncated DER element")
    tag, first = data[pos], data[pos + 1]
    pos += 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if count == 0 or count > 3 or pos + count > len(data):
            raise DerError("unsupported or truncated DER length")
        length = int.from_bytes(data[pos : pos + count], "big")
        if length < 0x80 or data[pos] == 0:
            raise DerError("non-minimal DER length")
        pos += count
    if pos + length > len(data):
        raise DerError("DER element runs past its container")
    return tag, data[pos : pos + length], pos + length


def read_all(data: bytes) -> list[tuple[int, bytes]]:
    """Every element in data, back to back: [(tag, content), ...]."""
    items, pos = [], 0
    while pos < len(data):
        tag, content, pos = read_tlv(data, pos)
        items.append((tag, content))
    return items


def read_one(data: bytes, tag: int) -> bytes:
    """The content of data, which must be exactly one element with this tag."""
    got, content, end = read_tlv(data, 0)
    if got != tag or end != len(data):
        raise DerError(f"expected a single DER element with tag {tag:#x}")
    return content
