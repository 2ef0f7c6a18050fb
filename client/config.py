"""From a profile and the user's secrets to the IKE engine's configuration."""

from __future__ import annotations

from cryptography import x509
from cryptography.x509.oid import ExtensionOID

from .ikev2.auth import keys
from .ikev2.auth.eap.methods import allowed_methods
from .ikev2.auth.policy import CryptoPolicy
from .ikev2.ike_sa import IkeConfig
from .ikev2.task_manager import RetransmitPolicy
from .profile import Profile


class ConfigError(ValueError):
    """The profile or the given secrets cannot make a connection (CLI exit code 2)."""


def default_cert_identity(cert: x509.Certificate) -> str:
    """The identity a certificate proves: its first e-mail or DNS SAN, else its subject DN."""
    try:
        san = cert.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME).value
    except x509.ExtensionNotFound:
        san = None
    if san is not None:
        for kind in (x509.RFC822Name, x509.DNSName):
            names = san.get_values_for_type(kind)
            if names:
                return names[0]
    return cert.subject.rfc4514_string()


def build_ike_config(
    profile: Profile, secrets, local_ip: str, retransmit: RetransmitPolicy
) -> IkeConfig:
    ptype = profile.type
    pinned = bool(profile.remote_certs)
    if pinned:
        anchors = [c for der in profile.remote_certs for c in keys.load_certificates(der)]
    else:
        anchors = keys.load_system_trust_store()

    cfg = IkeConfig(
        ike_proposals=profile.ike_proposals,
        esp_proposals=profile.esp_proposals,
        local_id=profile.local_id or local_ip,
        remote_id=profile.remote_id,
        send_idr=profile.remote_id_explicit,
        auth_method="eap",
        trust_anchors=anchors,
        # CERTREQs name the CAs the profile pins; the whole system store would be kilobytes.
        send_certreq=profile.remote_certreq and pinned,
        rsa_pss=profile.rsa_pss,
        mobike=profile.mobike,
        retransmit=retransmit,
        ike_lifetime=profile.lifetimes["ike"],
        child_lifetime=profile.lifetimes["child"],
        dpd=profile.dpd,
        crypto_policy=CryptoPolicy(profile.crypto_relax),
    )
    if profile.split_subnets:
        cfg.remote_ts = list(profile.split_subnets)
    # remote.revocation: the engine checks the gateway's chain (client/revocation.py).
    cfg.check_revocation = profile.revocation.get("crl", True) or \
        profile.revocation.get("ocsp", True)

    if ptype == "ikev2-eap":
        _eap_password(cfg, profile, secrets)
        cfg.local_id = profile.local_id or profile.eap_id
        cfg.eap_only = profile.eap_only
    elif ptype == "ikev2-psk":
        if not secrets.password:
            raise ConfigError("local.shared_secret: no pre-shared key given")
        cfg.auth_method = "psk"
        cfg.psk = secrets.password.encode()
    elif ptype == "ikev2-cert":
        _certificate(cfg, profile, secrets)
        cfg.auth_method = "pubkey"
    elif ptype == "ikev2-eap-tls":
        cert_id = _certificate(cfg, profile, secrets)
        # The gateway's EAP-TLS server looks for the EAP identity in our certificate.
        cfg.eap_identity = profile.eap_id or cert_id
        cfg.eap_methods = allowed_methods(ptype, profile.eap_methods)
        cfg.eap_only = profile.eap_only
    elif ptype == "ikev2-cert-eap":
        # RFC 4739: the certificate round first, then EAP as local.eap_id.
        _certificate(cfg, profile, secrets)
        _eap_password(cfg, profile, secrets)
        cfg.auth_method = "pubkey"
        cfg.auth_rounds = ("pubkey", "eap")
        cfg.eap_methods = allowed_methods(ptype, profile.eap_methods)
    else:
        raise ConfigError(f"type: unknown type '{ptype}'")
    return cfg


def _eap_password(cfg: IkeConfig, profile: Profile, secrets) -> None:
    if not profile.eap_id:
        raise ConfigError("local.eap_id: missing (the EAP username)")
    if secrets.password is None:
        raise ConfigError("password: none given (use --password-stdin or a terminal)")
    cfg.eap_identity = profile.eap_id
    cfg.eap_password = secrets.password
    cfg.eap_methods = allowed_methods(profile.type, profile.eap_methods)


def _certificate(cfg: IkeConfig, profile: Profile, secrets) -> str:
    """Load local.p12 into cfg; returns the identity the certificate proves."""
    if profile.p12 is None:
        raise ConfigError("local.p12: missing (the client certificate)")
    try:
        key, cert, chain = keys.load_pkcs12(profile.p12, secrets.p12_passphrase)
    except ValueError as exc:
        raise ConfigError(f"local.p12: {exc}") from None
    cfg.private_key, cfg.certificate, cfg.cert_chain = key, cert, chain
    cert_id = default_cert_identity(cert)
    cfg.local_id = profile.local_id or cert_id
    return cert_id
