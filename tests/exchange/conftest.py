"""Fixtures for in-memory exchanges: a client IkeSA wired to the test Responder."""

from __future__ import annotations

import datetime
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from client.ikev2.constants import ProtocolId
from client.ikev2.events import Event
from client.ikev2.ike_sa import IkeConfig, IkeSA
from client.ikev2.message import parse_header
from client.ikev2.proposals import parse_proposals
from client.ikev2.task_manager import RetransmitPolicy
from tests.exchange.responder import GatewayConfig, Responder

NOW = datetime.datetime(2025, 6, 1, 12, 0, tzinfo=datetime.UTC)
CLIENT_ADDR = ("198.51.100.10", 500)
GATEWAY_ADDR = ("203.0.113.1", 500)
PSK = b"correct horse battery staple"
POLICY = RetransmitPolicy(timeout=1.0, base=2.0, tries=3)

# A filter sees one datagram on its way and returns what arrives instead: [] drops it.
Filter = Callable[[bytes], list[bytes]]


def client_config(**overrides) -> IkeConfig:
    values = dict(
        ike_proposals=parse_proposals("aes256gcm16-prfsha384-ecp384", ProtocolId.IKE),
        esp_proposals=parse_proposals("aes256gcm16", ProtocolId.ESP),
        local_id="client.example.com", remote_id="vpn.example.com", send_idr=False,
        auth_method="psk", psk=PSK, retransmit=POLICY, wall_clock=lambda: NOW,
    )
    values.update(overrides)
    for key in ("ike_proposals", "esp_proposals"):
        if isinstance(values[key], str):
            proto = ProtocolId.IKE if key == "ike_proposals" else ProtocolId.ESP
            values[key] = parse_proposals(values[key], proto)
    return IkeConfig(**values)


def make_pair(client_cfg: IkeConfig, gateway_cfg: GatewayConfig) -> tuple[IkeSA, Responder]:
    return IkeSA(client_cfg, CLIENT_ADDR, GATEWAY_ADDR), Responder(gateway_cfg)


@dataclass
class Traffic:
    """What each side emitted during a pump (before any filter)."""

    from_client: list[bytes] = field(default_factory=list)
    from_gateway: list[bytes] = field(default_factory=list)


def pump(client: IkeSA, responder: Responder, now: float, *,
         to_gateway: Filter | None = None, to_client: Filter | None = None,
         max_rounds: int = 50) -> Traffic:
    """Move datagrams both ways until both sides are quiet."""
    traffic = Traffic()
    for _ in range(max_rounds):
        moved = False
        for d in client.datagrams_to_send():
            moved = True
            traffic.from_client.append(d)
            for out in to_gateway(d) if to_gateway else [d]:
                responder.receive(out)
        for d in responder.datagrams_to_send():
            moved = True
            traffic.from_gateway.append(d)
            for out in to_client(d) if to_client else [d]:
                client.receive(out, now)
        if not moved:
            return traffic
    raise AssertionError("the peers did not stop talking")


def events(client: IkeSA) -> list[Event]:
    out = []
    while (e := client.next_event()) is not None:
        out.append(e)
    return out


def kind(data: bytes) -> tuple[int, bool, int]:
    """(exchange, is_response, message ID) of a datagram."""
    h = parse_header(data)
    return h.exchange, h.is_response, h.message_id


def drop(count: int, exchange: int | None = None) -> Filter:
    """Drop the first `count` datagrams (of `exchange`, if given), pass the rest."""
    left = [count]

    def f(d: bytes) -> list[bytes]:
        if left[0] > 0 and (exchange is None or kind(d)[0] == exchange):
            left[0] -= 1
            return []
        return [d]

    return f


# --- a tiny PKI ------------------------------------------------------------------------


def _make_cert(cn: str, issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None,
               *, ca: bool = False, sans: list[str] = ()
               ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    issuer_name, signer = (issuer[0].subject, issuer[1]) if issuer else (name, key)
    b = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer_name)
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(NOW - datetime.timedelta(days=30))
         .not_valid_after(NOW + datetime.timedelta(days=365))
         .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
             signer.public_key()), critical=False))
    if ca:
        b = b.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        b = b.add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                            critical=False)
    else:
        b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName([x509.DNSName(s) for s in sans]), False)
    return b.sign(signer, hashes.SHA256()), key


@dataclass
class Pki:
    ca: x509.Certificate
    gateway: tuple[x509.Certificate, ec.EllipticCurvePrivateKey]
    other_ca_gateway: tuple[x509.Certificate, ec.EllipticCurvePrivateKey]
    wrong_name_gateway: tuple[x509.Certificate, ec.EllipticCurvePrivateKey]


@pytest.fixture(scope="session")
def pki() -> Pki:
    ca = _make_cert("Test Root CA", None, ca=True)
    other = _make_cert("Other Root CA", None, ca=True)
    return Pki(
        ca=ca[0],
        gateway=_make_cert("vpn.example.com", ca, sans=["vpn.example.com"]),
        other_ca_gateway=_make_cert("vpn.example.com", other, sans=["vpn.example.com"]),
        wrong_name_gateway=_make_cert("other.example.com", ca, sans=["other.example.com"]),
    )


EAP_USER, EAP_PASSWORD = "alice", "s3cret-Passw0rd"


def eap_pair(pki: Pki, *, gateway_cert=None, rfc7427: bool = True, password: str = EAP_PASSWORD,
             **client_overrides) -> tuple[IkeSA, Responder]:
    cert, key = gateway_cert or pki.gateway
    client = client_config(auth_method="eap", psk=None, local_id=EAP_USER,
                           eap_password=password, trust_anchors=[pki.ca], **client_overrides)
    gateway = GatewayConfig(key=key, certs=[cert], rfc7427=rfc7427,
                            eap_users={EAP_USER: EAP_PASSWORD})
    return make_pair(client, gateway)
