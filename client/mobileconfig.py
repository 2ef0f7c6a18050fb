"""Apple `.mobileconfig` IKEv2 payloads converted into `.vpnprofile` data (VPNPROFILE.md).

A configuration profile is a property list (XML or binary) whose `PayloadContent` lists
payloads. Each `com.apple.vpn.managed` payload with `VPNType` IKEv2 becomes one profile;
its client identity is the `com.apple.security.pkcs12` payload that
`IKEv2.PayloadCertificateUUID` names, and the CA certificates are the
`com.apple.security.root` / `.pem` / `.pkcs1` payloads (those whose common name is
`ServerCertificateIssuerCommonName`, when that is given).

Every key is reported as used (and what it became) or ignored (and why). Errors name the
key as the file spells it, e.g. `PayloadContent[0].IKEv2.RemoteAddress: missing`.
"""

from __future__ import annotations

import base64
import json
import plistlib
import struct
import uuid as uuidlib
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from .credentials import Kind
from .limits import (
    MAX_PLIST_DEPTH,
    MAX_PLIST_INT_BITS,
    MAX_PLIST_OBJECTS,
    MAX_PROFILE_BYTES,
    MAX_VPN_PAYLOADS,
)
from .profile import FORMAT_V1, ProfileError

VPN_PAYLOAD = "com.apple.vpn.managed"
PKCS12_PAYLOAD = "com.apple.security.pkcs12"
CA_PAYLOADS = ("com.apple.security.root", "com.apple.security.pem", "com.apple.security.pkcs1")
# Structure, not settings: never worth a line in the report.
_META_KEYS = frozenset({"PayloadType", "PayloadVersion", "PayloadIdentifier", "PayloadUUID",
                        "PayloadDisplayName", "PayloadDescription", "PayloadOrganization"})

# Apple's names -> strongSwan proposal keywords (client/ikev2/proposals.py). Apple's
# older choices (DES, 3DES, SHA1-160, DH groups 1, 2, 5) have no keyword there: an error.
_ENCR = {"AES-128": "aes128", "AES-256": "aes256", "AES-128-GCM": "aes128gcm16",
         "AES-256-GCM": "aes256gcm16", "ChaCha20Poly1305": "chacha20poly1305"}
_INTEG = {"SHA1-96": "sha1", "SHA2-256": "sha256", "SHA2-384": "sha384", "SHA2-512": "sha512"}
_PRF = {"SHA1-96": "prfsha1", "SHA2-256": "prfsha256", "SHA2-384": "prfsha384",
        "SHA2-512": "prfsha512"}
_DH = {14: "modp2048", 15: "modp3072", 16: "modp4096", 19: "ecp256", 20: "ecp384",
       21: "ecp521", 31: "x25519", 32: "x448"}
# Apple's defaults for a key missing from a *SecurityAssociationParameters dict.
_SA_DEFAULTS = {"EncryptionAlgorithm": "AES-256", "IntegrityAlgorithm": "SHA2-256",
                "DiffieHellmanGroup": 14}
# DeadPeerDetectionRate -> seconds (Apple: Low 30 min, Medium 10 min, High 1 min).
_DPD = {"None": 0, "Low": 1800, "Medium": 600, "High": 60}


@dataclass(frozen=True)
class ReportLine:
    key: str  # as the file spells it
    used: bool
    detail: str  # what it became, or why it was ignored
    secret: Kind | None = None  # a secret meant for the keyring

    def __str__(self) -> str:
        verb = "used   " if self.used else "ignored"
        sep = " -> " if self.used else ": "
        return f"{verb} {self.key}{sep}{self.detail}"


@dataclass
class Converted:
    """One IKEv2 payload as profile data; `secrets` go to the keyring, never the store."""

    data: dict[str, Any]
    secrets: dict[Kind, str] = field(default_factory=dict, repr=False)
    report: list[ReportLine] = field(default_factory=list)
    # profile key -> the file's key, so that a validation error names what the user wrote
    origin: dict[str, str] = field(default_factory=dict)

    def error_key(self, profile_key: str) -> str:
        for k in (profile_key, profile_key.split("[")[0]):
            if k in self.origin:
                return self.origin[k]
        return profile_key


def is_plist(data: bytes) -> bool:
    head = data.lstrip(b"\xef\xbb\xbf \t\r\n")[:64]
    return head.startswith((b"<?xml", b"<plist", b"<!DOCTYPE plist", b"bplist00"))


