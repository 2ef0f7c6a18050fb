"""IKE_AUTH authentication: our IDi/AUTH (PSK, certificate or EAP) and checking the gateway.

Nothing the gateway says in IKE_AUTH is acted on before its AUTH payload verified: the
tasks that follow this one in the exchange check `sa.peer_authenticated` first.

Several rounds (RFC 4739, `IkeConfig.auth_rounds`, e.g. certificate then EAP): the first
request carries N(MULTIPLE_AUTH_SUPPORTED) and, with its AUTH, N(ANOTHER_AUTH_FOLLOWS);
the gateway authenticates itself in its answer; each later round starts with a new IDi
(the EAP identity) and no AUTH, which makes the gateway start EAP, and ends with the AUTH
from the MSK computed over that round's IDi.
"""

from __future__ import annotations

import logging

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from ..auth import certs, pubkey, revocation
from ..auth.eap.peer import EapPeer
from ..auth.octets import signed_octets
from ..auth.psk import psk_auth_data, psk_verify
from ..constants import AuthMethod, CertEncoding, EapCode, EapType, ExchangeType, NotifyType
from ..errors import (
    AuthenticationFailed,
    LocalProtocolError,
    PeerNotTrusted,
    RemoteProtocolError,
)
from ..events import RevocationCheck
from ..message import Message
from ..payloads import (
    AuthPayload,
    CertPayload,
    CertReqPayload,
    EapPayload,
    IdiPayload,
    IdrPayload,
    NotifyPayload,
)
from .base import Status, Task

log = logging.getLogger(__name__)

# EAP methods that authenticate the gateway too, so that EAP-only (RFC 5998) is safe.
MUTUAL_EAP = {EapType.MSCHAPV2, EapType.TLS}
# Requests that carry no credentials and so may come before the method is known.
EAP_PRELUDE = {EapType.IDENTITY, EapType.NOTIFICATION}


