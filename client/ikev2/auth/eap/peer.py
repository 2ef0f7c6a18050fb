"""The EAP peer (RFC 3748) that IKE_AUTH drives with the gateway's EAP payloads.

Sans-I/O: handle() takes one raw EAP packet and returns the packet to send back.
"""

import secrets
from collections.abc import Callable
from typing import TYPE_CHECKING

from client.ikev2.auth.eap import md5
from client.ikev2.auth.eap.methods import KEY as METHODS_KEY
from client.ikev2.auth.eap.methods import display
from client.ikev2.auth.eap.mschapv2 import MsChapV2Peer
from client.ikev2.constants import EapCode, EapType
from client.ikev2.errors import (
    AuthenticationFailed,
    LocalProtocolError,
    PeerNotTrusted,
    RemoteProtocolError,
)

if TYPE_CHECKING:  # pyOpenSSL is loaded only when EAP-TLS is used
    from client.ikev2.auth.eap.tls import EapTlsPeer, TlsCredentials

SUPPORTED_METHODS = (EapType.MSCHAPV2, EapType.MD5_CHALLENGE, EapType.TLS)
PASSWORD_METHODS = (EapType.MSCHAPV2, EapType.MD5_CHALLENGE)
_HEADER_LEN = 4


class EapPeer:
    """State of one EAP conversation, peer side.

    `methods` lists the methods we allow, in order of preference (that order goes
    into a Nak; eap/methods.py derives it from the profile). A method outside it is
    never answered: the first request of one gets a Nak, a second one (or an
    EAP-Failure after the Nak) ends the connect as a gateway we cannot trust, since it
    insists on a weaker authentication than the profile allows.
    After EAP-Success, `succeeded` is True and `msk` holds the method's
    MSK (None for methods without one: then AUTH uses SK_pi/SK_pr, RFC 7296 2.16).
    EAP-TLS needs `tls` (our certificate and how to check the gateway's), no password.
    """

    def __init__(
        self,
        identity: str,
        password: str | None,
        methods: tuple[int, ...] = (EapType.MSCHAPV2,),
        rng: Callable[[int], bytes] = secrets.token_bytes,
        tls: "TlsCredentials | None" = None,
    ) -> None:
        self.identity = identity
        self._password = password
        self._tls_creds = tls
        self._methods = tuple(
            m for m in methods if m in SUPPORTED_METHODS and (m != EapType.TLS or tls)
        )
        self._rng = rng
        self.method: int | None = None
        self.succeeded = False
        self.notifications: list[str] = []
        self._mschapv2: MsChapV2Peer | None = None
        self._tls: EapTlsPeer | None = None
        self._method_done = False
        self._finished = False
        self.refused: int | None = None  # the method we sent a Nak for

    @property
    def msk(self) -> bytes | None:
        if not self.succeeded:
            return None
        if self._mschapv2 is not None:
            return self._mschapv2.msk
        if self._tls is not None:
            return self._tls.msk
        return None

    def handle(self, packet: bytes) -> bytes | None:
        """Answer one EAP packet; None after Success. Failure raises AuthenticationFailed."""
        if len(packet) < _HEADER_LEN:
            raise RemoteProtocolError(f"EAP packet of {len(packet)} octets is too short")
        code, identifier = packet[0], packet[1]
        length = int.from_bytes(packet[2:4], "big")
        if length != len(packet):
            raise RemoteProtocolError(
                f"EAP Length field says {length} octets but the packet has {len(packet)}"
            )
        if self._finished:
            raise RemoteProtocolError("EAP packet after the conversation ended")
        if code == EapCode.SUCCESS:
            return self._on_success(length)
        if code == EapCode.FAILURE:
            self._finished = True
            if self.refused is not None and self.method is None:
                raise self.insisted()
            reason = self._tls.failure if self._tls is not None else None
            raise AuthenticationFailed(
                f"EAP: the gateway rejected the credentials ({reason or 'EAP-Failure'})"
            )
        if code != EapCode.REQUEST:
            raise RemoteProtocolError(f"EAP code {code} where a request was expected")
        if length < _HEADER_LEN + 1:
            raise RemoteProtocolError("EAP request without a Type")
        eap_type, type_data = packet[4], packet[5:]
        reply_type, reply_data = self._on_request(identifier, eap_type, type_data)
        body = bytes((reply_type,)) + reply_data
        return bytes((EapCode.RESPONSE, identifier)) + (4 + len(body)).to_bytes(2, "big") + body

    def insisted(self, eap_type: int | None = None) -> PeerNotTrusted:
        """The error once the gateway does not take our Nak for an answer."""
        wanted = display(eap_type if eap_type is not None else self.refused or 0)
        allowed = ", ".join(display(m) for m in self._methods) or "none"
        return PeerNotTrusted(
            f"EAP: the gateway insists on {wanted}, which this profile does not allow "
            f"(allowed: {allowed}; {METHODS_KEY} can name others)"
        )

    def _on_success(self, length: int) -> None:
        if length != _HEADER_LEN:
            raise RemoteProtocolError("EAP-Success with data")
        if not self._method_done:
            if self.method == EapType.MSCHAPV2:
                raise PeerNotTrusted(
                    "EAP: the gateway signalled success without proving it knows the password"
                )
            if self.method == EapType.TLS:
                raise PeerNotTrusted(
                    "EAP: the gateway signalled success before the TLS handshake completed"
                )
            raise RemoteProtocolError("EAP-Success before an authentication method completed")
        self._finished = True
        self.succeeded = True
        return None

    def _on_request(self, identifier: int, eap_type: int, data: bytes) -> tuple[int, bytes]:
        if eap_type == EapType.IDENTITY:
            return EapType.IDENTITY, self.identity.encode()
        if eap_type == EapType.NOTIFICATION:
            # Displayable text from the gateway; the response carries no data.
            self.notifications.append(data.decode("utf-8", errors="replace"))
            return EapType.NOTIFICATION, b""
        if eap_type == EapType.NAK:
            raise RemoteProtocolError("EAP Nak is only valid in a response")
        if self.method is not None and eap_type != self.method:
            raise RemoteProtocolError(
                f"EAP: gateway switched from method {self.method} to {eap_type}"
            )
        if eap_type not in self._methods:
            if self.refused is not None:
                raise self.insisted(eap_type)
            # Legacy Nak (RFC 3748 5.3.1): the methods we would accept, or 0 for none.
            self.refused = eap_type
            return EapType.NAK, bytes(self._methods) or b"\x00"
        if eap_type in PASSWORD_METHODS and self._password is None:
            raise LocalProtocolError(f"EAP method {eap_type} needs a password and none is set")
        self.method = eap_type
        if eap_type == EapType.TLS:
            if self._tls is None:
                assert self._tls_creds is not None  # else TLS is not in self._methods
                from client.ikev2.auth.eap.tls import EapTlsPeer

                self._tls = EapTlsPeer(self._tls_creds)
            reply = self._tls.handle(data)
            self._method_done = self._tls.done
            return EapType.TLS, reply
        assert self._password is not None
        if eap_type == EapType.MD5_CHALLENGE:
            reply = md5.response_type_data(identifier, self._password.encode(), data)
            self._method_done = True
            return EapType.MD5_CHALLENGE, reply
        if self._mschapv2 is None:
            self._mschapv2 = MsChapV2Peer(self.identity, self._password, self._rng)
        reply = self._mschapv2.handle(data)
        self._method_done = self._mschapv2.done
        return EapType.MSCHAPV2, reply