def convert(data: bytes, source: str = "mobileconfig") -> list[Converted]:
    """Every IKEv2 VPN payload of a configuration profile, converted."""
    if len(data) > MAX_PROFILE_BYTES:
        raise ProfileError(source, f"larger than {MAX_PROFILE_BYTES // 1024} KiB")
    if data[:1] == b"\x30":
        raise ProfileError(source, "a signed .mobileconfig (CMS); export it unsigned")
    _check_binary_trailer(data, source)
    _check_xml_tags(data, source)
    try:
        top = plistlib.loads(data)
    except Exception as exc:  # plistlib raises several types for malformed input
        raise ProfileError(source, f"not a property list ({type(exc).__name__}: {exc})"
                           ) from None
    if not isinstance(top, dict):
        raise ProfileError(source, "the property list is not a dictionary")
    _check_tree(top, source)
    payloads = top.get("PayloadContent")
    if payloads is None and top.get("PayloadType") == VPN_PAYLOAD:
        payloads, prefix = [top], ""  # a bare VPN payload
    elif isinstance(payloads, list):
        prefix = "PayloadContent"
    else:
        raise ProfileError("PayloadContent", "missing or not an array of payloads")

    by_uuid: dict[str, tuple[str, dict[str, Any]]] = {}
    vpn: list[tuple[str, dict[str, Any]]] = []
    others: list[ReportLine] = []
    for i, p in enumerate(payloads):
        key = f"{prefix}[{i}]" if prefix else "payload"
        if not isinstance(p, dict):
            raise ProfileError(key, "must be a dictionary")
        ptype = p.get("PayloadType")
        if isinstance(p.get("PayloadUUID"), str):
            # Apple requires unique UUIDs; copies would also multiply the work (a PKCS#12
            # decryption and every CA per VPN payload) of a small file with shared objects.
            seen = by_uuid.get(p["PayloadUUID"].upper())
            if seen is not None:
                raise ProfileError(f"{key}.PayloadUUID", f"the same as {seen[0]}'s")
            by_uuid[p["PayloadUUID"].upper()] = (key, p)
        if ptype == VPN_PAYLOAD and p.get("VPNType") == "IKEv2":
            vpn.append((key, p))
        elif ptype == VPN_PAYLOAD:
            others.append(ReportLine(key, False, f"VPNType {p.get('VPNType')!r} is not IKEv2"))
        elif ptype not in (PKCS12_PAYLOAD, *CA_PAYLOADS):
            others.append(ReportLine(key, False, f"{ptype} payload: not a VPN setting"))
    if not vpn:
        raise ProfileError(prefix or "payload",
                           f"no {VPN_PAYLOAD} payload with VPNType IKEv2")
    if len(vpn) > MAX_VPN_PAYLOADS:
        raise ProfileError(prefix, f"more than {MAX_VPN_PAYLOADS} IKEv2 VPN payloads")
    # Each CA payload parsed once, not once per VPN payload (n VPN x m CA payloads).
    cas = [(f"{prefix}[{i}]", der, _common_name(der)) for i, p in enumerate(payloads)
           if isinstance(p, dict) and p.get("PayloadType") in CA_PAYLOADS
           for der in [_certificate(f"{prefix}[{i}].PayloadContent", p.get("PayloadContent"))]]
    out = []
    for key, payload in vpn:
        conv = _Converter(key, payload, by_uuid, cas).run()
        out.append(conv)
    used = {line.key for conv in out for line in conv.report if line.used}
    for i, p in enumerate(payloads):
        key = f"{prefix}[{i}]" if prefix else "payload"
        if p.get("PayloadType") == PKCS12_PAYLOAD and key not in used:
            others.append(ReportLine(key, False, "PKCS#12 not named by PayloadCertificateUUID"))
    for conv in out:
        conv.report.extend(others)
    return out


