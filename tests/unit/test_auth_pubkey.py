"""Public-key AUTH: RFC 7296 methods 1/9/10/11 and RFC 7427 digital signatures."""

import datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.x509.oid import NameOID

from client.ikev2.auth import pubkey
from client.ikev2.auth.policy import CryptoPolicy, CryptoPolicyRefused
from client.ikev2.constants import AuthMethod, HashAlgorithm
from client.ikev2.errors import LocalProtocolError, PeerNotTrusted, RemoteProtocolError

OCTETS = b"IKE_SA_INIT message | nonce | prf(SK_p, ID)"
ALL_HASHES = {2, 3, 4, 5}
SHA1_OK = CryptoPolicy(["sha1-signatures"])

_RSA = rsa.generate_private_key(public_exponent=65537, key_size=2048)
_P256 = ec.generate_private_key(ec.SECP256R1())
_P384 = ec.generate_private_key(ec.SECP384R1())
_P521 = ec.generate_private_key(ec.SECP521R1())


def split_7427(data: bytes) -> tuple[bytes, bytes]:
    n = data[0]
    return data[1 : 1 + n], data[1 + n :]


# --- AlgorithmIdentifiers against RFC 7427 appendix A and OpenSSL's encodings --------

RFC7427_SHA256_RSA = bytes.fromhex("300d06092a864886f70d01010b0500")
RFC7427_SHA384_RSA = bytes.fromhex("300d06092a864886f70d01010c0500")
RFC7427_SHA512_RSA = bytes.fromhex("300d06092a864886f70d01010d0500")
RFC7427_ECDSA_SHA256 = bytes.fromhex("300a06082a8648ce3d040302")
RFC7427_ECDSA_SHA384 = bytes.fromhex("300a06082a8648ce3d040303")
RFC7427_ECDSA_SHA512 = bytes.fromhex("300a06082a8648ce3d040304")
RFC8420_ED25519 = bytes.fromhex("300506032b6570")


