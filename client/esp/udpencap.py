"""UDP encapsulation of IKE and ESP on one port (RFC 3948)."""

NON_ESP_MARKER = b"\x00\x00\x00\x00"
KEEPALIVE = b"\xff"  # NAT-keepalive (RFC 3948 section 2.3)


def classify(datagram: bytes) -> tuple[str, bytes]:
    """Split a datagram received on the NAT-T port: ("ike", message) / ("esp", datagram) /
    ("keepalive", b"") / ("invalid", b"")."""
    if datagram == KEEPALIVE:
        return "keepalive", b""
    if datagram[:4] == NON_ESP_MARKER:
        if len(datagram) > 4:
            return "ike", datagram[4:]
        return "invalid", b""
    # ESP: SPI (non-zero, checked above) and sequence number at least.
    if len(datagram) >= 8:
        return "esp", datagram
    return "invalid", b""


def ike_datagram(message: bytes) -> bytes:
    """An IKE message as sent on the NAT-T port."""
    return NON_ESP_MARKER + message
