"""A throw-away test PKI made with strongSwan's `pki` tool (and openssl for PKCS#12).

Layout of what `TestPKI.create(dir)` makes:
  ca             the lab CA (RSA 3072)
  gateway        vpn.example.com + the gateway's IPs, serverAuth + ikeIntermediate
  gateway_other  same CA, but SAN other.example.com only (identity mismatch)
  alice          RSA 2048 client certificate, SAN alice@example.com (+ PKCS#12)
  bob            ECDSA P-256 client certificate, SAN bob@example.com (+ PKCS#12)
  evil_ca        an unrelated CA (ECDSA P-256)
  evil_gateway   vpn.example.com, issued by evil_ca
"""

from __future__ import annotations

import base64
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

P12_PASSPHRASE = "lab-p12-secret"
GATEWAY_ID = "vpn.example.com"
GATEWAY_IPS = ("192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.4", "192.0.2.5", "192.0.2.6")


def _run(argv: Sequence[str], stdin: bytes | None = None) -> bytes:
    proc = subprocess.run(list(argv), input=stdin, capture_output=True, timeout=60)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {proc.stderr.decode(errors='replace')}")
    return proc.stdout


@dataclass(frozen=True)
class Credential:
    """A certificate with its private key (and, for clients, a PKCS#12 bundle)."""

    name: str
    cert_path: Path  # PEM
    key_path: Path  # PEM
    cert_der: bytes
    p12_path: Path | None = None

    @property
    def cert_pem(self) -> bytes:
        return self.cert_path.read_bytes()

    @property
    def key_pem(self) -> bytes:
        return self.key_path.read_bytes()

    @property
    def cert_b64(self) -> str:
        return base64.b64encode(self.cert_der).decode()

    @property
    def p12_bytes(self) -> bytes:
        if self.p12_path is None:
            raise ValueError(f"{self.name} has no PKCS#12 bundle")
        return self.p12_path.read_bytes()

    @property
    def p12_b64(self) -> str:
        return base64.b64encode(self.p12_bytes).decode()