class IkeAuth(Task):
    exchange = ExchangeType.IKE_AUTH

    def __init__(self, sa) -> None:
        super().__init__(sa)
        cfg = sa.config
        self.rounds: tuple[str, ...] = cfg.auth_rounds or (cfg.auth_method,)
        # One round, or RFC 4739's certificate (or PSK) round followed by an EAP round.
        two = len(self.rounds) == 2 and self.rounds[0] != "eap" and self.rounds[1] == "eap"
        if len(self.rounds) != 1 and not two:
            raise LocalProtocolError(f"unsupported authentication rounds {self.rounds}")
        self.round_index = 0  # which of self.rounds is running
        self.idi = IdiPayload.from_string(cfg.local_id)
        self.eap: EapPeer | None = self._new_eap() if self.rounds[0] == "eap" else None
        self.messages = 0  # IKE_AUTH requests built so far
        self.start_round = False  # the next request opens a round after the first
        self.pending_eap: bytes | None = None
        self.send_msk_auth = False
        self.idr: IdrPayload | None = None
        self.eap_only = False  # the gateway skipped its AUTH: EAP must authenticate it
        self.peer_cert: x509.Certificate | None = None
        cfg.crypto_policy.warn_relaxed()  # at every connect (and reauthentication)

    @property
    def method(self) -> str:
        return self.rounds[self.round_index]

    def _new_eap(self) -> EapPeer:
        cfg = self.sa.config
        tls = None
        if (
            EapType.TLS in cfg.eap_methods
            and cfg.certificate is not None
            and cfg.private_key is not None
        ):
            # Only EAP-TLS needs pyOpenSSL: import it only then (start-up time, memory).
            from ..auth.eap.tls import TlsCredentials

            tls = TlsCredentials(
                cfg.private_key, cfg.certificate, list(cfg.cert_chain),
                cfg.trust_anchors, cfg.remote_id, cfg.wall_clock, cfg.crypto_policy,
            )
        return EapPeer(
            cfg.eap_identity or cfg.local_id, cfg.eap_password,
            methods=cfg.eap_methods, rng=self.sa.rng, tls=tls,
        )

    # -- building -------------------------------------------------------------------
    def build(self, msg: Message) -> None:
        self.messages += 1
        cfg, sa = self.sa.config, self.sa
        if self.messages == 1:
            self._build_first(msg)
            return
        if self.start_round:
            # RFC 4739 2: a later round opens with its own IDi and, for EAP, no AUTH.
            self.start_round = False
            self.idi = IdiPayload.from_string(cfg.eap_identity or cfg.local_id)
            msg.payloads.append(self.idi)
            return
        if self.pending_eap is not None:
            msg.payloads.append(EapPayload(self.pending_eap))
            self.pending_eap = None
        elif self.send_msk_auth:
            assert self.eap is not None
            secret = self.eap.msk or sa.keys.sk_pi
            octets = self._our_octets(sa.keys.sk_pi)
            msg.payloads.append(AuthPayload(AuthMethod.PSK, psk_auth_data(sa.prf, secret, octets)))

    def _build_first(self, msg: Message) -> None:
        cfg, sa = self.sa.config, self.sa
        method = self.method
        msg.payloads.append(self.idi)
        if method == "pubkey":
            for cert in [cfg.certificate, *cfg.cert_chain]:
                msg.payloads.append(
                    CertPayload(CertEncoding.X509_SIGNATURE, cert.public_bytes(Encoding.DER))
                )
        if cfg.send_certreq and cfg.trust_anchors and method != "psk":
            msg.payloads.append(
                CertReqPayload(
                    CertEncoding.X509_SIGNATURE,
                    b"".join(certs.certreq_hash(c) for c in cfg.trust_anchors),
                )
            )
        if cfg.send_idr:
            msg.payloads.append(IdrPayload.from_string(cfg.remote_id))
        if method == "psk":
            octets = self._our_octets(sa.keys.sk_pi)
            msg.payloads.append(AuthPayload(AuthMethod.PSK, psk_auth_data(sa.prf, cfg.psk, octets)))
        elif method == "pubkey":
            octets = self._our_octets(sa.keys.sk_pi)
            auth_method, data = pubkey.sign(
                cfg.private_key, octets,
                peer_hashes=sa.peer_hash_algorithms, rsa_pss=cfg.rsa_pss,
            )
            msg.payloads.append(AuthPayload(auth_method, data))
        if cfg.initial_contact:  # not while the SA we reauthenticate is still up
            msg.payloads.append(NotifyPayload(NotifyType.INITIAL_CONTACT))
        if method == "eap":
            # Announced even without the profile's opt-in (as strongSwan's client does),
            # so that an EAP-only gateway shows its hand and we can refuse it with the
            # true reason instead of its generic AUTHENTICATION_FAILED.
            msg.payloads.append(NotifyPayload(NotifyType.EAP_ONLY_AUTHENTICATION))
        if len(self.rounds) > 1:
            if not sa.peer_multiple_auth:
                raise LocalProtocolError(
                    "the gateway does not support multiple authentication rounds (RFC 4739),"
                    " which certificate-then-EAP authentication needs"
                )
            msg.payloads.append(NotifyPayload(NotifyType.MULTIPLE_AUTH_SUPPORTED))
            # Only a round that ends in this message's AUTH can announce the next.
            msg.payloads.append(NotifyPayload(NotifyType.ANOTHER_AUTH_FOLLOWS))

    def _our_octets(self, sk_p: bytes) -> bytes:
        sa = self.sa
        return signed_octets(sa.init_request, sa.nr, sa.prf, sk_p, self.idi.encode_body())

    def _peer_octets(self) -> bytes:
        sa = self.sa
        assert self.idr is not None
        return signed_octets(sa.init_response, sa.ni, sa.prf, sa.keys.sk_pr, self.idr.encode_body())

    # -- processing -----------------------------------------------------------------
    def process(self, msg: Message) -> Status:
        sa = self.sa
        if msg.notify(NotifyType.AUTHENTICATION_FAILED) is not None:
            if self.eap is not None and self.eap.refused is not None and self.eap.method is None:
                # Our Nak was all we said: no credential was tried, the gateway would
                # only take a method the profile refuses.
                raise self.eap.insisted()
            raise AuthenticationFailed(
                "the gateway rejected our credentials (AUTHENTICATION_FAILED)"
            )
        idr = msg.get(IdrPayload)
        if idr is not None:
            if self.idr is not None and idr.encode_body() != self.idr.encode_body():
                raise RemoteProtocolError("the gateway changed its identity during IKE_AUTH")
            self.idr = idr
        auth = msg.get(AuthPayload)

        if msg.notify(NotifyType.ANOTHER_AUTH_FOLLOWS) is not None:
            raise RemoteProtocolError(
                "the gateway wants to authenticate itself in several rounds (RFC 4739);"
                " only the client's side of that is supported"
            )

        if self.send_msk_auth:
            # Final message of EAP: the gateway proves it derived the same MSK.
            if auth is None:
                raise PeerNotTrusted("the gateway sent no AUTH after EAP")
            assert self.eap is not None
            secret = self.eap.msk or sa.keys.sk_pr
            if not psk_verify(sa.prf, secret, self._peer_octets(), auth.data):
                raise PeerNotTrusted("the gateway's EAP AUTH payload did not verify")
            if self.eap_only:
                self._check_eap_only_identity()
            sa.peer_authenticated = True
            self.send_msk_auth = False
            return self._round_done()

        if auth is not None and not sa.peer_authenticated:
            self._verify_gateway(msg, auth)
            sa.peer_authenticated = True
            if self.peer_cert is not None and sa.config.check_revocation:
                # Nothing else of this message is used, and nothing (EAP credentials
                # included) is sent, until the driver's revocation verdict.
                sa.request_revocation_check(self._revocation_check(msg), msg)

        eap = msg.get(EapPayload)
        if eap is not None:
            if self.eap is None:
                raise RemoteProtocolError("the gateway started EAP but the profile uses no EAP")
            if not sa.peer_authenticated:
                self._allow_eap_only(eap)
            response = self.eap.handle(eap.data)
            if self.eap.succeeded:
                method = self.eap.method
                name = EapType(method).name if method in EapType._value2member_map_ else method
                log.info("EAP method %s succeeded", name)
                self.send_msk_auth = True
            elif response is not None:
                self.pending_eap = response
            else:
                raise RemoteProtocolError("EAP ended without success")
            return Status.NEED_MORE

        if self.method == "eap":
            raise RemoteProtocolError("the gateway did not start EAP")
        if not sa.peer_authenticated:
            raise PeerNotTrusted("the gateway sent no AUTH payload")
        return self._round_done()

    def _round_done(self) -> Status:
        """Our current round succeeded: open the next one, or finish IKE_AUTH."""
        self.round_index += 1
        if self.round_index < len(self.rounds):
            log.info(
                "authentication round %d of %d done, starting %s",
                self.round_index, len(self.rounds), self.method.upper(),
            )
            self.start_round = True
            self.eap = self._new_eap() if self.method == "eap" else None
            return Status.NEED_MORE
        self.sa.auth_done = True
        return Status.DONE

    def _revocation_check(self, msg: Message) -> RevocationCheck:
        cfg = self.sa.config
        assert self.peer_cert is not None
        intermediates = []
        for c in msg.get_all(CertPayload)[1:]:
            if c.encoding == CertEncoding.X509_SIGNATURE:
                try:  # validate_chain parsed them already
                    intermediates.append(x509.load_der_x509_certificate(c.data))
                except ValueError:
                    continue
        links = revocation.chain_links(self.peer_cert, intermediates, cfg.trust_anchors or [])
        stapled = tuple(c.data for c in msg.get_all(CertPayload)
                        if c.encoding == CertEncoding.OCSP_CONTENT)[:revocation.MAX_CHAIN]
        return RevocationCheck(tuple(links), stapled)

    def _allow_eap_only(self, eap: EapPayload) -> None:
        """Called for each EAP request while the gateway has not authenticated itself."""
        if not self.sa.config.eap_only:
            raise PeerNotTrusted("the gateway started EAP without authenticating itself")
        self.eap_only = True
        if eap.code == EapCode.REQUEST and eap.eap_type not in MUTUAL_EAP | EAP_PRELUDE:
            # Refuse before answering: a non-mutual method would hand an unauthenticated
            # gateway material derived from the password.
            raise PeerNotTrusted(
                f"the gateway offered EAP-only authentication with EAP type {eap.eap_type},"
                " which cannot prove the gateway's identity"
            )

    def _check_eap_only_identity(self) -> None:
        cfg = self.sa.config
        assert self.idr is not None
        if not IdrPayload.from_string(cfg.remote_id).same_identity(self.idr):
            raise PeerNotTrusted(
                f"the gateway identified as '{self.idr}', the profile expects '{cfg.remote_id}'"
            )
        log.info("gateway '%s' authenticated by mutual EAP (EAP-only)", self.idr)

    def _verify_gateway(self, msg: Message, auth: AuthPayload) -> None:
        sa, cfg = self.sa, self.sa.config
        if self.idr is None:
            raise RemoteProtocolError("AUTH without IDr")
        octets = self._peer_octets()
        if auth.method == AuthMethod.PSK:
            if cfg.auth_method != "psk":
                raise PeerNotTrusted(
                    "the gateway authenticated with a PSK, the profile expects a certificate"
                )
            if not IdrPayload.from_string(cfg.remote_id).same_identity(self.idr):
                raise PeerNotTrusted(
                    f"the gateway identified as '{self.idr}', the profile expects '{cfg.remote_id}'"
                )
            if not psk_verify(sa.prf, cfg.psk, octets, auth.data):
                raise PeerNotTrusted("the gateway's PSK AUTH payload did not verify")
            log.info("gateway '%s' authenticated with the pre-shared key", self.idr)
            return
        cert_payloads = [
            c for c in msg.get_all(CertPayload) if c.encoding == CertEncoding.X509_SIGNATURE
        ]
        if not cert_payloads:
            raise PeerNotTrusted("the gateway sent no certificate")
        leaf = certs.validate_chain(
            cert_payloads[0].data, [c.data for c in cert_payloads[1:]],
            cfg.trust_anchors, cfg.wall_clock(), cfg.crypto_policy,
        )
        certs.check_identity(leaf, cfg.remote_id)
        if not certs.identity_matches(leaf, self.idr.id_type, self.idr.data):
            raise PeerNotTrusted(f"the gateway's identity '{self.idr}' is not in its certificate")
        pubkey.verify(
            leaf.public_key(), auth.method, auth.data, octets,
            policy=cfg.crypto_policy, cert=leaf,
        )
        self.peer_cert = leaf
        log.info(
            "gateway '%s' authenticated with its certificate (%s)",
            self.idr, leaf.subject.rfc4514_string(),
        )
