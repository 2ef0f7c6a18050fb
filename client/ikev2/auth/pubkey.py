"""Public-key AUTH payloads: RFC 7296 methods 1, 9, 10, 11 and RFC 7427 method 14.

RFC 7427 AUTH data is a one-octet length, a DER AlgorithmIdentifier and the signature.
The few AlgorithmIdentifiers we need are built from their OIDs with the tiny DER writer
of auth/der.py and recognised by exact match; only RSASSA-PSS parameters need a DER walk.
"""

from collections.abc import Iterable
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from client.ikev2.auth.der import (
    INTEGER,
    NULL,
    OID,
    SEQUENCE,
    DerError,
    read_all,
    read_one,
    tlv,
)
from client.ikev2.auth.policy import STRICT, CryptoPolicy
from client.ikev2.constants import AuthMethod, HashAlgorithm
from client.ikev2.errors import LocalProtocolError, PeerNotTrusted, RemoteProtocolError

PrivateKey = (
    rsa.RSAPrivateKey
    | ec.EllipticCurvePrivateKey
    | ed25519.Ed25519PrivateKey
    | ed448.Ed448PrivateKey
)
PublicKey = (
    rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | ed448.Ed448PublicKey
)

# --- DER helpers -------------------------------------------------------------------


def _alg_id(oid: bytes, params: bytes | None = None) -> bytes:
    return tlv(SEQUENCE, tlv(OID, oid) + (params if params is not None else b""))


_DER_NULL = tlv(NULL, b"")


# --- OIDs (content octets) ----------------------------------------------------------

_PKCS1 = bytes.fromhex("2a864886f70d0101")  # 1.2.840.113549.1.1
_OID_SHA1_RSA = _PKCS1 + b"\x05"
_OID_SHA256_RSA = _PKCS1 + b"\x0b"
_OID_SHA384_RSA = _PKCS1 + b"\x0c"
_OID_SHA512_RSA = _PKCS1 + b"\x0d"
_OID_RSASSA_PSS = _PKCS1 + b"\x0a"
_OID_MGF1 = _PKCS1 + b"\x08"
_ECDSA_SHA2 = bytes.fromhex("2a8648ce3d0403")  # 1.2.840.10045.4.3
_OID_ECDSA_SHA256 = _ECDSA_SHA2 + b"\x02"
_OID_ECDSA_SHA384 = _ECDSA_SHA2 + b"\x03"
_OID_ECDSA_SHA512 = _ECDSA_SHA2 + b"\x04"
_OID_ED25519 = bytes.fromhex("2b6570")  # 1.3.101.112
_OID_ED448 = bytes.fromhex("2b6571")  # 1.3.101.113
_OID_SHA1 = bytes.fromhex("2b0e03021a")  # 1.3.14.3.2.26
_NIST_HASH = bytes.fromhex("6086480165030402")  # 2.16.840.1.101.3.4.2
_OID_SHA256 = _NIST_HASH + b"\x01"
_OID_SHA384 = _NIST_HASH + b"\x02"
_OID_SHA512 = _NIST_HASH + b"\x03"

_HASH_OIDS: dict[bytes, type[hashes.HashAlgorithm]] = {
    _OID_SHA1: hashes.SHA1,
    _OID_SHA256: hashes.SHA256,
    _OID_SHA384: hashes.SHA384,
    _OID_SHA512: hashes.SHA512,
}

_IKE_HASH: dict[int, type[hashes.HashAlgorithm]] = {
    HashAlgorithm.SHA2_256: hashes.SHA256,
    HashAlgorithm.SHA2_384: hashes.SHA384,
    HashAlgorithm.SHA2_512: hashes.SHA512,
}
_HASH_OID_OF = {cls: oid for oid, cls in _HASH_OIDS.items()}
_RSA_OID_OF = {
    hashes.SHA256: _OID_SHA256_RSA,
    hashes.SHA384: _OID_SHA384_RSA,
    hashes.SHA512: _OID_SHA512_RSA,
}
_ECDSA_OID_OF = {
    hashes.SHA256: _OID_ECDSA_SHA256,
    hashes.SHA384: _OID_ECDSA_SHA384,
    hashes.SHA512: _OID_ECDSA_SHA512,
}


def rsa_pss_algorithm_identifier(hash_cls: type[hashes.HashAlgorithm]) -> bytes:
    """id-RSASSA-PSS with hash, MGF1 over the same hash, salt length = hash length."""
    hash_alg = _alg_id(_HASH_OID_OF[hash_cls], _DER_NULL)
    params = tlv(
        SEQUENCE,
        tlv(0xA0, hash_alg)
        + tlv(0xA1, _alg_id(_OID_MGF1, hash_alg))
        + tlv(0xA2, tlv(INTEGER, bytes((hash_cls.digest_size,)))),
    )
    return _alg_id(_OID_RSASSA_PSS, params)


