"""Real gateway messages to mutate: recorded once from the in-memory responder.

Every datagram the gateway sends on its way through connect (PSK; certificate + EAP;
fragmented), liveness, rekeying both ways, MOBIKE, Delete and redirect is kept as a
Stage: the client just before the message arrived (deep-copied, so each input starts
from the same state), the message with its SK/SKF body decrypted, and the gateway keys
that re-seal a mutated copy so that it passes the ICV. Key exchanges, certificates and
random numbers are derived from fixed seeds so that a saved input replays the same way.
"""

from __future__ import annotations

import copy
import copyreg
import datetime
import hashlib
import random
import struct
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from unittest import mock

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, x448, x25519
from cryptography.hazmat.primitives.ciphers import aead
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from client.ikev2 import crypto
from client.ikev2.constants import IKE_HEADER_LEN, ExchangeType, PayloadType, ProtocolId
from client.ikev2.errors import IkeError
from client.ikev2.ike_sa import IkeSA
from client.ikev2.message import SkContext, parse_header
from client.ikev2.payloads import DeletePayload
from tests.exchange.conftest import CLIENT_ADDR, GATEWAY_ADDR, NOW, PSK, client_config, pump
from tests.exchange.mobike_responder import MobikeResponder
from tests.exchange.responder import GatewayConfig

SK_HEADER_LEN = 4
SKF_HEADER_LEN = 8
NEW_PATH = ("192.0.2.77", 40001)
EAP_USER, EAP_PASSWORD = "alice", "s3cret-Passw0rd"
# Where the client's own key exchanges come from (each module imported the function).
_KEX_USERS = ("client.ikev2.tasks.ike_init", "client.ikev2.tasks.ike_rekey",
              "client.ikev2.tasks.rekeying", "client.ikev2.tasks.child_rekey",
              "tests.exchange.responder")


_SHARED: dict[int, object] = {}


def _shared(key: int) -> object:
    return _SHARED[key]


def _share(obj: object) -> tuple[Callable[[int], object], tuple[int]]:
    _SHARED[id(obj)] = obj
    return _shared, (id(obj),)


def _share_on_copy() -> None:
    """Key and cipher objects cannot be copied; a snapshot shares them (they are immutable)."""
    ecp = ec.derive_private_key(1, ec.SECP256R1())
    for cls in {type(ecp), type(ecp.public_key()), aead.AESGCM, aead.ChaCha20Poly1305,
                type(x25519.X25519PrivateKey.generate()), type(x448.X448PrivateKey.generate()),
                type(hashlib.sha256()), type(hashlib.new("sha1"))}:
        copyreg.pickle(cls, _share)


def snapshot(client: IkeSA) -> IkeSA:
    """An independent copy of `client` to feed one input to."""
    return copy.deepcopy(client, {id(client.config): client.config})


@dataclass
class Stage:
    name: str
    client: IkeSA  # just before the gateway's message arrived
    now: float
    plain: list[bytes]  # the datagram(s), SK/SKF bodies replaced by their plaintext
    sk: SkContext | None  # the gateway's keys (None: IKE_SA_INIT, unprotected)


@contextmanager
def deterministic_keys(seed: bytes = b"fuzz") -> Iterator[None]:
    """Key exchanges whose private values follow from `seed` (both sides)."""
    real = crypto.new_key_exchange
    counter = [0]

    def fixed(group: int, private_value: bytes | None = None) -> crypto.KeyExchange:
        counter[0] += 1
        value = hashlib.sha256(seed + counter[0].to_bytes(4)).digest()
        return real(group, private_value or value)

    with ExitStack() as stack:
        for name in _KEX_USERS:
            stack.enter_context(mock.patch(f"{name}.new_key_exchange", fixed))
        yield


def seeded_rng(label: str) -> Callable[[int], bytes]:
    return random.Random(label).randbytes


def _cert(cn: str, issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None,
          n: int, *, ca: bool = False) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.derive_private_key(1000 + n, ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    issuer_name, signer = (issuer[0].subject, issuer[1]) if issuer else (name, key)
    b = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer_name)
         .public_key(key.public_key()).serial_number(n)
         .not_valid_before(NOW - datetime.timedelta(days=30))
         .not_valid_after(NOW + datetime.timedelta(days=365)))
    if ca:
        b = b.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    else:
        b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
        b = b.add_extension(x509.SubjectAlternativeName([x509.DNSName(cn)]), False)
    return b.sign(signer, hashes.SHA256()), key


