"""client/profile.py: parsing and validating .vpnprofile / .sswan files."""

from __future__ import annotations

import base64
import copy
import datetime
import json
from ipaddress import ip_address, ip_network
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

from client.ikev2.constants import DhId, EncrId, ProtocolId, TransformType
from client.ikev2.proposals import default_esp_proposals, default_ike_proposals
from client.profile import (
    Profile,
    ProfileError,
    load_profile_file,
    parse_profile,
    profile_from_dict,
)

PROFILES_DIR = Path(__file__).resolve().parents[2] / "profiles"
UUID = "559eb893-1cee-4196-8b97-67045e029e91"


def _make_cert(cn: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return key, cert


@pytest.fixture(scope="module")
def ca() -> x509.Certificate:
    return _make_cert("Lab CA")[1]


@pytest.fixture(scope="module")
def ca2() -> x509.Certificate:
    return _make_cert("Second CA")[1]


@pytest.fixture(scope="module")
def p12() -> bytes:
    key, cert = _make_cert("client.example.com")
    return pkcs12.serialize_key_and_certificates(
        b"client", key, cert, None, serialization.BestAvailableEncryption(b"secret")
    )


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def minimal(**top: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "uuid": UUID,
        "name": "Test",
        "type": "ikev2-eap",
        "remote": {"addr": "vpn.example.com"},
    }
    doc.update(top)
    return doc


def parse(doc: dict[str, Any]) -> Profile:
    return parse_profile(json.dumps(doc))


def error_of(doc: dict[str, Any] | str | bytes) -> str:
    data = doc if isinstance(doc, str | bytes) else json.dumps(doc)
    with pytest.raises(ProfileError) as exc:
        parse_profile(data)
    assert str(exc.value) == f"{exc.value.key}: {exc.value.reason}"
    return str(exc.value)


# -- strongSwan's documented examples (docs.strongswan.org, androidVpnClientProfiles) ----

def test_strongswan_doc_example_certificate(p12: bytes) -> None:
    # The documentation elides the base64 ("MIIN..."); a real PKCS#12 stands in for it.
    text = """{
      "uuid": "a061d140-d3f9-4db7-b2f8-32d6703f4618",
      "name": "Test Profile Certificate",
      "type": "ikev2-cert",
      "remote": {
        "addr": "10.0.2.2"
      },
      "local": {
        "p12": "MIIN..."
      }
    }""".replace("MIIN...", b64(p12))
    prof = parse_profile(text.encode())
    assert prof.uuid == "a061d140-d3f9-4db7-b2f8-32d6703f4618"
    assert prof.name == "Test Profile Certificate"
    assert prof.type == "ikev2-cert"
    assert prof.remote_addrs == ["10.0.2.2"]
    assert prof.remote_id == "10.0.2.2" and not prof.remote_id_explicit
    assert prof.p12 == p12
    assert prof.remote_certs == []  # system trust store
    assert prof.format is None


def test_strongswan_doc_example_eap(ca: x509.Certificate) -> None:
    text = """{
      "uuid": "559eb893-1cee-4196-8b97-67045e029e91",
      "name": "Test Profile EAP",
      "type": "ikev2-eap",
      "remote": {
        "addr": "10.0.2.2",
        "id": "vpn.strongswan.org",
        "cert": "MIID..."
      },
      "local": {
        "eap_id": "android"
      }
    }""".replace("MIID...", b64(der(ca)))
    prof = parse_profile(text)
    assert prof.remote_id == "vpn.strongswan.org" and prof.remote_id_explicit
    assert prof.remote_certs == [der(ca)]
    assert prof.eap_id == "android"


def test_full_sswan_with_every_documented_key(ca: x509.Certificate, p12: bytes) -> None:
    doc = {
        "uuid": "A061D140-D3F9-4DB7-B2F8-32D6703F4618",
        "name": "Everything",
        "type": "ikev2-cert-eap",
        "apps": ["com.example.app"],
        "excluded-apps": ["com.example.other"],
        "ike-proposal": "aes256gcm16-prfsha384-ecp384",
        "esp-proposal": "aes256gcm16-ecp256",
        "mtu": 1400,
        "nat-keepalive": 45,
        "dns-servers": "198.51.100.53 2001:db8::53",
        "ipv6-transport": True,
        "remote": {
            "addr": "vpn.example.com",
            "port": 4500,
            "id": "gw.example.com",
            "cert": b64(der(ca)),
            "certreq": False,
            "revocation": {"crl": False, "ocsp": True, "strict": True},
        },
        "local": {
            "eap_id": "carol",
            "id": "carol@example.com",
            "shared_secret": "hunter2",
            "p12": b64(p12),
            "rsa-pss": True,
        },
        "split-tunneling": {
            "subnets": ["198.18.0.0/16", "198.19.0.1", "203.0.113.1 - 203.0.113.6"],
            "excluded": ["198.18.5.0/24"],
            "block-ipv4": True,
            "block-ipv6": True,
        },
        "proxy": {"host": "proxy.example.com", "port": 3128, "exclusions": ["*.example"]},
    }
    prof = parse(doc)
    assert prof.uuid == "a061d140-d3f9-4db7-b2f8-32d6703f4618"  # canonical lower case
    assert prof.remote_port == 4500
    assert prof.remote_id == "gw.example.com"
    assert prof.remote_certreq is False
    assert prof.revocation == {"crl": False, "ocsp": True, "strict": True}
    assert prof.local_id == "carol@example.com"
    assert prof.eap_id == "carol"
    assert prof.shared_secret == "hunter2"
    assert prof.rsa_pss is True
    assert prof.ike_proposal_text == "aes256gcm16-prfsha384-ecp384"
    (ike,) = prof.ike_proposals
    assert ike.protocol == ProtocolId.IKE
    assert ike.first(TransformType.DH).id == DhId.ECP_384
    (esp,) = prof.esp_proposals
    assert esp.first(TransformType.ENCR).id == EncrId.AES_GCM_16
    assert prof.mtu == 1400 and prof.nat_keepalive == 45 and prof.ipv6_transport
    assert prof.dns_servers == [ip_address("198.51.100.53"), ip_address("2001:db8::53")]
    assert prof.split_subnets == [
        ip_network("198.18.0.0/16"),
        ip_network("198.19.0.1/32"),
        ip_network("203.0.113.1/32"),
        ip_network("203.0.113.2/31"),
        ip_network("203.0.113.4/31"),
        ip_network("203.0.113.6/32"),
    ]
    assert prof.split_excluded == [ip_network("198.18.5.0/24")]
    assert prof.block_ipv4 and prof.block_ipv6
    assert prof.ignored == ["proxy", "apps", "excluded-apps"]
    assert prof.unknown == []
    assert "shared_secret" not in prof.raw["local"]
    assert prof.raw["proxy"] == doc["proxy"]  # kept for re-saving


def test_sswan_defaults() -> None:
    prof = parse(minimal())
    assert prof.remote_addrs == ["vpn.example.com"]
    assert prof.remote_port == 500
    assert prof.remote_id == "vpn.example.com"
    assert prof.remote_certs == [] and prof.remote_certreq is True
    assert prof.revocation == {"crl": True, "ocsp": True, "strict": False}
    assert prof.local_id is None and prof.eap_id is None and prof.p12 is None
    assert prof.shared_secret is None and prof.rsa_pss is False
    assert prof.ike_proposals == default_ike_proposals()
    assert prof.esp_proposals == default_esp_proposals()
    assert prof.ike_proposal_text is None and prof.esp_proposal_text is None
    assert prof.dns_servers == [] and prof.dns_domains == []
    assert prof.mtu is None and prof.nat_keepalive == 20 and prof.ipv6_transport is False
    assert prof.split_subnets == [] and prof.split_excluded == []
    assert not prof.block_ipv4 and not prof.block_ipv6
    assert prof.mobike and prof.dpd == 30
    assert prof.reconnect_auto and prof.reconnect_max_backoff == 300
    assert prof.kill_switch is False
    assert prof.lifetimes == {"ike": 14400, "child": 3600}
    assert prof.ignored == [] and prof.unknown == []


def test_vpnprofile_additions() -> None:
    prof = parse(minimal(**{
        "format": "vpnprofile/1",
        "remote": {"addr": "192.0.2.1", "addrs": ["192.0.2.2", "192.0.2.1", "VPN2.example.com",
                                                  "vpn2.example.com", "2001:db8:0::1"]},
        "mobike": False,
        "dpd": 0,
        "reconnect": {"auto": False, "max-backoff": 120},
        "kill-switch": True,
        "dns-domains": ["corp.example.com", "example.net."],
        "lifetimes": {"ike": 28800, "child": 1800},
    }))
    assert prof.format == "vpnprofile/1"
    assert prof.remote_addrs == ["192.0.2.1", "192.0.2.2", "VPN2.example.com", "2001:db8::1"]
    assert prof.remote_id == "192.0.2.1"
    assert prof.mobike is False and prof.dpd == 0
    assert prof.reconnect_auto is False and prof.reconnect_max_backoff == 120
    assert prof.kill_switch is True
    assert prof.dns_domains == ["corp.example.com", "example.net"]
    assert prof.lifetimes == {"ike": 28800, "child": 1800}


@pytest.mark.parametrize("path", sorted(PROFILES_DIR.glob("*.vpnprofile")), ids=lambda p: p.name)
def test_sample_profiles_parse(path: Path) -> None:
    prof = load_profile_file(path)
    assert prof.remote_id == "vpn.example.com"
    assert prof.remote_addrs[0].startswith("192.0.2.")
    assert prof.shared_secret is None
    assert prof.format == "vpnprofile/1"


def test_sample_profiles_exist() -> None:
    names = {p.name for p in PROFILES_DIR.glob("*.vpnprofile")}
    assert {"lab-eap.vpnprofile", "lab-md5.vpnprofile", "lab-psk.vpnprofile"} <= names


# -- validation errors -----------------------------------------------------------------

def with_key(path: str, value: Any, base: dict[str, Any] | None = None) -> dict[str, Any]:
    doc = copy.deepcopy(base or minimal())
    *parents, last = path.split(".")
    cur = doc
    for p in parents:
        cur = cur.setdefault(p, {})
    cur[last] = value
    return doc


def without_key(path: str) -> dict[str, Any]:
    doc = minimal()
    *parents, last = path.split(".")
    cur = doc
    for p in parents:
        cur = cur[p]
    del cur[last]
    return doc


@pytest.mark.parametrize("key", ["uuid", "name", "type", "remote.addr", "remote"])
def test_required_keys(key: str) -> None:
    expected = "remote.addr: missing" if key == "remote" else f"{key}: missing"
    assert error_of(without_key(key)) == expected


@pytest.mark.parametrize("path, value, expected", [
    ("uuid", "not-a-uuid", "uuid: not an RFC 4122 UUID"),
    ("uuid", "{559eb893-1cee-4196-8b97-67045e029e91}", "uuid: not an RFC 4122 UUID"),
    ("uuid", "559eb8931cee41968b9767045e029e91", "uuid: not an RFC 4122 UUID"),
    ("uuid", "../../etc/passwd", "uuid: not an RFC 4122 UUID"),
    ("uuid", 42, "uuid: must be a string"),
    ("name", "", "name: must not be empty"),
    ("name", ["x"], "name: must be a string"),
    ("name", "a\nb", "name: must not contain control characters"),
    ("type", "ikev2-foo", "type: unknown type 'ikev2-foo'"),
    ("type", "ikev2-byod-eap", "type: unknown type 'ikev2-byod-eap'"),
    ("remote", "vpn.example.com", "remote: must be a JSON object"),
    ("remote.addr", "", "remote.addr: must not be empty"),
    ("remote.addr", "vpn.example.com:4500", "remote.addr: not a host name or IP address"),
    ("remote.addr", "bad_host!", "remote.addr: not a host name or IP address"),
    ("remote.addrs", "192.0.2.9", None),  # a single string is one address
    ("remote.addrs", ["192.0.2.9", 5], "remote.addrs[1]: must be a string"),
    ("remote.addrs", ["192.0.2.9", "-bad-"], "remote.addrs[1]: not a host name or IP address"),
    ("remote.addrs", {"a": 1}, "remote.addrs: must be a list of strings"),
    ("remote.port", 0, "remote.port: must be an integer between 1 and 65535"),
    ("remote.port", 65536, "remote.port: must be an integer between 1 and 65535"),
    ("remote.port", "500", "remote.port: must be an integer between 1 and 65535"),
    ("remote.port", 500.0, "remote.port: must be an integer between 1 and 65535"),
    ("remote.port", True, "remote.port: must be an integer between 1 and 65535"),
    ("remote.id", 7, "remote.id: must be a string"),
    ("remote.certreq", "no", "remote.certreq: must be true or false"),
    ("remote.certreq", 0, "remote.certreq: must be true or false"),
    ("remote.revocation", True, "remote.revocation: must be a JSON object"),
    ("remote.revocation.strict", "yes", "remote.revocation.strict: must be true or false"),
    ("local", "carol", "local: must be a JSON object"),
    ("local.eap_id", 1, "local.eap_id: must be a string"),
    ("local.p12", "not base64!", "local.p12: not valid base64"),
    ("local.p12", "QUJD", "local.p12: not a PKCS#12 container"),
    ("local.rsa-pss", "true", "local.rsa-pss: must be true or false"),
    ("local.shared_secret", 1234, "local.shared_secret: must be a string"),
    ("ike-proposal", "aes999-sha256-modp2048", "ike-proposal: unknown algorithm 'aes999'"),
    ("esp-proposal", "aes999", "esp-proposal: unknown algorithm 'aes999'"),
    ("esp-proposal", "aes256gcm16-prfsha256",
     "esp-proposal: proposal 'aes256gcm16-prfsha256': a PRF is only allowed in IKE proposals"),
    ("ike-proposal", ["aes256gcm16"], "ike-proposal: must be a string"),
    ("mtu", 1279, "mtu: must be an integer between 1280 and 1500"),
    ("mtu", 1501, "mtu: must be an integer between 1280 and 1500"),
    ("mtu", "1400", "mtu: must be an integer between 1280 and 1500"),
    ("nat-keepalive", 9, "nat-keepalive: must be between 10 and 120"),
    ("nat-keepalive", 121, "nat-keepalive: must be between 10 and 120"),
    ("ipv6-transport", 1, "ipv6-transport: must be true or false"),
    ("dns-servers", ["198.51.100.53", "dns.example.com"], "dns-servers[1]: not an IP address"),
    ("dns-servers", "198.51.100.53 300.1.1.1", "dns-servers[1]: not an IP address"),
    ("dns-servers", [1], "dns-servers[0]: must be a string"),
    ("dns-domains", ["ok.example", "bad domain"], "dns-domains[1]: not a domain name"),
    ("split-tunneling", [], "split-tunneling: must be a JSON object"),
    ("split-tunneling.subnets", ["198.18.0.0/16", "198.18.0.0/33"],
     "split-tunneling.subnets[1]: not a CIDR"),
    ("split-tunneling.subnets", ["198.18.0.9-198.18.0.1"],
     "split-tunneling.subnets[0]: not a CIDR"),
    ("split-tunneling.subnets", ["198.18.0.1-2001:db8::1"],
     "split-tunneling.subnets[0]: not a CIDR"),
    ("split-tunneling.excluded", "198.18.0.0/16 nonsense",
     "split-tunneling.excluded[1]: not a CIDR"),
    ("split-tunneling.block-ipv6", "true", "split-tunneling.block-ipv6: must be true or false"),
    ("format", "vpnprofile/2",
     "format: unsupported format 'vpnprofile/2' (expected 'vpnprofile/1')"),
    ("mobike", "false", "mobike: must be true or false"),
    ("dpd", -1, "dpd: must be an integer between 0 and 3600"),
    ("reconnect", True, "reconnect: must be a JSON object"),
    ("reconnect.auto", None, None),  # null means "use the default"
    ("reconnect.max-backoff", 1, "reconnect.max-backoff: must be an integer between 5 and 3600"),
    ("kill-switch", "on", "kill-switch: must be true or false"),
    ("lifetimes.ike", 10, "lifetimes.ike: must be an integer between 30 and 86400"),
    ("lifetimes.child", 10**9, "lifetimes.child: must be an integer between 10 and 86400"),
])
def test_invalid_values(path: str, value: Any, expected: str | None) -> None:
    doc = with_key(path, value)
    if expected is None:
        parse(doc)
    else:
        assert error_of(doc) == expected


def test_lead_split_tunneling_error_names_the_index() -> None:
    doc = minimal(**{"split-tunneling": {"subnets": ["198.18.0.0/16", "10.0.0.0/8x"]}})
    assert error_of(doc) == "split-tunneling.subnets[1]: not a CIDR"


@pytest.mark.parametrize("ptype", ["ikev2-cert", "ikev2-cert-eap", "ikev2-eap-tls"])
def test_certificate_types_need_a_p12(ptype: str, p12: bytes) -> None:
    assert error_of(minimal(type=ptype)) == f"local.p12: missing (required for type '{ptype}')"
    assert parse(minimal(type=ptype, local={"p12": b64(p12)})).p12 == p12


def test_psk_needs_no_secret_in_the_file() -> None:
    prof = parse(minimal(type="ikev2-psk"))
    assert prof.shared_secret is None
    prof = parse(minimal(type="ikev2-psk", local={"shared_secret": "a long pre-shared key"}))
    assert prof.shared_secret == "a long pre-shared key"


def test_shared_secret_of_certificate_type_is_dropped(p12: bytes) -> None:
    prof = parse(minimal(type="ikev2-cert", local={"p12": b64(p12), "shared_secret": "x"}))
    assert prof.shared_secret is None
    assert prof.ignored == ["local.shared_secret"]
    assert "shared_secret" not in prof.raw["local"]


def test_empty_optional_strings_count_as_absent() -> None:
    # Android's importer treats "" like a missing optional key; generators emit it.
    prof = parse(minimal(remote={"addr": "192.0.2.1", "id": "", "cert": ""},
                         local={"eap_id": "", "p12": ""}, **{"esp-proposal": ""}))
    assert prof.remote_id == "192.0.2.1" and not prof.remote_id_explicit
    assert prof.remote_certs == [] and prof.eap_id is None and prof.p12 is None
    assert prof.esp_proposals == default_esp_proposals()


def test_p12_base64_may_be_wrapped(p12: bytes) -> None:
    text = b64(p12)
    wrapped = "\n".join(text[i:i + 64] for i in range(0, len(text), 64))
    prof = parse(minimal(type="ikev2-eap-tls", local={"p12": wrapped}))
    assert prof.p12 == p12


# -- remote.cert -----------------------------------------------------------------------

def test_remote_cert_forms(ca: x509.Certificate, ca2: x509.Certificate) -> None:
    def certs(value: Any) -> list[bytes]:
        return parse(with_key("remote.cert", value)).remote_certs

    assert certs(b64(der(ca))) == [der(ca)]
    assert certs(pem(ca)) == [der(ca)]
    assert certs(pem(ca) + pem(ca2)) == [der(ca), der(ca2)]  # a PEM bundle
    assert certs("subject=CN = Lab CA\n" + pem(ca)) == [der(ca)]  # text around PEM
    assert certs([b64(der(ca)), pem(ca2)]) == [der(ca), der(ca2)]
    wrapped = "\n".join(b64(der(ca))[i:i + 76] for i in range(0, len(b64(der(ca))), 76))
    assert certs(wrapped) == [der(ca)]


@pytest.mark.parametrize("value, expected", [
    ("not*base64", "remote.cert: not valid base64 or PEM"),
    ("QUJD=", "remote.cert: not valid base64 or PEM"),
    (b64(b"\x30\x03\x02\x01\x01"), "remote.cert: not an X.509 certificate"),
    ("-----BEGIN PRIVATE KEY-----\nQUJD\n-----END PRIVATE KEY-----\n",
     "remote.cert: not valid base64 or PEM (no CERTIFICATE block)"),
    ("-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
     "remote.cert: not valid base64 or PEM"),
    ("-----BEGIN CERTIFICATE-----\nQUJD\n-----END CERTIFICATE-----\n",
     "remote.cert: not an X.509 certificate"),
    (42, "remote.cert: must be a string or a list of strings"),
    (["QUJD", 1], "remote.cert[0]: not an X.509 certificate"),
])
def test_remote_cert_errors(value: Any, expected: str) -> None:
    assert error_of(with_key("remote.cert", value)) == expected


def test_remote_cert_list_errors_name_the_index(ca: x509.Certificate) -> None:
    assert error_of(with_key("remote.cert", [b64(der(ca)), 1])) == \
        "remote.cert[1]: must be a string"
    assert error_of(with_key("remote.cert", [pem(ca), "%%"])) == \
        "remote.cert[1]: not valid base64 or PEM"


def test_trailing_garbage_after_der_is_rejected(ca: x509.Certificate) -> None:
    assert error_of(with_key("remote.cert", b64(der(ca) + b"\x00"))) == \
        "remote.cert: not an X.509 certificate"


def test_without_the_x509_parse_the_same_der_and_base64_errors(ca: x509.Certificate) -> None:
    """`vpnclient connect` through the daemon skips the X.509 parse (the daemon does it):
    the DER it forwards is the same, and base64/PEM errors still name the key."""
    doc = json.dumps(with_key("remote.cert", [pem(ca), b64(der(ca))]))
    assert parse_profile(doc, parse_certificates=False).remote_certs == \
        parse_profile(doc).remote_certs == [der(ca), der(ca)]
    not_x509 = json.dumps(with_key("remote.cert", b64(b"\x30\x03\x02\x01\x01")))
    assert parse_profile(not_x509, parse_certificates=False).remote_certs == \
        [b"\x30\x03\x02\x01\x01"]
    with pytest.raises(ProfileError, match=r"^remote\.cert: not valid base64 or PEM$"):
        parse_profile(json.dumps(with_key("remote.cert", "not*base64")),
                      parse_certificates=False)


# -- the document as a whole -----------------------------------------------------------

def test_not_json_names_line_and_column() -> None:
    text = '{\n  "uuid": "x",\n    oops\n}'
    assert error_of(text) == (
        "profile: not valid JSON (line 3 column 5: "
        "Expecting property name enclosed in double quotes)"
    )


@pytest.mark.parametrize("text", ["[]", '"profile"', "null", "3"])
def test_top_level_must_be_an_object(text: str) -> None:
    assert error_of(text) == "profile: must be a JSON object"


def test_duplicate_keys_are_rejected() -> None:
    text = json.dumps(minimal())[:-1] + ', "name": "again"}'
    assert error_of(text) == "profile: not valid JSON (duplicate key 'name')"


def test_nan_is_rejected() -> None:
    text = json.dumps(minimal())[:-1] + ', "mtu": NaN}'
    assert error_of(text).startswith("profile: not valid JSON (")


def test_bytes_utf8_and_bom() -> None:
    doc = minimal(name="Büro VPN")
    assert parse_profile(json.dumps(doc, ensure_ascii=False).encode()).name == "Büro VPN"
    assert parse_profile(b"\xef\xbb\xbf" + json.dumps(doc).encode()).name == "Büro VPN"
    assert error_of(b'{"name": "\xff"}') == "profile: not valid UTF-8 (byte offset 10)"


def test_size_is_bounded() -> None:
    doc = minimal(padding="x" * (1 << 20))
    assert error_of(json.dumps(doc)) == "profile: larger than 1024 KiB"


def test_deep_nesting_is_an_error_not_a_crash() -> None:
    assert error_of("[" * 100000 + "]" * 100000).startswith("profile: ")


def test_source_names_the_document() -> None:
    with pytest.raises(ProfileError) as exc:
        parse_profile("[]", source="corp.sswan")
    assert str(exc.value) == "corp.sswan: must be a JSON object"
    assert isinstance(exc.value, ValueError)
    assert (exc.value.key, exc.value.reason) == ("corp.sswan", "must be a JSON object")


def test_profile_from_dict_and_error_pickling() -> None:
    import pickle

    assert profile_from_dict(minimal()).name == "Test"
    with pytest.raises(ProfileError) as exc:
        profile_from_dict(minimal(mtu=1))
    copy_ = pickle.loads(pickle.dumps(exc.value))
    assert (copy_.key, copy_.reason, str(copy_)) == ("mtu", exc.value.reason, str(exc.value))


def test_load_profile_file(tmp_path: Path) -> None:
    f = tmp_path / "corp.sswan"
    f.write_text(json.dumps(minimal()), encoding="utf-8")
    assert load_profile_file(f).name == "Test"
    assert load_profile_file(str(f)).name == "Test"
    f.write_text("{", encoding="utf-8")
    with pytest.raises(ProfileError) as exc:
        load_profile_file(f)
    assert exc.value.key == str(f) and exc.value.reason.startswith("not valid JSON (line 1")
    with pytest.raises(ProfileError) as exc:
        load_profile_file(tmp_path / "missing.sswan")
    assert exc.value.reason == "cannot read file (No such file or directory)"
    # Key errors name the key, not the file.
    f.write_text(json.dumps(minimal(mtu=9000)), encoding="utf-8")
    with pytest.raises(ProfileError, match=r"^mtu: "):
        load_profile_file(f)


# -- unknown keys, raw, to_json --------------------------------------------------------

def test_unknown_keys_are_kept_not_fatal() -> None:
    doc = minimal(**{"future-key": {"x": 1}})
    doc["remote"]["future"] = True
    doc["split-tunneling"] = {"ipv7": []}
    prof = parse(doc)
    assert prof.unknown == ["future-key", "remote.future", "split-tunneling.ipv7"]
    assert prof.raw["future-key"] == {"x": 1}
    out = json.loads(prof.to_json())
    assert out["future-key"] == {"x": 1} and out["remote"]["future"] is True


def test_to_json_never_contains_the_secret(p12: bytes) -> None:
    secret = "correct horse battery staple"
    prof = parse(minimal(local={"eap_id": "carol", "shared_secret": secret}))
    assert prof.shared_secret == secret
    assert secret not in prof.to_json()
    assert secret not in json.dumps(prof.raw)
    assert secret not in repr(prof)
    assert "shared_secret" not in prof.to_json()


def test_to_json_round_trip(ca: x509.Certificate, p12: bytes) -> None:
    doc = {
        "uuid": UUID,
        "name": "Round trip",
        "type": "ikev2-cert-eap",
        "remote": {"addr": "192.0.2.1", "addrs": ["192.0.2.2"], "port": 4500,
                   "id": "vpn.example.com", "cert": [pem(ca)], "certreq": False,
                   "revocation": {"strict": True}},
        "local": {"eap_id": "carol", "p12": b64(p12), "rsa-pss": True,
                  "shared_secret": "pw"},
        "ike-proposal": "aes128gcm16-prfsha256-x25519",
        "esp-proposal": "aes128gcm16",
        "dns-servers": "198.51.100.53",
        "dns-domains": ["corp.example.com"],
        "mtu": 1300,
        "nat-keepalive": 25,
        "split-tunneling": {"subnets": ["198.18.0.0/15"], "block-ipv6": True},
        "mobike": False,
        "dpd": 60,
        "reconnect": {"max-backoff": 30},
        "kill-switch": True,
        "lifetimes": {"child": 1200},
        "apps": ["com.example"],
    }
    prof = parse(doc)
    again = parse_profile(prof.to_json())
    for f in Profile.__dataclass_fields__:
        if f in ("shared_secret", "raw", "format"):
            continue
        assert getattr(again, f) == getattr(prof, f), f
    assert again.shared_secret is None and again.format == "vpnprofile/1"
    out = json.loads(prof.to_json())
    assert out["remote"]["cert"] == b64(der(ca))  # PEM is stored as base64 DER
    assert out["dns-servers"] == ["198.51.100.53"]


def test_to_json_keeps_defaults_unwritten() -> None:
    out = json.loads(parse(minimal()).to_json())
    assert out == minimal(format="vpnprofile/1")


def test_to_json_can_leave_out_the_p12(p12: bytes) -> None:
    prof = parse(minimal(type="ikev2-cert", local={"p12": b64(p12), "id": "me"}))
    assert json.loads(prof.to_json())["local"]["p12"] == b64(p12)
    out = json.loads(prof.to_json(include_p12=False))
    assert out["local"] == {"id": "me"}