class TestPKI:
    __test__ = False  # not a pytest test class despite the name

    def __init__(self, directory: Path) -> None:
        self.dir = Path(directory)
        self.p12_passphrase = P12_PASSPHRASE
        self.ca: Credential
        self.gateway: Credential
        self.gateway_other: Credential
        self.alice: Credential
        self.bob: Credential
        self.evil_ca: Credential
        self.evil_gateway: Credential

    @classmethod
    def create(cls, directory: Path) -> TestPKI:
        pki = cls(directory)
        pki.dir.mkdir(parents=True, exist_ok=True)
        pki.ca = pki._self_signed("ca", "rsa", 3072, "C=CH, O=vpnclient lab, CN=vpnclient Lab CA")
        gw_sans = [GATEWAY_ID, *GATEWAY_IPS]
        pki.gateway = pki._issue(
            "gateway", pki.ca, "rsa", 2048, f"C=CH, O=vpnclient lab, CN={GATEWAY_ID}",
            gw_sans, ["serverAuth", "ikeIntermediate"],
        )
        pki.gateway_other = pki._issue(
            "gateway-other", pki.ca, "ecdsa", 256, "C=CH, O=vpnclient lab, CN=other.example.com",
            ["other.example.com"], ["serverAuth", "ikeIntermediate"],
        )
        pki.alice = pki._issue(
            "alice", pki.ca, "rsa", 2048, "C=CH, O=vpnclient lab, CN=alice@example.com",
            ["alice@example.com"], ["clientAuth"], p12=True,
        )
        pki.bob = pki._issue(
            "bob", pki.ca, "ecdsa", 256, "C=CH, O=vpnclient lab, CN=bob@example.com",
            ["bob@example.com"], ["clientAuth"], p12=True,
        )
        pki.evil_ca = pki._self_signed("evil-ca", "ecdsa", 256, "C=XX, O=Evil, CN=Evil CA")
        pki.evil_gateway = pki._issue(
            "evil-gateway", pki.evil_ca, "ecdsa", 256, f"C=XX, O=Evil, CN={GATEWAY_ID}",
            gw_sans, ["serverAuth", "ikeIntermediate"],
        )
        return pki

    def _genkey(self, name: str, keytype: str, size: int) -> Path:
        path = self.dir / f"{name}.key.pem"
        path.write_bytes(
            _run(["pki", "--gen", "--type", keytype, "--size", str(size), "--outform", "pem"])
        )
        path.chmod(0o600)
        return path

    def _credential(self, name: str, cert_pem: bytes, key: Path, p12: Path | None) -> Credential:
        cert_path = self.dir / f"{name}.crt.pem"
        cert_path.write_bytes(cert_pem)
        der = _run(["openssl", "x509", "-in", str(cert_path), "-outform", "DER"])
        return Credential(name, cert_path, key, der, p12)

    def _self_signed(self, name: str, keytype: str, size: int, dn: str) -> Credential:
        key = self._genkey(name, keytype, size)
        cert = _run([
            "pki", "--self", "--ca", "--lifetime", "3650", "--in", str(key), "--type", "priv",
            "--dn", dn, "--outform", "pem",
        ])
        return self._credential(name, cert, key, None)

    def _issue(
        self, name: str, issuer: Credential, keytype: str, size: int, dn: str,
        sans: Sequence[str], flags: Sequence[str], p12: bool = False,
        *, digest: str | None = None, ca: bool = False,
        crl_url: str | None = None, ocsp_url: str | None = None,
    ) -> Credential:
        """`digest` (e.g. "sha1") signs with that hash; `ca` sets basicConstraints CA:TRUE
        (both for crypto policy tests: certificates a gateway should not have)."""
        key = self._genkey(name, keytype, size)
        argv = [
            "pki", "--issue", "--lifetime", "1825", "--cacert", str(issuer.cert_path),
            "--cakey", str(issuer.key_path), "--in", str(key), "--type", "priv",
            "--dn", dn, "--outform", "pem",
        ]
        if digest:
            argv += ["--digest", digest]
        if ca:
            argv.append("--ca")
        if crl_url:  # CRL distribution point (RFC 5280 4.2.1.13)
            argv += ["--crl", crl_url]
        if ocsp_url:  # AIA OCSP responder (RFC 5280 4.2.2.1)
            argv += ["--ocsp", ocsp_url]
        for san in sans:
            argv += ["--san", san]
        for flag in flags:
            argv += ["--flag", flag]
        cert_pem = _run(argv)
        cred = self._credential(name, cert_pem, key, None)
        if not p12:
            return cred
        p12_path = self.dir / f"{name}.p12"
        _run([
            "openssl", "pkcs12", "-export", "-inkey", str(key), "-in", str(cred.cert_path),
            "-certfile", str(issuer.cert_path), "-name", name,
            "-passout", f"pass:{self.p12_passphrase}", "-out", str(p12_path),
        ])
        p12_path.chmod(0o600)
        return Credential(name, cred.cert_path, key, cred.cert_der, p12_path)

    def issue_gateway(self, name: str, dn: str, sans: Sequence[str], *,
                      crl_url: str | None = None, ocsp_url: str | None = None) -> Credential:
        """A further gateway certificate from the lab CA, e.g. with CDP/AIA URLs."""
        return self._issue(name, self.ca, "ecdsa", 256, dn, sans,
                           ["serverAuth", "ikeIntermediate"], crl_url=crl_url, ocsp_url=ocsp_url)

    def sign_crl(self, revoked: Sequence[Credential] = (), lifetime_days: int = 1) -> bytes:
        """A DER CRL of the lab CA (`pki --signcrl`) revoking `revoked`."""
        argv = ["pki", "--signcrl", "--cacert", str(self.ca.cert_path),
                "--cakey", str(self.ca.key_path), "--lifetime", str(lifetime_days),
                "--outform", "der"]
        for cred in revoked:
            argv += ["--cert", str(cred.cert_path)]
        return _run(argv)