class _Converter:
    def __init__(self, key: str, payload: dict[str, Any],
                 by_uuid: dict[str, tuple[str, dict[str, Any]]],
                 cas: list[tuple[str, bytes, str]]) -> None:
        self.key = key
        self.p = payload
        self.by_uuid = by_uuid
        self.cas = cas  # (payload key, DER, common name)
        self.out = Converted(data={"format": FORMAT_V1, "remote": {}, "local": {}})
        self.used_keys: set[str] = set()

    # -- helpers ----------------------------------------------------------------------
    def use(self, key: str, target: str, detail: str | None = None,
            secret: Kind | None = None) -> None:
        self.out.report.append(ReportLine(key, True, detail or target, secret))
        self.out.origin[target] = key
        self.used_keys.add(key)

    def ignore(self, key: str, why: str) -> None:
        self.out.report.append(ReportLine(key, False, why))
        self.used_keys.add(key)

    def put(self, target: str, value: Any) -> None:
        *parents, last = target.split(".")
        cur = self.out.data
        for part in parents:
            cur = cur.setdefault(part, {})
        cur[last] = value

    @staticmethod
    def string(key: str, v: Any) -> str:
        if not isinstance(v, str):
            raise ProfileError(key, "must be a string")
        return v

    @staticmethod
    def flag(key: str, v: Any) -> bool:
        # Apple writes these as <integer>0/1</integer>; some generators use <true/>.
        if isinstance(v, bool):
            return v
        if isinstance(v, int) and v in (0, 1):
            return bool(v)
        raise ProfileError(key, "must be 0 or 1 (or true/false)")

    @staticmethod
    def integer(key: str, v: Any) -> int:
        if not isinstance(v, int) or isinstance(v, bool):
            raise ProfileError(key, "must be an integer")
        return v

    # -- the payload ------------------------------------------------------------------
    def run(self) -> Converted:
        p, k = self.p, self.key
        ike = p.get("IKEv2")
        if not isinstance(ike, dict):
            raise ProfileError(f"{k}.IKEv2", "missing or not a dictionary")
        uuid = p.get("PayloadUUID")
        try:
            uuid = str(uuidlib.UUID(self.string(f"{k}.PayloadUUID", uuid)))
        except ValueError:
            raise ProfileError(f"{k}.PayloadUUID", "not an RFC 4122 UUID") from None
        self.put("uuid", uuid)
        self.use(f"{k}.PayloadUUID", "uuid")
        for name_key in ("UserDefinedName", "PayloadDisplayName"):
            if isinstance(p.get(name_key), str) and p[name_key].strip():
                self.put("name", p[name_key])
                self.use(f"{k}.{name_key}", "name")
                break
        self._ikev2(ike, f"{k}.IKEv2")
        if "name" not in self.out.data:
            self.put("name", self.out.data["remote"]["addr"])
        self._dns(p.get("DNS"), f"{k}.DNS")
        if "Proxies" in p:
            self.put("proxy", p["Proxies"] if _jsonable(p["Proxies"]) else {})
            self.use(f"{k}.Proxies", "proxy", "proxy (kept; not applied on desktop Linux)")
        for key in p:
            full = f"{k}.{key}"
            if key not in _META_KEYS and full not in self.used_keys and key not in (
                    "IKEv2", "DNS", "VPNType"):
                self.ignore(full, "not supported")
        return self.out

    def _ikev2(self, ike: dict[str, Any], k: str) -> None:
        addr = ike.get("RemoteAddress")
        if addr is None:
            raise ProfileError(f"{k}.RemoteAddress", "missing")
        self.put("remote.addr", self.string(f"{k}.RemoteAddress", addr))
        self.use(f"{k}.RemoteAddress", "remote.addr")
        for key, target in (("RemoteIdentifier", "remote.id"), ("LocalIdentifier", "local.id"),
                            ("AuthName", "local.eap_id")):
            if key in ike:
                self.put(target, self.string(f"{k}.{key}", ike[key]))
                self.use(f"{k}.{key}", target)

        self._auth(ike, k)
        self._cas(ike, k)
        for sa_key, target, proto in (
                ("IKESecurityAssociationParameters", "ike-proposal", "ike"),
                ("ChildSecurityAssociationParameters", "esp-proposal", "esp")):
            if sa_key in ike:
                self._proposal(ike, f"{k}.{sa_key}", ike[sa_key], target, proto)

        if "DeadPeerDetectionRate" in ike:
            rate = ike["DeadPeerDetectionRate"]
            if not isinstance(rate, str) or rate not in _DPD:
                raise ProfileError(f"{k}.DeadPeerDetectionRate",
                                   f"must be one of {', '.join(_DPD)}")
            self.put("dpd", _DPD[rate])
            self.use(f"{k}.DeadPeerDetectionRate", "dpd", f"dpd {_DPD[rate]} s")
        if "DisableMOBIKE" in ike:
            self.put("mobike", not self.flag(f"{k}.DisableMOBIKE", ike["DisableMOBIKE"]))
            self.use(f"{k}.DisableMOBIKE", "mobike")
        if "NATKeepAliveInterval" in ike:
            self.put("nat-keepalive", self.integer(f"{k}.NATKeepAliveInterval",
                                                   ike["NATKeepAliveInterval"]))
            self.use(f"{k}.NATKeepAliveInterval", "nat-keepalive")
        if "MTU" in ike:
            self.put("mtu", self.integer(f"{k}.MTU", ike["MTU"]))
            self.use(f"{k}.MTU", "mtu")
        if "IncludeAllNetworks" in ike:
            on = self.flag(f"{k}.IncludeAllNetworks", ike["IncludeAllNetworks"])
            self.put("kill-switch", on)
            self.use(f"{k}.IncludeAllNetworks", "kill-switch",
                     "kill-switch (all traffic through the tunnel, blocked without it)")
        if "EnablePFS" in ike:
            self.use(f"{k}.EnablePFS", "esp-proposal",
                     "esp-proposal (a key exchange in the CHILD_SA proposal)")
        for key in ike:
            if f"{k}.{key}" not in self.used_keys:
                self.ignore(f"{k}.{key}", "not supported")

    def _auth(self, ike: dict[str, Any], k: str) -> None:
        method = ike.get("AuthenticationMethod", "None")
        if method not in ("None", "SharedSecret", "Certificate"):
            raise ProfileError(f"{k}.AuthenticationMethod",
                               f"unknown method {method!r} (None, SharedSecret or Certificate)")
        eap = self.flag(f"{k}.ExtendedAuthEnabled", ike.get("ExtendedAuthEnabled", 0))
        if "ExtendedAuthEnabled" in ike:
            self.use(f"{k}.ExtendedAuthEnabled", "type", "type (EAP)" if eap else "type")
        if method == "SharedSecret":
            if eap:
                raise ProfileError(f"{k}.ExtendedAuthEnabled",
                                   "a shared secret followed by EAP is not supported")
            ptype = "ikev2-psk"
            secret = ike.get("SharedSecret")
            if secret is None:
                raise ProfileError(f"{k}.SharedSecret", "missing (AuthenticationMethod is "
                                                        "SharedSecret)")
            if isinstance(secret, bytes):
                try:
                    secret = secret.decode()
                except UnicodeDecodeError:
                    raise ProfileError(f"{k}.SharedSecret", "not UTF-8 text") from None
            self.out.secrets[Kind.PASSWORD] = self.string(f"{k}.SharedSecret", secret)
            self.use(f"{k}.SharedSecret", "keyring", "the keyring (pre-shared key)",
                     Kind.PASSWORD)
        elif method == "Certificate":
            # Apple: a certificate plus ExtendedAuthEnabled is EAP-TLS, unless a username
            # is given, which asks for a second (EAP) round after the certificate.
            ptype = ("ikev2-cert-eap" if "AuthName" in ike else "ikev2-eap-tls") \
                if eap else "ikev2-cert"
            self._pkcs12(ike, k)
        else:
            if not eap:
                raise ProfileError(f"{k}.ExtendedAuthEnabled",
                                   "must be 1 when AuthenticationMethod is None "
                                   "(no client authentication otherwise)")
            ptype = "ikev2-eap"
        self.put("type", ptype)
        self.use(f"{k}.AuthenticationMethod", "type", f"type {ptype}")
        if "AuthPassword" in ike:
            if ptype not in ("ikev2-eap", "ikev2-cert-eap"):
                self.ignore(f"{k}.AuthPassword", f"type {ptype} has no EAP password")
            else:
                self.out.secrets[Kind.PASSWORD] = self.string(f"{k}.AuthPassword",
                                                              ike["AuthPassword"])
                self.use(f"{k}.AuthPassword", "keyring", "the keyring (EAP password)",
                         Kind.PASSWORD)
        if "SharedSecret" in ike and method != "SharedSecret":
            self.ignore(f"{k}.SharedSecret", "AuthenticationMethod is not SharedSecret")

    def _pkcs12(self, ike: dict[str, Any], k: str) -> None:
        ref_key = f"{k}.PayloadCertificateUUID"
        ref = ike.get("PayloadCertificateUUID")
        if ref is None:
            raise ProfileError(ref_key, "missing (AuthenticationMethod is Certificate)")
        found = self.by_uuid.get(self.string(ref_key, ref).upper())
        if found is None:
            raise ProfileError(ref_key, f"no payload with PayloadUUID {ref}")
        pkey, payload = found
        if payload.get("PayloadType") != PKCS12_PAYLOAD:
            raise ProfileError(ref_key, f"{pkey} is not a {PKCS12_PAYLOAD} payload")
        blob = payload.get("PayloadContent")
        if not isinstance(blob, bytes) or not blob:
            raise ProfileError(f"{pkey}.PayloadContent", "missing or not <data>")
        if blob[:1] != b"\x30":
            raise ProfileError(f"{pkey}.PayloadContent", "not a PKCS#12 container")
        self.put("local.p12", base64.b64encode(blob).decode())
        self.use(ref_key, "local.p12", f"local.p12 (the PKCS#12 of {pkey})")
        self.use(pkey, "local.p12", "local.p12 (kept encrypted)")
        self.out.origin["local.p12"] = f"{pkey}.PayloadContent"
        if "Password" in payload:
            self.out.secrets[Kind.P12] = self.string(f"{pkey}.Password", payload["Password"])
            self.use(f"{pkey}.Password", "keyring", "the keyring (PKCS#12 passphrase)",
                     Kind.P12)
            self.out.origin["local.p12.passphrase"] = f"{pkey}.Password"
        if "CertificateType" in ike:
            self.use(f"{k}.CertificateType", "local.p12",
                     "local.p12 (the key type is read from the certificate)")

    def _cas(self, ike: dict[str, Any], k: str) -> None:
        issuer = ike.get("ServerCertificateIssuerCommonName")
        if issuer is not None:
            self.string(f"{k}.ServerCertificateIssuerCommonName", issuer)
        certs: list[str] = []
        for pkey, der, cn in self.cas:
            if issuer is not None and cn != issuer:
                self.ignore(pkey, f"CA '{cn}' is not ServerCertificateIssuerCommonName")
                continue
            certs.append(base64.b64encode(der).decode())
            self.use(pkey, "remote.cert", f"remote.cert (CA '{cn}')")
        if issuer is not None:
            if not certs:
                raise ProfileError(f"{k}.ServerCertificateIssuerCommonName",
                                   f"no certificate payload for CA '{issuer}'")
            self.use(f"{k}.ServerCertificateIssuerCommonName", "remote.cert")
        if certs:
            self.put("remote.cert", certs if len(certs) > 1 else certs[0])

    def _proposal(self, ike: dict[str, Any], k: str, params: Any, target: str,
                  proto: str) -> None:
        if not isinstance(params, dict):
            raise ProfileError(k, "must be a dictionary")
        get = {**_SA_DEFAULTS, **params}.get
        encr_name = get("EncryptionAlgorithm")
        encr = _ENCR.get(encr_name) if isinstance(encr_name, str) else None
        if encr is None:
            raise ProfileError(f"{k}.EncryptionAlgorithm",
                               f"unsupported algorithm {encr_name!r} ({', '.join(_ENCR)})")
        aead = "gcm" in encr or "chacha" in encr
        integ_name = get("IntegrityAlgorithm")
        if not isinstance(integ_name, str) or integ_name not in _INTEG:
            raise ProfileError(f"{k}.IntegrityAlgorithm",
                               f"unsupported algorithm {integ_name!r} ({', '.join(_INTEG)})")
        group = get("DiffieHellmanGroup")
        dh = _DH.get(group) if isinstance(group, int) and not isinstance(group, bool) else None
        if dh is None:
            raise ProfileError(f"{k}.DiffieHellmanGroup",
                               f"unsupported group {group!r} ({', '.join(map(str, _DH))})")
        if proto == "ike":
            parts = [encr, _PRF[integ_name] if aead else _INTEG[integ_name], dh]
        else:
            pfs = "EnablePFS" in ike and self.flag(f"{self.key}.IKEv2.EnablePFS",
                                                   ike["EnablePFS"])
            parts = [encr] + ([] if aead else [_INTEG[integ_name]]) + ([dh] if pfs else [])
        text = "-".join(parts)
        self.put(target, text)
        for sub in params:
            if sub in _SA_DEFAULTS:
                self.use(f"{k}.{sub}", target, f"{target} {text}")
        minutes = params.get("LifeTimeInMinutes")
        if minutes is not None:
            life = self.integer(f"{k}.LifeTimeInMinutes", minutes) * 60
            self.put(f"lifetimes.{'ike' if proto == 'ike' else 'child'}", life)
            self.use(f"{k}.LifeTimeInMinutes", f"lifetimes.{'ike' if proto == 'ike' else 'child'}")
        for sub in params:
            if sub not in _SA_DEFAULTS and sub != "LifeTimeInMinutes":
                self.ignore(f"{k}.{sub}", "not supported")
        self.out.origin[target] = k
        self.used_keys.add(k)

    def _dns(self, dns: Any, k: str) -> None:
        if dns is None:
            return
        if not isinstance(dns, dict):
            raise ProfileError(k, "must be a dictionary")
        for key, target in (("ServerAddresses", "dns-servers"),
                            ("SupplementalMatchDomains", "dns-domains")):
            if key in dns:
                v = dns[key]
                if not isinstance(v, list) or not all(isinstance(s, str) for s in v):
                    raise ProfileError(f"{k}.{key}", "must be an array of strings")
                self.put(target, v)
                self.use(f"{k}.{key}", target)
        for key in dns:
            if key not in ("ServerAddresses", "SupplementalMatchDomains"):
                self.ignore(f"{k}.{key}", "not supported")


