"""Reading and validating `.vpnprofile` / `.sswan` files (docs/VPNPROFILE.md).

The format is strongSwan's Android `.sswan` JSON (nested objects; the docs write their
keys with dots, e.g. `remote.addr`) plus this project's additions. Parsing is all or
nothing: the first problem raises ProfileError naming the key as the format spells it.
Unknown keys are kept in `Profile.raw` so that re-saving a profile loses nothing.
"""

from __future__ import annotations

import base64
import binascii
import copy
import json
import re
from dataclasses import dataclass, field
from ipaddress import (
    IPv4Address,
    IPv4Network,
    IPv6Address,
    IPv6Network,
    ip_address,
    summarize_address_range,
)
from pathlib import Path
from typing import Any

from .ikev2.constants import ProtocolId
from .ikev2.proposals import (
    Proposal,
    default_esp_proposals,
    default_ike_proposals,
    parse_proposals,
)
from .limits import (
    MAX_DNS_DOMAINS,
    MAX_DNS_SERVERS,
    MAX_IDENTITY_CHARS,
    MAX_PROFILE_BYTES,
    MAX_PROFILE_DEPTH,
    MAX_PROFILE_VALUES,
    MAX_PROPOSAL_TEXT,
    MAX_PROPOSALS,
    MAX_REMOTE_ADDRS,
    MAX_REMOTE_CERTS,
    MAX_SPLIT_NETWORKS,
    json_too_complex,
)

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network

FORMAT_V1 = "vpnprofile/1"
PROFILE_TYPES = ("ikev2-eap", "ikev2-cert", "ikev2-cert-eap", "ikev2-eap-tls", "ikev2-psk")
CERT_TYPES = frozenset({"ikev2-cert", "ikev2-cert-eap", "ikev2-eap-tls"})  # need local.p12
SECRET_TYPES = frozenset({"ikev2-eap", "ikev2-cert-eap", "ikev2-psk"})  # use shared_secret
IGNORED_KEYS = ("proxy", "apps", "excluded-apps")  # Android-only; not applied on Linux

MTU_RANGE = (1280, 1500)
NAT_KEEPALIVE_RANGE = (10, 120)
PORT_RANGE = (1, 65535)
DPD_RANGE = (0, 3600)  # 0 turns liveness checks off
MAX_BACKOFF_RANGE = (5, 3600)
# Short lifetimes are for tests and demonstrations; rekeys then happen every few seconds.
IKE_LIFETIME_RANGE = (30, 86400)
CHILD_LIFETIME_RANGE = (10, 86400)

DEFAULT_PORT = 500
DEFAULT_NAT_KEEPALIVE = 20
DEFAULT_DPD = 30
DEFAULT_MAX_BACKOFF = 300
DEFAULT_LIFETIMES = {"ike": 14400, "child": 3600}
DEFAULT_REVOCATION = {"crl": True, "ocsp": True, "strict": False}