# --- what the peer may use ----------------------------------------------------------


@dataclass(frozen=True)
class _Scheme:
    kind: str  # "rsa", "pss", "ecdsa", "ed25519", "ed448"
    hash: type[hashes.HashAlgorithm] | None = None
    mgf_hash: type[hashes.HashAlgorithm] | None = None
    salt_length: int = 0


_FIXED_SCHEMES: dict[bytes, _Scheme] = {}
for _oid, _h in (
    (_OID_SHA1_RSA, hashes.SHA1),
    (_OID_SHA256_RSA, hashes.SHA256),
    (_OID_SHA384_RSA, hashes.SHA384),
    (_OID_SHA512_RSA, hashes.SHA512),
):
    # RFC 7427 appendix A shows NULL parameters; tolerate their omission too.
    _FIXED_SCHEMES[_alg_id(_oid, _DER_NULL)] = _Scheme("rsa", _h)
    _FIXED_SCHEMES[_alg_id(_oid)] = _Scheme("rsa", _h)
for _oid, _h in (
    (_OID_ECDSA_SHA256, hashes.SHA256),
    (_OID_ECDSA_SHA384, hashes.SHA384),
    (_OID_ECDSA_SHA512, hashes.SHA512),
):
    _FIXED_SCHEMES[_alg_id(_oid)] = _Scheme("ecdsa", _h)
_FIXED_SCHEMES[_alg_id(_OID_ED25519)] = _Scheme("ed25519")
_FIXED_SCHEMES[_alg_id(_OID_ED448)] = _Scheme("ed448")

# RFC 7296 / RFC 4754 ECDSA methods: curve, hash, coordinate length.
_CLASSIC_ECDSA: dict[int, tuple[type[ec.EllipticCurve], type[hashes.HashAlgorithm], int]] = {
    AuthMethod.ECDSA_SHA256_P256: (ec.SECP256R1, hashes.SHA256, 32),
    AuthMethod.ECDSA_SHA384_P384: (ec.SECP384R1, hashes.SHA384, 48),
    AuthMethod.ECDSA_SHA512_P521: (ec.SECP521R1, hashes.SHA512, 66),
}
_CURVE_HASH: dict[str, HashAlgorithm] = {
    "secp256r1": HashAlgorithm.SHA2_256,
    "secp384r1": HashAlgorithm.SHA2_384,
    "secp521r1": HashAlgorithm.SHA2_512,
}


def _hash_alg_param(content: bytes) -> type[hashes.HashAlgorithm]:
    """A HashAlgorithm AlgorithmIdentifier (SEQUENCE body): OID with NULL or no params."""
    items = read_all(content)
    if not items or items[0][0] != OID or len(items) > 2:
        raise DerError("malformed hash AlgorithmIdentifier")
    if len(items) == 2 and items[1] != (NULL, b""):
        raise DerError("unexpected hash algorithm parameters")
    hash_cls = _HASH_OIDS.get(items[0][1])
    if hash_cls is None:
        raise DerError("unsupported hash algorithm in RSASSA-PSS parameters")
    return hash_cls


def _parse_pss_params(params: bytes) -> _Scheme:
    """RSASSA-PSS-params (RFC 4055); absent fields take their SHA-1/MGF1-SHA-1/20 defaults."""
    hash_cls: type[hashes.HashAlgorithm] = hashes.SHA1
    mgf_hash: type[hashes.HashAlgorithm] = hashes.SHA1
    salt = 20
    last = -1
    for tag, content in read_all(read_one(params, SEQUENCE)):
        index = tag - 0xA0
        if not 0 <= index <= 3 or index <= last:
            raise DerError("unexpected field in RSASSA-PSS parameters")
        last = index
        inner = read_one(content, SEQUENCE if index < 2 else INTEGER)
        if index == 0:
            hash_cls = _hash_alg_param(inner)
        elif index == 1:
            mgf = read_all(inner)
            if len(mgf) != 2 or mgf[0] != (OID, _OID_MGF1) or mgf[1][0] != SEQUENCE:
                raise DerError("mask generation function is not MGF1")
            mgf_hash = _hash_alg_param(mgf[1][1])
        elif index == 2:
            if not inner or inner[0] & 0x80 or len(inner) > 2:
                raise DerError("invalid RSASSA-PSS salt length")
            salt = int.from_bytes(inner, "big")
        elif inner != b"\x01":
            raise DerError("RSASSA-PSS trailer field must be 1")
    return _Scheme("pss", hash_cls, mgf_hash, salt)