def _certificate(key: str, blob: Any) -> bytes:
    if not isinstance(blob, bytes) or not blob:
        raise ProfileError(key, "missing or not <data>")
    try:
        if b"-----BEGIN" in blob:
            cert = x509.load_pem_x509_certificate(blob)
            blob = cert.public_bytes(serialization.Encoding.DER)
        else:
            cert = x509.load_der_x509_certificate(blob)
        # cryptography parses these lazily: force them here, where the key is known.
        _ = cert.subject, cert.issuer, cert.extensions  # each access parses (and caches)
    except (ValueError, x509.InvalidVersion):  # the latter is no ValueError
        raise ProfileError(key, "not an X.509 certificate") from None
    return blob


def _common_name(der: bytes) -> str:
    return _cn_of(x509.load_der_x509_certificate(der))


def _cn_of(cert: x509.Certificate) -> str:
    attrs = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    value = attrs[0].value if attrs else ""
    return value if isinstance(value, str) else value.decode(errors="replace")


def _check_binary_trailer(data: bytes, source: str) -> None:
    """Refuse a binary plist that declares too many objects, before plistlib allocates
    its offset table. The 32-byte trailer ends with num_objects, top_object, table offset."""
    if not data.startswith(b"bplist00") or len(data) < 40:
        return  # plistlib rejects a short one itself
    (num_objects,) = struct.unpack(">Q", data[-24:-16])
    if num_objects > MAX_PLIST_OBJECTS:
        raise ProfileError(source, f"more than {MAX_PLIST_OBJECTS} property list objects")


