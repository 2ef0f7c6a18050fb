"""The test Responder with RFC 4739 (client certificate, then EAP) and EAP-TLS.

A subclass, so the base Responder stays as it is: it announces MULTIPLE_AUTH_SUPPORTED
in IKE_SA_INIT, checks the client's certificate round (signature over the round's own
IDi, the MULTIPLE_AUTH_SUPPORTED and ANOTHER_AUTH_FOLLOWS notifies), answers it with its
own IDr/CERT/AUTH, then runs EAP for the second round's IDi; and it can authenticate the
client with EAP-TLS (tests/exchange/eap_tls_server.py) instead of EAP-MSCHAPv2.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from OpenSSL import SSL

from client.ikev2.auth import pubkey
from client.ikev2.constants import CertEncoding, EapCode, EapType, ExchangeType, NotifyType
from client.ikev2.errors import PeerNotTrusted
from client.ikev2.message import Message
from client.ikev2.payloads import (
    AuthPayload,
    CertPayload,
    EapPayload,
    IdiPayload,
    NotifyPayload,
    Payload,
)
from tests.exchange.eap_tls_server import REQUEST, SUCCESS, EapTlsServer
from tests.exchange.responder import GatewayConfig, Responder, framed


class MultiAuthResponder(Responder):
    def __init__(
        self,
        cfg: GatewayConfig,
        *,
        multiple_auth: bool = True,
        eap_tls: bool = False,
        client_ca: x509.Certificate | None = None,
        tls_cert: tuple[x509.Certificate, Any] | None = None,  # default: the IKE certificate
        tls_max_version: int = SSL.TLS1_3_VERSION,
        tls_indication: bool = True,
        rng: Callable[[int], bytes] = secrets.token_bytes,
    ) -> None:
        super().__init__(cfg, rng)
        self.multiple_auth = multiple_auth
        self.eap_tls = eap_tls
        self.client_ca = client_ca
        self.tls_cert = tls_cert or (cfg.certs[0] if cfg.certs else None, cfg.key)
        self.tls_max_version = tls_max_version
        self.tls_indication = tls_indication
        self.tls: EapTlsServer | None = None
        self.rounds: list[tuple[str, str]] = []  # (method, IDi) of each client round
        self._second_round = False

    def _respond(self, request: Message, payloads: list[Payload]) -> None:
        if request.exchange == ExchangeType.IKE_SA_INIT and self.multiple_auth:
            payloads = [*payloads, NotifyPayload(NotifyType.MULTIPLE_AUTH_SUPPORTED)]
        super()._respond(request, payloads)

    # -- IKE_AUTH ----------------------------------------------------------------------
    def _ike_auth(self, msg: Message) -> list[Payload]:
        auth = msg.get(AuthPayload)
        if self.idi is None and auth is not None and self.cfg.psk is None:
            return self._certificate_round(msg, auth)
        if self._second_round:
            # RFC 4739: a new IDi, no AUTH: the client wants EAP for this round.
            self._second_round = False
            idi = msg.get(IdiPayload)
            assert idi is not None and auth is None and msg.get(EapPayload) is None
            self.idi = idi  # the MSK AUTH of this round is computed over it
            self.rounds.append(("eap", str(idi)))
            self.eap_id = 1
            return [EapPayload(framed(EapCode.REQUEST, 1, bytes((EapType.IDENTITY,))))]
        if self.idi is None:
            self.rounds.append(("eap", str(msg.get(IdiPayload))))
        return super()._ike_auth(msg)

    def _certificate_round(self, msg: Message, auth: AuthPayload) -> list[Payload]:
        self.idi = msg.get(IdiPayload)
        self.auth_request = msg
        assert self.idi is not None
        self.rounds.append(("pubkey", str(self.idi)))
        cert_payload = msg.get(CertPayload)
        assert cert_payload is not None and cert_payload.encoding == CertEncoding.X509_SIGNATURE
        cert = x509.load_der_x509_certificate(cert_payload.data)
        try:
            pubkey.verify(cert.public_key(), auth.method, auth.data, self._octets(False))
        except PeerNotTrusted:
            return [NotifyPayload(NotifyType.AUTHENTICATION_FAILED)]
        assert msg.notify(NotifyType.MULTIPLE_AUTH_SUPPORTED) is not None
        assert msg.notify(NotifyType.ANOTHER_AUTH_FOLLOWS) is not None
        self._second_round = True
        method, data = pubkey.sign(
            self.cfg.key, self._octets(True), rsa_pss=False,
            peer_hashes=self.client_hashes if self.cfg.rfc7427 else None)
        certs = [CertPayload(CertEncoding.X509_SIGNATURE, c.public_bytes(Encoding.DER))
                 for c in self.cfg.certs]
        return [self.idr, *certs, AuthPayload(method, data)]

    # -- EAP-TLS -----------------------------------------------------------------------
    def _eap(self, packet: bytes) -> bytes:
        if not self.eap_tls:
            return super()._eap(packet)
        eap_type, data = packet[4], packet[5:]
        self.eap_id += 1
        if eap_type == EapType.IDENTITY:
            self.eap_user = data.decode()
            assert self.client_ca is not None
            cert, key = self.tls_cert
            self.tls = EapTlsServer(cert, key, self.client_ca, max_version=self.tls_max_version,
                                    indication=self.tls_indication)
            return self._tls_request(self.tls.start())
        assert eap_type == EapType.TLS and self.tls is not None, f"EAP type {eap_type}"
        kind, out = self.tls.handle(data)
        if kind == REQUEST:
            return self._tls_request(out)
        if kind == SUCCESS:
            self.msk = self.tls.msk
            return framed(EapCode.SUCCESS, self.eap_id - 1)
        return framed(EapCode.FAILURE, self.eap_id - 1)

    def _tls_request(self, type_data: bytes) -> bytes:
        return framed(EapCode.REQUEST, self.eap_id, bytes((EapType.TLS,)) + type_data)