def _cert_signature_alg_id(key, **kwargs) -> bytes:
    """The signatureAlgorithm AlgorithmIdentifier OpenSSL writes into a certificate."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")])
    now = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, **kwargs)
    )
    der = cert.public_bytes(serialization.Encoding.DER)
    tbs = cert.tbs_certificate_bytes
    rest = der[der.index(tbs) + len(tbs) :]
    return rest[: 2 + rest[1]]  # a short-form SEQUENCE follows the TBSCertificate


@pytest.mark.parametrize(
    ("hash_id", "expected"),
    [(2, RFC7427_SHA256_RSA), (3, RFC7427_SHA384_RSA), (4, RFC7427_SHA512_RSA)],
)
def test_rsa_pkcs1_alg_id_matches_rfc7427(hash_id: int, expected: bytes) -> None:
    method, data = pubkey.sign(_RSA, OCTETS, peer_hashes={hash_id})
    assert method == AuthMethod.DIGITAL_SIGNATURE
    assert split_7427(data)[0] == expected


def test_fixed_alg_ids_match_openssl_certificates() -> None:
    assert _cert_signature_alg_id(_RSA, algorithm=hashes.SHA256()) == RFC7427_SHA256_RSA
    assert _cert_signature_alg_id(_P384, algorithm=hashes.SHA384()) == RFC7427_ECDSA_SHA384
    key = ed25519.Ed25519PrivateKey.generate()
    assert _cert_signature_alg_id(key, algorithm=None) == RFC8420_ED25519


@pytest.mark.parametrize("hash_cls", [hashes.SHA256, hashes.SHA384, hashes.SHA512])
def test_pss_alg_id_matches_openssl_encoding(hash_cls) -> None:
    pss = padding.PSS(mgf=padding.MGF1(hash_cls()), salt_length=hash_cls.digest_size)
    expected = _cert_signature_alg_id(_RSA, algorithm=hash_cls(), rsa_padding=pss)
    assert pubkey.rsa_pss_algorithm_identifier(hash_cls) == expected


def test_pss_sha256_alg_id_bytes() -> None:
    # id-RSASSA-PSS, SHA-256, MGF1-SHA-256, salt 32 (RFC 7427 A.4.3 without trailerField)
    assert pubkey.rsa_pss_algorithm_identifier(hashes.SHA256) == bytes.fromhex(
        "304106092a864886f70d01010a3034a00f300d06096086480165030402010500"
        "a11c301a06092a864886f70d010108300d06096086480165030402010500a203020120"
    )


# --- sign/verify round trips ----------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "expected_method", "size"),
    [
        (_P256, AuthMethod.ECDSA_SHA256_P256, 64),
        (_P384, AuthMethod.ECDSA_SHA384_P384, 96),
        (_P521, AuthMethod.ECDSA_SHA512_P521, 132),
    ],
)
def test_classic_ecdsa_without_7427(key, expected_method: int, size: int) -> None:
    method, data = pubkey.sign(key, OCTETS, peer_hashes=None)
    assert method == expected_method and len(data) == size
    pubkey.verify(key.public_key(), method, data, OCTETS)


def test_classic_rsa_is_pkcs1v15_sha1() -> None:
    method, data = pubkey.sign(_RSA, OCTETS, peer_hashes=set())
    assert method == AuthMethod.RSA_SIG
    _RSA.public_key().verify(data, OCTETS, padding.PKCS1v15(), hashes.SHA1())
    # Verified only where the profile relaxed the crypto policy (auth/policy.py).
    pubkey.verify(_RSA.public_key(), method, data, OCTETS, policy=SHA1_OK)
    with pytest.raises(CryptoPolicyRefused, match="'sha1-signatures'"):
        pubkey.verify(_RSA.public_key(), method, data, OCTETS)


@pytest.mark.parametrize(
    ("key", "alg_id"),
    [(_P256, RFC7427_ECDSA_SHA256), (_P384, RFC7427_ECDSA_SHA384), (_P521, RFC7427_ECDSA_SHA512)],
)
def test_7427_ecdsa_uses_curve_hash_and_der_signature(key, alg_id: bytes) -> None:
    method, data = pubkey.sign(key, OCTETS, peer_hashes=ALL_HASHES)
    got_alg, sig = split_7427(data)
    assert method == AuthMethod.DIGITAL_SIGNATURE and got_alg == alg_id
    assert sig[0] == 0x30  # DER ECDSA-Sig-Value
    pubkey.verify(key.public_key(), method, data, OCTETS)


def test_7427_ecdsa_falls_back_to_another_offered_hash() -> None:
    method, data = pubkey.sign(_P256, OCTETS, peer_hashes={HashAlgorithm.SHA2_512})
    assert split_7427(data)[0] == RFC7427_ECDSA_SHA512
    pubkey.verify(_P256.public_key(), method, data, OCTETS)


def test_7427_rsa_pkcs1_round_trip() -> None:
    method, data = pubkey.sign(_RSA, OCTETS, peer_hashes=ALL_HASHES)
    assert split_7427(data)[0] == RFC7427_SHA256_RSA
    pubkey.verify(_RSA.public_key(), method, data, OCTETS)


@pytest.mark.parametrize("hash_id", [2, 3, 4])
def test_7427_rsa_pss_round_trip(hash_id: int) -> None:
    method, data = pubkey.sign(_RSA, OCTETS, peer_hashes={hash_id}, rsa_pss=True)
    assert method == AuthMethod.DIGITAL_SIGNATURE
    pubkey.verify(_RSA.public_key(), method, data, OCTETS)


def test_rsa_pss_without_7427_is_refused() -> None:
    with pytest.raises(LocalProtocolError):
        pubkey.sign(_RSA, OCTETS, peer_hashes=None, rsa_pss=True)


@pytest.mark.parametrize("key_cls", [ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey])
def test_eddsa_needs_identity_hash(key_cls) -> None:
    key = key_cls.generate()
    with pytest.raises(LocalProtocolError):
        pubkey.sign(key, OCTETS, peer_hashes={2})
    method, data = pubkey.sign(key, OCTETS, peer_hashes={5})
    pubkey.verify(key.public_key(), method, data, OCTETS)


def test_verify_pss_with_nondefault_salt_and_sha1_defaults() -> None:
    # Parameters written by hand: SHA-384, MGF1-SHA-384, salt 20 (trailerField present).
    sha384 = bytes.fromhex("300d06096086480165030402020500")
    params = (
        b"\xa0"
        + bytes((len(sha384),))
        + sha384
        + b"\xa1\x1c\x30\x1a\x06\x09\x2a\x86\x48\x86\xf7\x0d\x01\x01\x08"
        + sha384
        + b"\xa2\x03\x02\x01\x14"
        + b"\xa3\x03\x02\x01\x01"
    )
    alg = b"\x06\x09\x2a\x86\x48\x86\xf7\x0d\x01\x01\x0a" + b"\x30" + bytes((len(params),)) + params
    alg = b"\x30" + bytes((len(alg),)) + alg
    sig = _RSA.sign(OCTETS, padding.PSS(padding.MGF1(hashes.SHA384()), 20), hashes.SHA384())
    data = bytes((len(alg),)) + alg + sig
    pubkey.verify(_RSA.public_key(), 14, data, OCTETS)
    # Empty RSASSA-PSS-params: SHA-1, MGF1-SHA-1, salt 20.
    alg = bytes.fromhex("300d06092a864886f70d01010a3000")
    sig = _RSA.sign(OCTETS, padding.PSS(padding.MGF1(hashes.SHA1()), 20), hashes.SHA1())
    data = bytes((len(alg),)) + alg + sig
    pubkey.verify(_RSA.public_key(), 14, data, OCTETS, policy=SHA1_OK)
    with pytest.raises(CryptoPolicyRefused, match="'sha1-signatures'"):
        pubkey.verify(_RSA.public_key(), 14, data, OCTETS)


# --- rejections -------------------------------------------------------------------------


def _rejects(public_key, method: int, data: bytes, octets: bytes = OCTETS) -> str:
    with pytest.raises(PeerNotTrusted) as info:  # SHA-1 relaxed: the signature is judged
        pubkey.verify(public_key, method, data, octets, policy=SHA1_OK)
    assert str(info.value).startswith("AUTH signature of the gateway did not verify: ")
    return str(info.value)


def test_verify_rejects_changed_octets_for_every_method() -> None:
    for key, hashes_offered, pss in [
        (_RSA, None, False),
        (_RSA, ALL_HASHES, False),
        (_RSA, ALL_HASHES, True),
        (_P256, None, False),
        (_P384, ALL_HASHES, False),
        (ed25519.Ed25519PrivateKey.generate(), ALL_HASHES, False),
    ]:
        method, data = pubkey.sign(key, OCTETS, peer_hashes=hashes_offered, rsa_pss=pss)
        _rejects(key.public_key(), method, data, OCTETS + b"x")


def test_verify_rejects_alg_id_that_does_not_fit_the_key() -> None:
    method, data = pubkey.sign(_P256, OCTETS, peer_hashes=ALL_HASHES)
    assert "no EC key" in _rejects(_RSA.public_key(), method, data)
    method, data = pubkey.sign(_RSA, OCTETS, peer_hashes=ALL_HASHES)
    assert "no RSA key" in _rejects(_P256.public_key(), method, data)


def test_verify_rejects_classic_method_for_the_wrong_curve() -> None:
    method, data = pubkey.sign(_P256, OCTETS, peer_hashes=None)
    _rejects(_P384.public_key(), method, data)
    _rejects(_P256.public_key(), AuthMethod.ECDSA_SHA384_P384, data)
    _rejects(_P256.public_key(), method, data[:-1])


def test_verify_rejects_malformed_7427_data() -> None:
    method, data = pubkey.sign(_RSA, OCTETS, peer_hashes=ALL_HASHES)
    alg, sig = split_7427(data)
    key = _RSA.public_key()
    _rejects(key, 14, b"")
    _rejects(key, 14, data[: 1 + len(alg)])  # no signature
    _rejects(key, 14, bytes((200,)) + alg + sig)  # length beyond the data
    _rejects(key, 14, bytes((len(alg) - 1,)) + alg[:-1] + sig)  # truncated AlgorithmIdentifier
    unknown = bytes.fromhex("300d06092a864886f70d0101040500")  # md5WithRSAEncryption
    assert "unsupported" in _rejects(key, 14, bytes((len(unknown),)) + unknown + sig)
    _rejects(key, 14, bytes((len(alg),)) + alg + sig[:-1])  # wrong signature size
    _rejects(key, 99, data)


def test_verify_rejects_malformed_pss_params() -> None:
    good = pubkey.rsa_pss_algorithm_identifier(hashes.SHA256)
    sig = _RSA.sign(OCTETS, padding.PSS(padding.MGF1(hashes.SHA256()), 32), hashes.SHA256())
    for bad in (
        good[:-1] + b"\x21",  # salt 33: signature mismatch
        good.replace(b"\xa2\x03\x02\x01\x20", b"\xa3\x03\x02\x01\x02"),  # trailer 2
        good.replace(b"\x04\x02\x01\x05\x00\xa1", b"\x04\x02\x07\x05\x00\xa1"),  # unknown hash
    ):
        _rejects(_RSA.public_key(), 14, bytes((len(bad),)) + bad + sig)


# --- SIGNATURE_HASH_ALGORITHMS -----------------------------------------------------------


def test_hash_algorithm_notify_codec() -> None:
    ours = pubkey.supported_hash_algorithms()
    assert ours == [2, 3, 4, 5]
    assert pubkey.encode_hash_algorithms(ours) == bytes.fromhex("0002000300040005")
    assert pubkey.decode_hash_algorithms(bytes.fromhex("00010002ffff")) == [1, 2, 0xFFFF]
    assert pubkey.decode_hash_algorithms(b"") == []
    with pytest.raises(RemoteProtocolError):
        pubkey.decode_hash_algorithms(b"\x00\x02\x00")


def test_classic_ecdsa_signature_is_r_then_s() -> None:
    method, data = pubkey.sign(_P256, OCTETS, peer_hashes=None)
    r, s = int.from_bytes(data[:32], "big"), int.from_bytes(data[32:], "big")
    _P256.public_key().verify(encode_dss_signature(r, s), OCTETS, ec.ECDSA(hashes.SHA256()))