def _check_xml_tags(data: bytes, source: str) -> None:
    """Refuse an XML plist with more tags than MAX_PLIST_OBJECTS objects can need, before
    expat and plistlib build them all (1 MiB of <true/> took 120 ms to be refused after).
    An object is one or two tags, and so is its dictionary key; a '<' in text is &lt;."""
    if data.startswith(b"bplist00"):
        return
    if data.count(b"<") > 4 * MAX_PLIST_OBJECTS + 16:  # + <?xml, <!DOCTYPE, <plist>
        raise ProfileError(source, f"more than {MAX_PLIST_OBJECTS} property list objects")


def _check_tree(top: Any, source: str) -> None:
    """Bound the decoded plist before anything walks it recursively. A binary plist can
    reference one object from many places (plistlib then shares it: a DAG, even a cycle),
    so every visit counts, not every distinct object: the walk is bounded either way."""
    visits = 1
    stack: list[tuple[Any, str, int]] = [(top, "", 0)]
    while stack:
        node, key, depth = stack.pop()
        if depth > MAX_PLIST_DEPTH:
            raise ProfileError(key or source, f"nested deeper than {MAX_PLIST_DEPTH}")
        if isinstance(node, (dict, list)):
            visits += len(node)  # counted before they are pushed: the stack stays bounded
            if visits > MAX_PLIST_OBJECTS:
                raise ProfileError(source, f"more than {MAX_PLIST_OBJECTS} property list "
                                   "objects (a shared one counts at every use)")
        if isinstance(node, dict):
            for k, v in node.items():
                if not isinstance(k, str):
                    raise ProfileError(key or source, "a dictionary key is not a string")
                stack.append((v, f"{key}.{k}" if key else k, depth + 1))
        elif isinstance(node, list):
            stack.extend((v, f"{key}[{i}]", depth + 1) for i, v in enumerate(node))
        elif isinstance(node, int) and not isinstance(node, bool) and (
                node.bit_length() > MAX_PLIST_INT_BITS):
            raise ProfileError(key or source, f"an integer beyond {MAX_PLIST_INT_BITS} bits")


def _jsonable(v: Any) -> bool:
    try:
        json.dumps(v)
    except (TypeError, ValueError):
        return False
    return True