# RFC 4122 section 3 string representation; canonical form also makes it a safe file name.
_UUID_RE = re.compile(
    r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_LABEL_RE = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
_B64_RE = re.compile(r"^[A-Za-z0-9+/]*={0,2}$")
_CONTROL_CHAR_RE = re.compile(r"[\x00-\x1f\x7f]")
_PEM_BEGIN, _PEM_END = "-----BEGIN CERTIFICATE-----", "-----END CERTIFICATE-----"
_TOP_KEYS = frozenset({
    "uuid", "name", "type", "remote", "local", "ike-proposal", "esp-proposal",
    "dns-servers", "dns-domains", "mtu", "nat-keepalive", "ipv6-transport",
    "split-tunneling", "format", "mobike", "dpd", "reconnect", "kill-switch",
    "lifetimes", *IGNORED_KEYS,
})
_SUB_KEYS = {
    "remote": frozenset(
        {"addr", "addrs", "port", "id", "cert", "certreq", "revocation", "eap-only",
         "crypto-policy"}
    ),
    "remote.revocation": frozenset({"crl", "ocsp", "strict"}),
    "remote.crypto-policy": frozenset({"relax"}),
    "local": frozenset({"id", "eap_id", "p12", "rsa-pss", "shared_secret", "eap-methods"}),
    "split-tunneling": frozenset({"subnets", "excluded", "block-ipv4", "block-ipv6"}),
    "reconnect": frozenset({"auto", "max-backoff"}),
    "lifetimes": frozenset({"ike", "child"}),
}


class ProfileError(ValueError):
    """A profile is invalid; `key` is the path as the format spells it."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"{key}: {reason}")
        self.key = key
        self.reason = reason

    def __reduce__(self) -> tuple[Any, ...]:  # args holds the joined message only
        return (type(self), (self.key, self.reason))


@dataclass(frozen=True, kw_only=True)
class Profile:
    uuid: str
    name: str
    type: str
    remote_addrs: list[str]
    remote_port: int = DEFAULT_PORT
    remote_id: str
    # False: remote.id defaulted to remote.addr, so the engine need not send IDr.
    remote_id_explicit: bool = False
    remote_certs: list[bytes] = field(default_factory=list)  # DER; empty: system store
    remote_certreq: bool = True
    revocation: dict[str, bool] = field(default_factory=lambda: dict(DEFAULT_REVOCATION))
    local_id: str | None = None
    eap_id: str | None = None
    p12: bytes | None = field(default=None, repr=False)
    rsa_pss: bool = False
    shared_secret: str | None = field(default=None, repr=False)  # never in to_json()
    ike_proposals: list[Proposal] = field(default_factory=list)
    esp_proposals: list[Proposal] = field(default_factory=list)
    ike_proposal_text: str | None = None
    esp_proposal_text: str | None = None
    dns_servers: list[IPAddress] = field(default_factory=list)
    dns_domains: list[str] = field(default_factory=list)
    mtu: int | None = None
    nat_keepalive: int = DEFAULT_NAT_KEEPALIVE
    ipv6_transport: bool = False
    split_subnets: list[IPNetwork] = field(default_factory=list)
    split_excluded: list[IPNetwork] = field(default_factory=list)
    block_ipv4: bool = False
    block_ipv6: bool = False
    mobike: bool = True
    dpd: int = DEFAULT_DPD
    reconnect_auto: bool = True
    reconnect_max_backoff: int = DEFAULT_MAX_BACKOFF
    kill_switch: bool = False
    # This format's addition: accept a gateway that authenticates only through a mutual
    # EAP method (RFC 5998), without a certificate. Off by default: with it, a rogue
    # gateway could collect MSCHAPv2 responses to attack the password offline.
    eap_only: bool = False
    # This format's additions: crypto policy rules relaxed for a legacy gateway
    # (client/ikev2/auth/policy.py RULES) and the EAP methods allowed (empty: the type's
    # default, client/ikev2/auth/eap/methods.py).
    crypto_relax: tuple[str, ...] = ()
    eap_methods: tuple[str, ...] = ()
    lifetimes: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_LIFETIMES))
    format: str | None = None
    ignored: list[str] = field(default_factory=list)  # e.g. ["proxy"]: kept, not applied
    unknown: list[str] = field(default_factory=list)  # unknown keys, kept in raw
    raw: dict[str, Any] = field(default_factory=dict, repr=False)  # original minus secrets

    @property
    def remote_addr(self) -> str:
        return self.remote_addrs[0]

    @property
    def needs_p12(self) -> bool:
        return self.type in CERT_TYPES

    @property
    def uses_eap(self) -> bool:
        return self.type in ("ikev2-eap", "ikev2-cert-eap", "ikev2-eap-tls")

    def to_dict(self, *, include_p12: bool = True) -> dict[str, Any]:
        """The profile as `.vpnprofile` JSON data, never carrying `local.shared_secret`.

        Starts from `raw`, so unknown keys survive; a known key is written when the file
        had it or its value differs from the default, so defaults stay unfrozen.
        """
        out = copy.deepcopy(self.raw)
        _put(out, "format", FORMAT_V1, None, force=True)
        _put(out, "uuid", self.uuid, None, force=True)
        _put(out, "name", self.name, None, force=True)
        _put(out, "type", self.type, None, force=True)
        _put(out, "remote.addr", self.remote_addrs[0], None, force=True)
        _put(out, "remote.addrs", self.remote_addrs[1:], [])
        _put(out, "remote.port", self.remote_port, DEFAULT_PORT)
        _put(out, "remote.id", self.remote_id if self.remote_id_explicit else None, None)
        certs = [base64.b64encode(c).decode() for c in self.remote_certs]
        _put(out, "remote.cert", certs[0] if len(certs) == 1 else certs, [])
        _put(out, "remote.certreq", self.remote_certreq, True)
        for k, default in DEFAULT_REVOCATION.items():
            _put(out, f"remote.revocation.{k}", self.revocation.get(k, default), default)
        _put(out, "local.id", self.local_id, None)
        _put(out, "local.eap_id", self.eap_id, None)
        p12 = base64.b64encode(self.p12).decode() if self.p12 and include_p12 else None
        _put(out, "local.p12", p12, None)
        _put(out, "local.rsa-pss", self.rsa_pss, False)
        _put(out, "ike-proposal", self.ike_proposal_text, None)
        _put(out, "esp-proposal", self.esp_proposal_text, None)
        _put(out, "dns-servers", [str(a) for a in self.dns_servers], [])
        _put(out, "dns-domains", self.dns_domains, [])
        _put(out, "mtu", self.mtu, None)
        _put(out, "nat-keepalive", self.nat_keepalive, DEFAULT_NAT_KEEPALIVE)
        _put(out, "ipv6-transport", self.ipv6_transport, False)
        _put(out, "split-tunneling.subnets", [str(n) for n in self.split_subnets], [])
        _put(out, "split-tunneling.excluded", [str(n) for n in self.split_excluded], [])
        _put(out, "split-tunneling.block-ipv4", self.block_ipv4, False)
        _put(out, "split-tunneling.block-ipv6", self.block_ipv6, False)
        _put(out, "mobike", self.mobike, True)
        _put(out, "dpd", self.dpd, DEFAULT_DPD)
        _put(out, "reconnect.auto", self.reconnect_auto, True)
        _put(out, "reconnect.max-backoff", self.reconnect_max_backoff, DEFAULT_MAX_BACKOFF)
        for k, default in DEFAULT_LIFETIMES.items():
            _put(out, f"lifetimes.{k}", self.lifetimes.get(k, default), default)
        _pop(out, "local.shared_secret")
        if not include_p12:
            _pop(out, "local.p12")
        return out

    def to_json(self, *, include_p12: bool = True) -> str:
        """Indented for people; compact if indenting would take it past what a profile
        file may hold (a profile accepted near MAX_PROFILE_BYTES must read back)."""
        data = self.to_dict(include_p12=include_p12)
        text = json.dumps(data, indent=2) + "\n"
        if len(text.encode()) > MAX_PROFILE_BYTES:
            text = json.dumps(data, separators=(",", ":")) + "\n"
        return text


def load_profile_file(path: str | Path, *, parse_certificates: bool = True) -> Profile:
    """Read and parse a profile file; top-level errors name the file.

    parse_certificates=False checks `remote.cert` as base64/PEM only, not as X.509, and
    leaves out the identity checks (both cost the import of cryptography.x509): for a
    process that hands the profile to one that parses it in full, as `vpnclient connect`
    does to the daemon.
    """
    p = Path(path)
    try:
        with p.open("rb") as f:
            data = f.read(MAX_PROFILE_BYTES + 1)
    except OSError as e:
        raise ProfileError(str(p), f"cannot read file ({e.strerror or e})") from None
    return parse_profile(data, source=str(p), parse_certificates=parse_certificates)


def parse_profile(data: bytes | str, *, source: str = "profile",
                  parse_certificates: bool = True) -> Profile:
    """Parse and validate a `.vpnprofile` / `.sswan` document.

    `source` names the document in errors about the document as a whole.
    """
    return profile_from_dict(_load_json(data, source), parse_certificates=parse_certificates)


def profile_from_dict(obj: dict[str, Any], *, parse_certificates: bool = True) -> Profile:
    """Validate already-decoded profile data (e.g. built by the .mobileconfig converter)."""
    if not isinstance(obj, dict):
        raise ProfileError("profile", "must be a JSON object")
    return _Parser(obj, parse_certificates).profile()


# -- the document ---------------------------------------------------------------------

def _load_json(data: bytes | str, source: str) -> dict[str, Any]:
    if len(data) > MAX_PROFILE_BYTES:
        raise ProfileError(source, f"larger than {MAX_PROFILE_BYTES // 1024} KiB")
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8-sig")  # tolerate the BOM some Windows editors add
        except UnicodeDecodeError as e:
            raise ProfileError(source, f"not valid UTF-8 (byte offset {e.start})") from None
    else:
        text = data.removeprefix("\ufeff")
    # Before json.loads: its decoder recurses once per level, and every value it makes
    # costs the parse and the copies of Profile.raw again.
    too_complex = json_too_complex(text, MAX_PROFILE_DEPTH, MAX_PROFILE_VALUES)
    if too_complex:
        raise ProfileError(source, f"not valid JSON ({too_complex})")
    try:
        obj = json.loads(text, object_pairs_hook=_no_duplicates,
                         parse_constant=_no_constants)
    except json.JSONDecodeError as e:
        raise ProfileError(
            source, f"not valid JSON (line {e.lineno} column {e.colno}: {e.msg})"
        ) from None
    except _DuplicateKey as e:
        raise ProfileError(source, f"not valid JSON (duplicate key '{e.args[0]}')") from None
    except RecursionError:
        raise ProfileError(source, "not valid JSON (nested too deeply)") from None
    except ValueError as e:  # an integer beyond Python's int/str conversion limit
        raise ProfileError(source, f"not valid JSON ({e})") from None
    if not isinstance(obj, dict):
        raise ProfileError(source, "must be a JSON object")
    return obj


class _DuplicateKey(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Android's org.json rejects duplicates too; silently taking the last one could hide
    # a typo'd override in a hand-edited profile.
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise _DuplicateKey(k)
        out[k] = v
    return out


def _no_constants(name: str) -> Any:
    raise json.JSONDecodeError(f"{name} is not allowed", name, 0)


# -- the keys -------------------------------------------------------------------------

_MISSING = object()


class _Parser:
    def __init__(self, obj: dict[str, Any], parse_certificates: bool = True) -> None:
        self.obj = obj
        self.unknown: list[str] = []
        self.parse_certificates = parse_certificates

    # Lookup by dotted path; every object on the way must be a JSON object.
    def get(self, path: str) -> Any:
        cur: Any = self.obj
        parts = path.split(".")
        for i, part in enumerate(parts):
            if i:
                parent = ".".join(parts[:i])
                if not isinstance(cur, dict):
                    raise ProfileError(parent, "must be a JSON object")
            cur = cur.get(part, _MISSING)
            if cur is _MISSING:
                return _MISSING
        return cur

    def obj_at(self, path: str) -> dict[str, Any] | None:
        v = self.get(path)
        if v is _MISSING or v is None:
            return None
        if not isinstance(v, dict):
            raise ProfileError(path, "must be a JSON object")
        return v

    def string(self, path: str, *, required: bool = False, single_line: bool = True
               ) -> str | None:
        v = self.get(path)
        if v is _MISSING or v is None:
            if required:
                raise ProfileError(path, "missing")
            return None
        if not isinstance(v, str):
            raise ProfileError(path, "must be a string")
        if v.strip() == "":
            if required:
                raise ProfileError(path, "must not be empty")
            return None  # Android treats "" like an absent optional key
        if single_line and _CONTROL_CHAR_RE.search(v):
            raise ProfileError(path, "must not contain control characters")
        return v

    def boolean(self, path: str, default: bool) -> bool:
        v = self.get(path)
        if v is _MISSING or v is None:
            return default
        if not isinstance(v, bool):
            raise ProfileError(path, "must be true or false")
        return v

    def integer(self, path: str, default: int | None, bounds: tuple[int, int],
                reason: str | None = None) -> int | None:
        v = self.get(path)
        if v is _MISSING or v is None:
            return default
        lo, hi = bounds
        # bool is an int in Python; JSON true is not a number
        if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
            raise ProfileError(path, reason or f"must be an integer between {lo} and {hi}")
        return v

    def str_list(self, path: str, *, split_string: bool, limit: int | None = None,
                 what: str = "items") -> list[tuple[str, str]]:
        """Items as (key path, value); a string is one item or, if allowed, split on space.
        More than `limit` items is an error, raised before any item is looked at."""
        v = self.get(path)
        if v is _MISSING or v is None:
            return []
        if isinstance(v, str):
            items = (v.split(maxsplit=limit) if limit is not None else v.split()) \
                if split_string else ([v] if v.strip() else [])
            if limit is not None and len(items) > limit:
                raise ProfileError(path, f"more than {limit} {what}")
            return [(f"{path}[{i}]", s) for i, s in enumerate(items)]
        if not isinstance(v, list):
            raise ProfileError(path, "must be a list of strings")
        if limit is not None and len(v) > limit:
            raise ProfileError(path, f"more than {limit} {what}")
        out = []
        for i, s in enumerate(v):
            if not isinstance(s, str):
                raise ProfileError(f"{path}[{i}]", "must be a string")
            out.append((f"{path}[{i}]", s))
        return out

    def note_unknown(self, path: str, allowed: frozenset[str]) -> None:
        o = self.obj if path == "" else self.obj_at(path)
        for k in o or {}:
            if k not in allowed:
                self.unknown.append(f"{path}.{k}" if path else k)

    # -- the profile ------------------------------------------------------------------

    def profile(self) -> Profile:
        self.note_unknown("", _TOP_KEYS)
        for sub, allowed in _SUB_KEYS.items():
            self.note_unknown(sub, allowed)

        fmt = self.string("format")
        if fmt is not None and fmt != FORMAT_V1:
            raise ProfileError("format", f"unsupported format '{fmt}' (expected '{FORMAT_V1}')")

        uuid = self.string("uuid", required=True)
        assert uuid is not None
        if not _UUID_RE.match(uuid):
            raise ProfileError("uuid", "not an RFC 4122 UUID")
        uuid = uuid.lower()  # canonical, as the regex checked the form: it names the file
        name = self.string("name", required=True)
        assert name is not None
        if len(name) > 256:
            raise ProfileError("name", "longer than 256 characters")
        ptype = self.string("type", required=True)
        if ptype not in PROFILE_TYPES:
            raise ProfileError("type", f"unknown type '{ptype}'")

        if self.obj_at("remote") is None:
            raise ProfileError("remote.addr", "missing")
        addrs = self._remote_addrs()
        remote_id = self._identity("remote.id")
        local_secret = self.string("local.shared_secret")
        p12 = self._p12()
        if ptype in CERT_TYPES and p12 is None:
            raise ProfileError("local.p12", f"missing (required for type '{ptype}')")

        ignored = [k for k in IGNORED_KEYS if k in self.obj]
        if local_secret is not None and ptype not in SECRET_TYPES:
            ignored.append("local.shared_secret")  # nothing to use it for; not kept
            local_secret = None

        ike_text, ike = self._proposals("ike-proposal", ProtocolId.IKE)
        esp_text, esp = self._proposals("esp-proposal", ProtocolId.ESP)
        return Profile(
            uuid=uuid,
            name=name,
            type=ptype,
            remote_addrs=addrs,
            remote_port=self._int("remote.port", DEFAULT_PORT, PORT_RANGE),
            remote_id=remote_id if remote_id is not None else addrs[0],
            remote_id_explicit=remote_id is not None,
            remote_certs=self._remote_certs(),
            remote_certreq=self.boolean("remote.certreq", True),
            revocation={k: self.boolean(f"remote.revocation.{k}", d)
                        for k, d in DEFAULT_REVOCATION.items()},
            local_id=self._identity("local.id"),
            eap_id=self._identity("local.eap_id") if _eap_id_is_ike_id(ptype, self.get("local.id"))
            else self.string("local.eap_id"),
            p12=p12,
            rsa_pss=self.boolean("local.rsa-pss", False),
            shared_secret=local_secret,
            ike_proposals=ike,
            esp_proposals=esp,
            ike_proposal_text=ike_text,
            esp_proposal_text=esp_text,
            dns_servers=self._dns_servers(),
            dns_domains=self._dns_domains(),
            mtu=self.integer("mtu", None, MTU_RANGE),
            nat_keepalive=self._int("nat-keepalive", DEFAULT_NAT_KEEPALIVE,
                                    NAT_KEEPALIVE_RANGE, "must be between {lo} and {hi}"),
            ipv6_transport=self.boolean("ipv6-transport", False),
            split_subnets=self._subnets("split-tunneling.subnets"),
            split_excluded=self._subnets("split-tunneling.excluded"),
            block_ipv4=self.boolean("split-tunneling.block-ipv4", False),
            block_ipv6=self.boolean("split-tunneling.block-ipv6", False),
            mobike=self.boolean("mobike", True),
            dpd=self._int("dpd", DEFAULT_DPD, DPD_RANGE),
            reconnect_auto=self.boolean("reconnect.auto", True),
            reconnect_max_backoff=self._int("reconnect.max-backoff", DEFAULT_MAX_BACKOFF,
                                            MAX_BACKOFF_RANGE),
            kill_switch=self.boolean("kill-switch", False),
            eap_only=self.boolean("remote.eap-only", False),
            crypto_relax=self._crypto_relax(),
            eap_methods=self._eap_methods(ptype),
            lifetimes={
                "ike": self._int("lifetimes.ike", DEFAULT_LIFETIMES["ike"],
                                 IKE_LIFETIME_RANGE),
                "child": self._int("lifetimes.child", DEFAULT_LIFETIMES["child"],
                                   CHILD_LIFETIME_RANGE),
            },
            format=fmt,
            ignored=ignored,
            unknown=self.unknown,
            raw=_without_secrets(self.obj),
        )

    def _identity(self, path: str) -> str | None:
        """An IKE identity, classified as the engine will (identity.classify_identity)."""
        text = self.string(path)
        if text is not None and len(text) > MAX_IDENTITY_CHARS:
            raise ProfileError(path, f"longer than {MAX_IDENTITY_CHARS} characters")
        if text is None or not self.parse_certificates or _plain_name(text):
            return text  # a DN needs cryptography.x509: the full parse checks it
        from .ikev2.identity import classify_identity  # imports cryptography.x509

        try:
            classify_identity(text)
        except ValueError as exc:
            raise ProfileError(path, f"not a valid IKE identity: {exc}") from None
        return text

    def _int(self, path: str, default: int, bounds: tuple[int, int],
             reason: str | None = None) -> int:
        lo, hi = bounds
        v = self.integer(path, default, bounds,
                         reason.format(lo=lo, hi=hi) if reason else None)
        assert v is not None
        return v

    def _crypto_relax(self) -> tuple[str, ...]:
        items = self.str_list("remote.crypto-policy.relax", split_string=False)
        if not items:
            return ()
        # Only now: the policy module loads X.509 support, which `list` need not.
        from .ikev2.auth.policy import RELAX_KEY, RULES

        if len(items) > len(RULES):
            raise ProfileError(RELAX_KEY, f"lists more than the {len(RULES)} rules there are")
        names = []
        for path, name in items:
            if name not in RULES:
                raise ProfileError(path, f"unknown rule '{name}' (known: {', '.join(RULES)})")
            names.append(name)
        return tuple(dict.fromkeys(names))

    def _eap_methods(self, ptype: str) -> tuple[str, ...]:
        from .ikev2.auth.eap.methods import METHOD_NAMES, check_names

        items = self.str_list("local.eap-methods", split_string=False)
        if not items:
            return ()
        if len(items) > len(METHOD_NAMES):
            raise ProfileError("local.eap-methods", "lists more methods than there are")
        try:
            return check_names(ptype, items)
        except ValueError as exc:
            raise ProfileError(*exc.args) from None

    def _remote_addrs(self) -> list[str]:
        addr = self.string("remote.addr", required=True)
        assert addr is not None
        items = [("remote.addr", addr),
                 *self.str_list("remote.addrs", split_string=False, limit=MAX_REMOTE_ADDRS,
                                what="addresses")]
        out: list[str] = []
        seen: set[str] = set()
        for key, value in items:
            host = _host(key, value)
            if host.lower() not in seen:
                seen.add(host.lower())
                out.append(host)
        return out

    def _remote_certs(self) -> list[bytes]:
        v = self.get("remote.cert")
        if v is _MISSING or v is None:
            return []
        if isinstance(v, str):
            items = [("remote.cert", v)]
        elif not isinstance(v, list):
            raise ProfileError("remote.cert", "must be a string or a list of strings")
        elif len(v) > MAX_REMOTE_CERTS:
            raise ProfileError("remote.cert", f"more than {MAX_REMOTE_CERTS} certificates")
        else:
            items = [(f"remote.cert[{i}]", item) for i, item in enumerate(v)]
        out: list[bytes] = []
        for key, item in items:
            if not isinstance(item, str):
                raise ProfileError(key, "must be a string")
            ders = _certs(key, item)
            out.extend(ders)
            if len(out) > MAX_REMOTE_CERTS:  # counted before the X.509 parse of these
                raise ProfileError(key, f"more than {MAX_REMOTE_CERTS} certificates")
            if self.parse_certificates:
                for der in ders:
                    _check_x509(key, der)
        return out

    def _p12(self) -> bytes | None:
        text = self.string("local.p12", single_line=False)
        if text is None:
            return None
        der = _b64("local.p12", text)
        # Without the passphrase only the outer DER SEQUENCE can be checked here.
        if len(der) < 2 or der[0] != 0x30:
            raise ProfileError("local.p12", "not a PKCS#12 container")
        return der

    def _proposals(self, key: str, proto: ProtocolId) -> tuple[str | None, list[Proposal]]:
        text = self.string(key)
        if text is None:
            return None, default_ike_proposals() if proto == ProtocolId.IKE \
                else default_esp_proposals()
        if len(text) > MAX_PROPOSAL_TEXT:
            raise ProfileError(key, f"longer than {MAX_PROPOSAL_TEXT} characters")
        if text.count(",") >= MAX_PROPOSALS:
            raise ProfileError(key, f"more than {MAX_PROPOSALS} proposals")
        try:
            return text, parse_proposals(text, proto)
        except ValueError as e:
            raise ProfileError(key, str(e)) from None

    def _dns_servers(self) -> list[IPAddress]:
        out: list[IPAddress] = []
        for key, value in self.str_list("dns-servers", split_string=True,
                                        limit=MAX_DNS_SERVERS, what="addresses"):
            try:
                out.append(ip_address(value.strip()))
            except ValueError:
                raise ProfileError(key, "not an IP address") from None
        return out

    def _dns_domains(self) -> list[str]:
        out: list[str] = []
        for key, value in self.str_list("dns-domains", split_string=True,
                                        limit=MAX_DNS_DOMAINS, what="domains"):
            name = value.strip().rstrip(".")
            if not _is_dns_name(name):
                raise ProfileError(key, "not a domain name")
            out.append(name)
        return out

    def _subnets(self, path: str) -> list[IPNetwork]:
        # Android accepts CIDR, a bare address or a range "a - b", and a single string
        # holding several of them separated by spaces (its IPRangeSet syntax).
        v = self.get(path)
        if isinstance(v, str):
            items = [(f"{path}[{i}]", s) for i, s in enumerate(_split_ranges(v))]
        else:
            items = self.str_list(path, split_string=False)
        out: list[IPNetwork] = []
        for key, value in items:
            out.extend(_network(key, value))
            if len(out) > MAX_SPLIT_NETWORKS:  # checked per item: a range is <= 256 networks
                raise ProfileError(key, f"more than {MAX_SPLIT_NETWORKS} networks in {path}")
        return out


# -- value parsers --------------------------------------------------------------------

def _plain_name(text: str) -> bool:
    """An FQDN, e-mail address or IPv4 address: no type prefix, key id or DN syntax (no
    ':', '#' or '='), so it classifies without the import of identity's cryptography."""
    s = text.strip()
    if any(c in s for c in ":#=") or s in ("", "@"):
        return False
    try:
        return len(s.encode()) <= 253
    except UnicodeEncodeError:
        return False


def _eap_id_is_ike_id(ptype: str, local_id: object) -> bool:
    """Whether local.eap_id is also sent as IDi: without local.id for EAP, and as the
    identity of the second round (RFC 4739) of cert+EAP."""
    absent = not (isinstance(local_id, str) and local_id.strip())
    return ptype == "ikev2-cert-eap" or (ptype == "ikev2-eap" and absent)


def _host(key: str, value: str) -> str:
    v = value.strip()
    try:
        return str(ip_address(v.strip("[]")))
    except ValueError:
        pass
    if not _is_dns_name(v.rstrip(".")):
        raise ProfileError(key, "not a host name or IP address")
    return v


def _is_dns_name(name: str) -> bool:
    try:
        ascii_name = name.encode("idna").decode("ascii") if not name.isascii() else name
    except UnicodeError:
        return False
    if not ascii_name or len(ascii_name) > 253:
        return False
    return all(_LABEL_RE.match(label) for label in ascii_name.split("."))


def _split_ranges(text: str) -> list[str]:
    # "10.0.0.1 - 10.0.0.9 10.1.0.0/16" -> ["10.0.0.1-10.0.0.9", "10.1.0.0/16"]
    return re.sub(r"\s*-\s*", "-", text.strip()).split()


def _network(key: str, value: str) -> list[IPNetwork]:
    v = value.replace(" ", "")
    try:
        if "-" in v and "/" not in v:
            lo, _, hi = v.partition("-")
            first, last = ip_address(lo), ip_address(hi)
            if first.version != last.version or first > last:
                raise ValueError
            return list(summarize_address_range(first, last))  # type: ignore[arg-type]
        # By its form: ip_network() tries IPv4 first, which more than doubles the cost
        # of an IPv6 network (MAX_SPLIT_NETWORKS of them are read at every load).
        return [IPv6Network(v, strict=False) if ":" in v else IPv4Network(v, strict=False)]
    except (ValueError, TypeError):
        raise ProfileError(key, "not a CIDR") from None


def _b64(key: str, text: str) -> bytes:
    compact = "".join(text.split())  # generators wrap base64 at 64 or 76 columns
    if not compact or len(compact) % 4 or not _B64_RE.match(compact):
        raise ProfileError(key, "not valid base64")
    try:
        return base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        raise ProfileError(key, "not valid base64") from None


def _certs(key: str, text: str) -> list[bytes]:
    """DER of the certificate(s) in a base64 DER or PEM string (PEM may hold several),
    not yet parsed as X.509 (see _check_x509)."""
    if "-----BEGIN" in text:
        bodies = _pem_bodies(text)
        if not bodies:
            raise ProfileError(key, "not valid base64 or PEM (no CERTIFICATE block)")
        if len(bodies) > MAX_REMOTE_CERTS:
            raise ProfileError(key, f"more than {MAX_REMOTE_CERTS} certificates")
        ders = []
        for body in bodies:
            try:
                ders.append(_b64(key, body))
            except ProfileError:
                raise ProfileError(key, "not valid base64 or PEM") from None
    elif text.strip():
        try:
            ders = [_b64(key, text)]
        except ProfileError:
            raise ProfileError(key, "not valid base64 or PEM") from None
    else:
        return []
    return ders


def _pem_bodies(text: str) -> list[str]:
    """What lies between each BEGIN CERTIFICATE line and the next END line. A search,
    not the regex `BEGIN(.*?)END`: that one rescans the rest of the text from every BEGIN
    that has no END (quadratic: 430 KB of BEGIN lines took 37 s)."""
    out = []
    pos = 0
    while (start := text.find(_PEM_BEGIN, pos)) >= 0:
        start += len(_PEM_BEGIN)
        end = text.find(_PEM_END, start)
        if end < 0:
            break  # no END after this BEGIN: none after any later one either
        out.append(text[start:end])
        pos = end + len(_PEM_END)
    return out


def _check_x509(key: str, der: bytes) -> None:
    from cryptography import x509  # costly to import: only profiles that pin a CA pay

    try:
        cert = x509.load_der_x509_certificate(der)
        # cryptography parses these lazily: a bad one must fail here, naming the key,
        # not later in the handshake.
        _ = cert.subject, cert.issuer, cert.extensions  # each access parses (and caches)
    except (ValueError, x509.InvalidVersion):  # the latter is no ValueError
        raise ProfileError(key, "not an X.509 certificate") from None


def _without_secrets(obj: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(obj)
    _pop(out, "local.shared_secret")
    return out


def _pop(obj: dict[str, Any], path: str) -> None:
    *parents, last = path.split(".")
    cur: Any = obj
    for p in parents:
        cur = cur.get(p) if isinstance(cur, dict) else None
    if isinstance(cur, dict):
        cur.pop(last, None)


def _put(obj: dict[str, Any], path: str, value: Any, default: Any, *, force: bool = False
         ) -> None:
    """Set `path` when forced, when the key already exists, or when value != default."""
    *parents, last = path.split(".")
    cur = obj
    present = True
    for p in parents:
        nxt = cur.get(p)
        if not isinstance(nxt, dict):
            present = False
            break
        cur = nxt
    present = present and last in cur
    if not (force or present or value != default):
        return
    if value is None or value == [] and not force:
        if present:
            cur.pop(last)
        return
    cur = obj
    for p in parents:
        if not isinstance(cur.get(p), dict):
            cur[p] = {}
        cur = cur[p]
    cur[last] = value