def inverse(sk: SkContext) -> SkContext:
    """The same keys seen from the other end."""
    return SkContext(sk.cipher, sk.encr_in, sk.integ_in, sk.encr_out, sk.integ_out)


def open_datagram(data: bytes, sk: SkContext) -> bytes:
    """The gateway's datagram with its SK/SKF body replaced by the plaintext."""
    h = parse_header(data)
    hlen = IKE_HEADER_LEN + (SKF_HEADER_LEN if h.next_payload == PayloadType.SKF
                             else SK_HEADER_LEN)
    plain = sk.cipher.open(sk.encr_out, sk.integ_out, data[:hlen], data[hlen:])
    return data[:hlen] + plain


def seal(plain: bytes, sk: SkContext | None) -> bytes:
    """`plain` as a datagram: lengths set, the SK/SKF body encrypted with the gateway's keys."""
    header = bytearray(plain[:IKE_HEADER_LEN])
    if len(header) < IKE_HEADER_LEN:
        return bytes(plain)
    np = header[16]
    if sk is None or np not in (PayloadType.SK, PayloadType.SKF):
        header[24:28] = struct.pack("!I", len(plain))
        return bytes(header) + plain[IKE_HEADER_LEN:]
    hlen = IKE_HEADER_LEN + (SKF_HEADER_LEN if np == PayloadType.SKF else SK_HEADER_LEN)
    generic = bytearray(plain[IKE_HEADER_LEN:hlen].ljust(hlen - IKE_HEADER_LEN, b"\0"))
    inner = plain[hlen:]
    cipher = sk.cipher
    plen = hlen - IKE_HEADER_LEN + cipher.body_length(len(inner))
    generic[2:4] = struct.pack("!H", plen & 0xFFFF)
    header[24:28] = struct.pack("!I", IKE_HEADER_LEN + plen)
    aad = bytes(header + generic)
    return aad + cipher.seal(sk.encr_out, sk.integ_out, bytes(cipher.iv_size), aad, inner)


class _Recorder:
    """A pump filter that keeps a snapshot of the client before each gateway datagram."""

    def __init__(self, scenario: str, client: IkeSA, gw: MobikeResponder) -> None:
        self.scenario, self.client, self.gw = scenario, client, gw
        self.label, self.now = "", 0.0
        self.seen: list[tuple[str, IkeSA, float, bytes, list[SkContext]]] = []
        self.sealed_with: dict[bytes, SkContext] = {}  # datagram -> the keys that sealed it
        encode = gw._encode

        def recording_encode(msg):  # type: ignore[no-untyped-def]
            out = encode(msg)
            for d in out:
                self.sealed_with[d] = gw.sk
            return out

        gw._encode = recording_encode  # type: ignore[method-assign]

    def __call__(self, d: bytes) -> list[bytes]:
        gw = self.gw
        keys = [k for k in [self.sealed_with.get(d), gw.sk, *(o["sk"] for o in gw.old_sas)]
                if k is not None]
        self.seen.append((self.label, snapshot(self.client), self.now, d, keys))
        return [d]

    def pump(self, label: str, now: float) -> None:
        self.label, self.now = label, now
        pump(self.client, self.gw, now, to_client=self)

    def stages(self) -> list[Stage]:
        out: list[Stage] = []
        for label, client, now, d, keys in self.seen:
            h = parse_header(d)
            plain, sk = d, None
            if h.next_payload in (PayloadType.SK, PayloadType.SKF):
                for k in keys:
                    try:
                        plain, sk = open_datagram(d, k), k
                        break
                    except IkeError:
                        continue
                else:
                    raise AssertionError(f"no gateway key opens a {label} datagram")
            if h.next_payload == PayloadType.SKF and out and out[-1].name.startswith(
                    f"{self.scenario}.{label}.") and out[-1].plain[0][16] == PayloadType.SKF \
                    and out[-1].plain[0][20:24] == d[20:24] and out[-1].sk is sk:
                out[-1].plain.append(plain)  # the next fragment of the same message
                continue
            kind = "resp" if h.is_response else "req"
            try:
                exchange = ExchangeType(h.exchange).name
            except ValueError:
                exchange = str(h.exchange)
            name = f"{self.scenario}.{label}.{exchange}.{kind}{h.message_id}"
            if h.next_payload == PayloadType.SKF:
                name += ".frag"
            taken = {s.name for s in out}
            base, n = name, 2
            while name in taken:
                name, n = f"{base}.{n}", n + 1
            out.append(Stage(name, client, now, [plain], sk))
        return out