def _parse_algorithm_identifier(alg_id: bytes) -> _Scheme:
    fixed = _FIXED_SCHEMES.get(alg_id)
    if fixed is not None:
        return fixed
    items = read_all(read_one(alg_id, SEQUENCE))
    if len(items) == 2 and items[0] == (OID, _OID_RSASSA_PSS):
        return _parse_pss_params(tlv(*items[1]))
    raise DerError("unsupported signature AlgorithmIdentifier")


# --- SIGNATURE_HASH_ALGORITHMS notify -----------------------------------------------


def supported_hash_algorithms() -> list[int]:
    """Hash algorithms we announce in our SIGNATURE_HASH_ALGORITHMS notify."""
    return [
        HashAlgorithm.SHA2_256,
        HashAlgorithm.SHA2_384,
        HashAlgorithm.SHA2_512,
        HashAlgorithm.IDENTITY,
    ]


def encode_hash_algorithms(algorithms: Iterable[int]) -> bytes:
    return b"".join(int(a).to_bytes(2, "big") for a in algorithms)


def decode_hash_algorithms(data: bytes) -> list[int]:
    """Notification data of SIGNATURE_HASH_ALGORITHMS: 16-bit identifiers."""
    if len(data) % 2:
        raise RemoteProtocolError(f"SIGNATURE_HASH_ALGORITHMS data has odd length {len(data)}")
    return [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]


# --- signing ------------------------------------------------------------------------


def _pick_hash(peer_hashes: set[int], preferred: list[HashAlgorithm]) -> int | None:
    for alg in preferred:
        if alg in peer_hashes:
            return alg
    return None


def _wrap_7427(alg_id: bytes, signature: bytes) -> tuple[int, bytes]:
    return AuthMethod.DIGITAL_SIGNATURE, bytes((len(alg_id),)) + alg_id + signature


def sign(
    private_key: PrivateKey,
    octets: bytes,
    *,
    peer_hashes: set[int] | None,
    rsa_pss: bool = False,
) -> tuple[int, bytes]:
    """Sign the AUTH octets; return (auth method, AUTH payload data).

    RFC 7427 is used whenever the peer announced a hash we can use (it sent
    SIGNATURE_HASH_ALGORITHMS); otherwise the RFC 7296 methods: RSA_SIG is
    RSASSA-PKCS1-v1_5 with SHA-1 (as strongSwan and other implementations do),
    ECDSA methods 9/10/11 carry r || s (RFC 4754).
    """
    hashes_offered = set(peer_hashes or ())
    sha2_order = [HashAlgorithm.SHA2_256, HashAlgorithm.SHA2_384, HashAlgorithm.SHA2_512]

    if isinstance(private_key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey):
        if HashAlgorithm.IDENTITY not in hashes_offered:
            raise LocalProtocolError(
                "an Ed25519/Ed448 key needs RFC 7427 with the identity hash, "
                "which the gateway did not announce"
            )
        oid = _OID_ED25519 if isinstance(private_key, ed25519.Ed25519PrivateKey) else _OID_ED448
        return _wrap_7427(_alg_id(oid), private_key.sign(octets))

    if isinstance(private_key, rsa.RSAPrivateKey):
        chosen = _pick_hash(hashes_offered, sha2_order)
        if chosen is None:
            if rsa_pss:
                raise LocalProtocolError(
                    "RSASSA-PSS needs RFC 7427 signature authentication, "
                    "which the gateway did not announce"
                )
            sig = private_key.sign(octets, padding.PKCS1v15(), hashes.SHA1())
            return AuthMethod.RSA_SIG, sig
        hash_cls = _IKE_HASH[chosen]
        if rsa_pss:
            pss = padding.PSS(mgf=padding.MGF1(hash_cls()), salt_length=hash_cls.digest_size)
            sig = private_key.sign(octets, pss, hash_cls())
            return _wrap_7427(rsa_pss_algorithm_identifier(hash_cls), sig)
        sig = private_key.sign(octets, padding.PKCS1v15(), hash_cls())
        return _wrap_7427(_alg_id(_RSA_OID_OF[hash_cls], _DER_NULL), sig)

    if isinstance(private_key, ec.EllipticCurvePrivateKey):
        curve_hash = _CURVE_HASH.get(private_key.curve.name)
        if curve_hash is None:
            raise LocalProtocolError(f"unsupported ECDSA curve {private_key.curve.name}")
        order = [curve_hash] + [h for h in sha2_order if h != curve_hash]
        chosen = _pick_hash(hashes_offered, order)
        if chosen is not None:
            hash_cls = _IKE_HASH[chosen]
            der_sig = private_key.sign(octets, ec.ECDSA(hash_cls()))
            return _wrap_7427(_alg_id(_ECDSA_OID_OF[hash_cls]), der_sig)
        for method, (curve, hash_cls, size) in _CLASSIC_ECDSA.items():
            if isinstance(private_key.curve, curve):
                r, s = decode_dss_signature(private_key.sign(octets, ec.ECDSA(hash_cls())))
                return method, r.to_bytes(size, "big") + s.to_bytes(size, "big")
    raise LocalProtocolError(f"unsupported private key type {type(private_key).__name__}")


