"""The crypto policy for what the gateway shows us: one table of rules, each relaxable by name.

Sans-I/O: the checks take parsed certificates, keys and hash names. A refusal is a
CryptoPolicyRefused (a PeerNotTrusted: CLI exit code 4) that names the rule and the
certificate. A profile may relax rules by name (`remote.crypto-policy.relax`) for a
legacy gateway; each time a relaxed rule lets something through, a warning is logged.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import dsa, ec, rsa

from client.ikev2.errors import PeerNotTrusted

log = logging.getLogger(__name__)

# NIST SP 800-131A: RSA below 2048 bits is disallowed for signatures since 2014.
MIN_RSA_BITS = 2048
# For keys the client itself creates (112 -> 128-bit security). The client creates none
# today (certificates and keys come in the profile's PKCS#12): recorded for when it does.
MIN_RSA_BITS_NEW_KEYS = 3072
# P-256 and larger: smaller curves (P-192, P-224) are below 128-bit security.
MIN_EC_BITS = 256


@dataclass(frozen=True)
class Rule:
    name: str  # as the profile spells it in remote.crypto-policy.relax
    demand: str  # what the rule asks, for error messages and docs


MIN_RSA = Rule("min-rsa-bits", f"RSA keys of at least {MIN_RSA_BITS} bits")
MIN_EC = Rule("min-ec-curve", f"EC keys on a curve of at least {MIN_EC_BITS} bits (P-256)")
NO_SHA1 = Rule("sha1-signatures", "no SHA-1 in the gateway's AUTH signature or certificates")
LEAF_CA = Rule("leaf-ca", "the gateway's own certificate is no CA (basicConstraints CA:TRUE)")
LEAF_KU = Rule(
    "leaf-key-usage", "a keyUsage on the gateway's certificate includes digitalSignature"
)

RULES: dict[str, Rule] = {r.name: r for r in (MIN_RSA, MIN_EC, NO_SHA1, LEAF_CA, LEAF_KU)}
RELAX_KEY = "remote.crypto-policy.relax"


class CryptoPolicyRefused(PeerNotTrusted):
    """The gateway showed something the crypto policy refuses; `rule` names the rule."""

    def __init__(self, rule: Rule, subject: str, detail: str) -> None:
        super().__init__(
            f"crypto policy: {detail} in the certificate '{subject}' breaks rule "
            f"'{rule.name}' ({rule.demand}); an administrator can relax it for a legacy "
            f"gateway with {RELAX_KEY}"
        )
        self.rule = rule
        self.subject = subject

    def __reduce__(self):  # picklable like the other engine errors
        return (_rebuild, (self.args[0], self.rule.name, self.subject))


def _rebuild(message: str, rule: str, subject: str) -> CryptoPolicyRefused:
    exc = CryptoPolicyRefused.__new__(CryptoPolicyRefused)
    PeerNotTrusted.__init__(exc, message)
    exc.rule, exc.subject = RULES[rule], subject
    return exc


# Of the gateway's subject DN in an error or log line: it is the gateway's text.
MAX_SUBJECT_CHARS = 200


def subject_of(cert: x509.Certificate) -> str:
    try:
        text = cert.subject.rfc4514_string() or "(empty subject)"
    except ValueError:
        return "(unreadable subject)"
    return text if len(text) <= MAX_SUBJECT_CHARS else text[:MAX_SUBJECT_CHARS] + "..."


class CryptoPolicy:
    """The rules in force: all of RULES but those the profile relaxed."""

    def __init__(self, relax: Iterable[str] = ()) -> None:
        relaxed = frozenset(relax)
        unknown = relaxed - RULES.keys()
        if unknown:
            raise ValueError(f"unknown crypto policy rule(s): {', '.join(sorted(unknown))}")
        self.relaxed = relaxed

    def warn_relaxed(self) -> None:
        """Called at each connect: a relaxed policy is never silent."""
        if self.relaxed:
            log.warning(
                "crypto policy relaxed for this gateway by %s: %s",
                RELAX_KEY, ", ".join(sorted(self.relaxed)),
            )

    def _breach(self, rule: Rule, subject: str, detail: str) -> None:
        if rule.name in self.relaxed:
            log.warning(
                "crypto policy: accepting %s in the certificate '%s' (rule '%s' relaxed)",
                detail, subject, rule.name,
            )
            return
        raise CryptoPolicyRefused(rule, subject, detail)

    # -- the checks --------------------------------------------------------------------
    def check_key(self, cert: x509.Certificate) -> None:
        """The certificate's public key is strong enough."""
        try:
            key = cert.public_key()
        except Exception:  # malformed or unsupported (UnsupportedAlgorithm): path validation
            return  # refuses it, and a pinned certificate was the admin's choice
        if isinstance(key, rsa.RSAPublicKey | dsa.DSAPublicKey):
            if key.key_size < MIN_RSA_BITS:
                kind = "RSA" if isinstance(key, rsa.RSAPublicKey) else "DSA"
                self._breach(MIN_RSA, subject_of(cert), f"a {key.key_size}-bit {kind} key")
        elif isinstance(key, ec.EllipticCurvePublicKey) and key.curve.key_size < MIN_EC_BITS:
            self._breach(MIN_EC, subject_of(cert), f"an EC key on {key.curve.name}")

    def check_signed_with(self, cert: x509.Certificate) -> None:
        """The issuer's signature on the certificate uses no SHA-1 (nor MD5)."""
        try:
            hash_alg = cert.signature_hash_algorithm
        except Exception:  # an unknown algorithm: path validation refuses it
            return
        if hash_alg is not None and hash_alg.name in ("sha1", "md5"):
            self._breach(NO_SHA1, subject_of(cert), f"a {hash_alg.name.upper()} signature")

    def check_auth_hash(
        self, hash_name: str, cert: x509.Certificate | None, how: str = ""
    ) -> None:
        """The gateway's AUTH signature (RFC 7296 method 1 is RSA with SHA-1)."""
        if hash_name.lower() in ("sha1", "sha-1", "md5"):
            subject = subject_of(cert) if cert is not None else "(unknown)"
            detail = f"an AUTH signature with {hash_name.upper()}{how} for the key"
            self._breach(NO_SHA1, subject, detail)

    def check_leaf(self, cert: x509.Certificate) -> None:
        """What the gateway's own certificate must be: no CA, a signing key."""
        subject = subject_of(cert)
        try:
            extensions = cert.extensions
        except ValueError:  # malformed extensions: path validation refuses the certificate
            return
        try:
            bc = extensions.get_extension_for_class(x509.BasicConstraints).value
        except x509.ExtensionNotFound:
            bc = None
        if bc is not None and bc.ca:
            self._breach(LEAF_CA, subject, "basicConstraints CA:TRUE")
        try:
            ku = extensions.get_extension_for_class(x509.KeyUsage).value
        except x509.ExtensionNotFound:
            ku = None
        if ku is not None and not ku.digital_signature:
            self._breach(LEAF_KU, subject, "a keyUsage without digitalSignature")

    def check_gateway_cert(self, leaf: x509.Certificate) -> None:
        """Everything about the gateway's own certificate, before path validation."""
        self.check_leaf(leaf)
        self.check_key(leaf)
        self.check_signed_with(leaf)

    def check_verified_chain(self, chain: list[x509.Certificate]) -> None:
        """After path validation: leaf first, the trust anchor last. Every key counts;
        the anchor's self-signature does not (it is trusted as itself)."""
        for index, cert in enumerate(chain):
            self.check_key(cert)
            if 0 < index < len(chain) - 1:
                self.check_signed_with(cert)

    def check_pinned(self, cert: x509.Certificate) -> None:
        """A pinned gateway certificate (remote.cert) is trusted as itself: its
        self-signature and CA flag do not matter, only its key."""
        self.check_key(cert)

STRICT = CryptoPolicy()