def _pair(scenario: str, gateway: GatewayConfig, **client_cfg) -> _Recorder:
    client = IkeSA(client_config(**client_cfg), CLIENT_ADDR, GATEWAY_ADDR,
                   rng=seeded_rng(f"client:{scenario}"))
    gw = MobikeResponder(gateway, rng=seeded_rng(f"gateway:{scenario}"))
    rec = _Recorder(scenario, client, gw)
    client.initiate(0.0)
    rec.pump("connect", 0.0)
    while client.next_event() is not None:
        pass
    return rec


def _timers(rec: _Recorder, until: float) -> None:
    for _ in range(100):
        t = rec.client.get_timer()
        if t is None or t > until:
            return
        rec.client.handle_timer(t)
        rec.pump("timer", t)


def _psk_life() -> list[Stage]:
    rec = _pair("psk", GatewayConfig(psk=PSK), child_lifetime=100.0, ike_lifetime=300.0,
                dpd=30.0)
    gw = rec.gw
    gw.liveness()
    rec.pump("dpd", 1.0)
    gw.rekey_child()
    rec.pump("gwrekeychild", 2.0)
    gw.rekey_ike()
    rec.pump("gwrekeyike", 3.0)
    rec.client.update_addresses(NEW_PATH, 4.0, ["203.0.113.9", "2001:db8:5::9"])
    rec.pump("mobike", 4.0)
    _timers(rec, 400.0)  # our DPD, CHILD_SA and IKE SA rekeys, their Deletes
    rec.client.delete(500.0)
    rec.pump("delete", 500.0)
    return rec.stages()


def _psk_terminal() -> list[Stage]:
    """Requests after which the SA is gone: each on its own connection."""
    out = []
    rec = _pair("redir", GatewayConfig(psk=PSK))
    rec.gw.redirect("198.51.100.77")
    rec.pump("redirect", 1.0)
    out += [s for s in rec.stages() if ".redirect." in s.name]
    rec = _pair("gwdelete", GatewayConfig(psk=PSK))
    rec.gw.request([DeletePayload(ProtocolId.IKE, [])])
    rec.pump("deleteike", 1.0)
    out += [s for s in rec.stages() if ".deleteike." in s.name]
    rec = _pair("gwdelchild", GatewayConfig(psk=PSK))
    rec.gw.delete_child()
    rec.pump("deletechild", 1.0)
    out += [s for s in rec.stages() if ".deletechild." in s.name]
    return out


def _eap(fragments: bool) -> list[Stage]:
    ca = _cert("Fuzz Root CA", None, 1, ca=True)
    gateway = _cert("vpn.example.com", ca, 2)
    name = "eapfrag" if fragments else "eap"
    gw_cfg = GatewayConfig(key=gateway[1], certs=[gateway[0]],
                           eap_users={EAP_USER: EAP_PASSWORD}, fragmentation=fragments,
                           fragment_max=400)
    rec = _pair(name, gw_cfg, auth_method="eap", psk=None, local_id=EAP_USER,
                eap_password=EAP_PASSWORD, trust_anchors=[ca[0]])
    stages = rec.stages()
    return [s for s in stages if ".frag" in s.name] if fragments else stages


def _psk_fragments() -> list[Stage]:
    rec = _pair("pskfrag", GatewayConfig(psk=PSK, fragmentation=True, fragment_max=160))
    return [s for s in rec.stages() if ".frag" in s.name]


def build_stages() -> list[Stage]:
    _share_on_copy()
    with deterministic_keys():
        stages = _psk_life() + _psk_terminal() + _eap(False) + _eap(True) + _psk_fragments()
    # Our DPDs repeat one exchange many times over: one of each kind and size is enough.
    seen, out = set(), []
    for s in stages:
        key = (s.name.rsplit(".", 1)[0] if s.name[-1].isdigit() and s.name.count(".") > 3
               else s.name, s.name.split(".")[2], [len(p) for p in s.plain])
        kind = (key[0].split(".")[1], key[1], s.name.split(".")[3][:3], str(key[2]))
        if kind in seen:
            continue
        seen.add(kind)
        out.append(s)
    return out