# --- verification -------------------------------------------------------------------


def _untrusted(reason: str) -> PeerNotTrusted:
    return PeerNotTrusted(f"AUTH signature of the gateway did not verify: {reason}")


def _verify_scheme(public_key: PublicKey, scheme: _Scheme, signature: bytes, octets: bytes) -> None:
    if scheme.kind in ("rsa", "pss"):
        if not isinstance(public_key, rsa.RSAPublicKey):
            raise _untrusted("RSA signature but the certificate holds no RSA key")
        assert scheme.hash is not None
        if scheme.kind == "rsa":
            pad: padding.AsymmetricPadding = padding.PKCS1v15()
        else:
            assert scheme.mgf_hash is not None
            max_salt = (public_key.key_size + 7) // 8 - scheme.hash.digest_size - 2
            if scheme.salt_length > max_salt:
                raise _untrusted("RSASSA-PSS salt length too large for the key")
            pad = padding.PSS(mgf=padding.MGF1(scheme.mgf_hash()), salt_length=scheme.salt_length)
        public_key.verify(signature, octets, pad, scheme.hash())
    elif scheme.kind == "ecdsa":
        if not isinstance(public_key, ec.EllipticCurvePublicKey):
            raise _untrusted("ECDSA signature but the certificate holds no EC key")
        assert scheme.hash is not None
        public_key.verify(signature, octets, ec.ECDSA(scheme.hash()))
    elif scheme.kind == "ed25519":
        if not isinstance(public_key, ed25519.Ed25519PublicKey):
            raise _untrusted("Ed25519 signature but the certificate holds no Ed25519 key")
        public_key.verify(signature, octets)
    else:
        if not isinstance(public_key, ed448.Ed448PublicKey):
            raise _untrusted("Ed448 signature but the certificate holds no Ed448 key")
        public_key.verify(signature, octets)


def verify(
    public_key: PublicKey, method: int, auth_data: bytes, octets: bytes,
    *, policy: CryptoPolicy = STRICT, cert: x509.Certificate | None = None,
) -> None:
    """Verify the gateway's AUTH payload; raise PeerNotTrusted on any mismatch.

    The crypto `policy` refuses SHA-1 (RFC 7296's RSA_SIG is SHA-1 by definition) before
    the signature is checked; `cert` (the gateway's) names it in that refusal.
    """
    try:
        if method == AuthMethod.RSA_SIG:
            policy.check_auth_hash("sha1", cert, " (RFC 7296 auth method 1)")
            _verify_scheme(public_key, _Scheme("rsa", hashes.SHA1), auth_data, octets)
        elif method in _CLASSIC_ECDSA:
            curve, hash_cls, size = _CLASSIC_ECDSA[method]
            if not isinstance(public_key, ec.EllipticCurvePublicKey) or not isinstance(
                public_key.curve, curve
            ):
                raise _untrusted(f"AUTH method {method} does not match the certificate's key")
            if len(auth_data) != 2 * size:
                raise _untrusted(f"ECDSA signature of {len(auth_data)} octets, need {2 * size}")
            r = int.from_bytes(auth_data[:size], "big")
            s = int.from_bytes(auth_data[size:], "big")
            public_key.verify(encode_dss_signature(r, s), octets, ec.ECDSA(hash_cls()))
        elif method == AuthMethod.DIGITAL_SIGNATURE:
            if not auth_data or len(auth_data) < 1 + auth_data[0] + 1:
                raise _untrusted("RFC 7427 AUTH data is truncated")
            alg_len = auth_data[0]
            try:
                scheme = _parse_algorithm_identifier(auth_data[1 : 1 + alg_len])
            except DerError as exc:
                raise _untrusted(str(exc)) from None
            for hash_cls in (scheme.hash, scheme.mgf_hash):
                if hash_cls is not None:
                    policy.check_auth_hash(hash_cls.name, cert)
            _verify_scheme(public_key, scheme, auth_data[1 + alg_len :], octets)
        else:
            raise _untrusted(f"unsupported AUTH method {method}")
    except InvalidSignature:
        raise _untrusted("signature mismatch") from None
    except ValueError as exc:  # e.g. a signature of the wrong size for the key
        raise _untrusted(f"malformed signature ({exc})") from None
