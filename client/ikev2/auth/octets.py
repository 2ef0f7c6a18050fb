"""The octets that the AUTH payload signs or MACs (RFC 7296 section 2.15)."""

from collections.abc import Callable

Prf = Callable[[bytes, bytes], bytes]


def signed_octets(
    message: bytes, peer_nonce: bytes, prf: Prf, sk_p: bytes, id_body: bytes
) -> bytes:
    """Return message | peer nonce | prf(SK_p, RestOfIDPayload).

    `message` is the sender's whole first message (IKE_SA_INIT request for the initiator,
    response for the responder), `peer_nonce` the other side's Nonce data, `sk_p` the
    sender's SK_pi/SK_pr and `id_body` the sender's ID payload body after the generic
    header: ID type, three reserved octets, identification data.
    """
    if len(id_body) < 4:
        raise ValueError("ID payload body must hold at least the ID type and reserved octets")
    return message + peer_nonce + prf(sk_p, id_body)
