"""SA proposals: strongSwan proposal syntax, defaults, and checking the peer's choice."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import NamedTuple

from .constants import (
    DhId,
    EncrId,
    EsnId,
    IntegId,
    PrfId,
    ProtocolId,
    TransformType,
    is_aead,
)
from .errors import NoProposalChosen


@dataclass(frozen=True)
class Transform:
    type: TransformType
    id: int
    key_length: int | None = None  # bits, from the KEY_LENGTH attribute


@dataclass
class Proposal:
    number: int
    protocol: ProtocolId
    spi: bytes = b""
    transforms: list[Transform] = field(default_factory=list)

    def of_type(self, ttype: TransformType) -> list[Transform]:
        return [t for t in self.transforms if t.type == ttype]

    def first(self, ttype: TransformType) -> Transform | None:
        found = self.of_type(ttype)
        return found[0] if found else None


# ---------------------------------------------------------------------------
# strongSwan keywords
# ---------------------------------------------------------------------------

_ENCR_KEYWORDS: dict[str, tuple[EncrId, int | None]] = {
    "aes128": (EncrId.AES_CBC, 128),
    "aes192": (EncrId.AES_CBC, 192),
    "aes256": (EncrId.AES_CBC, 256),
    "chacha20poly1305": (EncrId.CHACHA20_POLY1305, None),
}
for _bits in (128, 192, 256):
    # strongSwan accepts the ICV length in bytes (16) or bits (128), or no suffix at all.
    for _suffix in ("gcm16", "gcm128", "gcm"):
        _ENCR_KEYWORDS[f"aes{_bits}{_suffix}"] = (EncrId.AES_GCM_16, _bits)

_INTEG_KEYWORDS: dict[str, IntegId] = {
    "sha1": IntegId.HMAC_SHA1_96,
    "sha": IntegId.HMAC_SHA1_96,
    "sha256": IntegId.HMAC_SHA2_256_128,
    "sha2_256": IntegId.HMAC_SHA2_256_128,
    "sha384": IntegId.HMAC_SHA2_384_192,
    "sha2_384": IntegId.HMAC_SHA2_384_192,
    "sha512": IntegId.HMAC_SHA2_512_256,
    "sha2_512": IntegId.HMAC_SHA2_512_256,
}

_PRF_KEYWORDS: dict[str, PrfId] = {
    "prfsha1": PrfId.HMAC_SHA1,
    "prfsha256": PrfId.HMAC_SHA2_256,
    "prfsha384": PrfId.HMAC_SHA2_384,
    "prfsha512": PrfId.HMAC_SHA2_512,
}

_DH_KEYWORDS: dict[str, DhId] = {
    "modp2048": DhId.MODP_2048,
    "modp3072": DhId.MODP_3072,
    "modp4096": DhId.MODP_4096,
    "ecp256": DhId.ECP_256,
    "ecp384": DhId.ECP_384,
    "ecp521": DhId.ECP_521,
    "x25519": DhId.CURVE25519,
    "curve25519": DhId.CURVE25519,
    "x448": DhId.CURVE448,
    "curve448": DhId.CURVE448,
}

_ESN_KEYWORDS: dict[str, EsnId] = {"esn": EsnId.ESN, "noesn": EsnId.NO_ESN}

# The PRF strongSwan derives from an integrity algorithm when a proposal names none.
_PRF_FOR_INTEG: dict[IntegId, PrfId] = {
    IntegId.HMAC_SHA1_96: PrfId.HMAC_SHA1,
    IntegId.HMAC_SHA2_256_128: PrfId.HMAC_SHA2_256,
    IntegId.HMAC_SHA2_384_192: PrfId.HMAC_SHA2_384,
    IntegId.HMAC_SHA2_512_256: PrfId.HMAC_SHA2_512,
}

# Canonical names for format_proposal: the first keyword listed for each value.
_ENCR_NAMES = {v: k for k, v in reversed(list(_ENCR_KEYWORDS.items()))}
_INTEG_NAMES = {v: k for k, v in reversed(list(_INTEG_KEYWORDS.items()))}
_PRF_NAMES = {v: k for k, v in reversed(list(_PRF_KEYWORDS.items()))}
_DH_NAMES = {v: k for k, v in reversed(list(_DH_KEYWORDS.items()))}

# Transform order inside a proposal we send (the order strongSwan uses).
_TYPE_ORDER = (TransformType.ENCR, TransformType.INTEG, TransformType.PRF, TransformType.DH,
               TransformType.ESN)

_DEFAULT_IKE = (
    "aes256gcm16-aes128gcm16-chacha20poly1305-prfsha256-prfsha384-prfsha512"
    "-x25519-ecp256-ecp384-modp3072-modp2048",
    "aes256-aes128-sha256-sha384-sha512-prfsha256-prfsha384-prfsha512"
    "-x25519-ecp256-ecp384-modp3072-modp2048",
)
_DEFAULT_ESP = (
    "aes256gcm16-aes128gcm16-chacha20poly1305-noesn",
    "aes256-aes128-sha256-sha384-sha512-noesn",
)


def _add(found: list[Transform], t: Transform) -> None:
    if t not in found:  # a repeated keyword adds nothing
        found.append(t)


def _parse_one(text: str, protocol: ProtocolId) -> list[Transform]:
    tokens = [tok.strip().lower() for tok in text.split("-")]
    found: list[Transform] = []
    for tok in tokens:
        if tok in _ENCR_KEYWORDS:
            encr, bits = _ENCR_KEYWORDS[tok]
            _add(found, Transform(TransformType.ENCR, encr, bits))
        elif tok in _INTEG_KEYWORDS:
            _add(found, Transform(TransformType.INTEG, _INTEG_KEYWORDS[tok]))
        elif tok in _PRF_KEYWORDS:
            if protocol != ProtocolId.IKE:
                raise ValueError(f"proposal '{text}': a PRF is only allowed in IKE proposals")
            _add(found, Transform(TransformType.PRF, _PRF_KEYWORDS[tok]))
        elif tok in _DH_KEYWORDS:
            _add(found, Transform(TransformType.DH, _DH_KEYWORDS[tok]))
        elif tok in _ESN_KEYWORDS:
            if protocol != ProtocolId.ESP:
                raise ValueError(f"proposal '{text}': ESN is only allowed in ESP proposals")
            _add(found, Transform(TransformType.ESN, _ESN_KEYWORDS[tok]))
        elif tok == "":
            raise ValueError(f"proposal '{text}': empty algorithm name")
        else:
            raise ValueError(f"unknown algorithm '{tok}'")

    by_type = {tt: [t for t in found if t.type == tt] for tt in _TYPE_ORDER}
    encrs = by_type[TransformType.ENCR]
    if not encrs:
        raise ValueError(f"proposal '{text}': no encryption algorithm")
    aead = [is_aead(t.id) for t in encrs]
    if any(aead) and not all(aead):
        raise ValueError(f"proposal '{text}': AEAD and non-AEAD encryption cannot be mixed")
    if all(aead):
        if by_type[TransformType.INTEG]:
            raise ValueError(
                f"proposal '{text}': an integrity algorithm cannot be used with AEAD encryption"
            )
    elif not by_type[TransformType.INTEG]:
        raise ValueError(f"proposal '{text}': no integrity algorithm")

    if protocol == ProtocolId.IKE:
        if not by_type[TransformType.DH]:
            raise ValueError(f"proposal '{text}': no key exchange group")
        if not by_type[TransformType.PRF]:
            # Like strongSwan: without an explicit PRF use those matching the integrity algs.
            for t in by_type[TransformType.INTEG]:
                _add(by_type[TransformType.PRF],
                     Transform(TransformType.PRF, _PRF_FOR_INTEG[IntegId(t.id)]))
        if not by_type[TransformType.PRF]:
            raise ValueError(f"proposal '{text}': no PRF")
    elif not by_type[TransformType.ESN]:
        by_type[TransformType.ESN] = [Transform(TransformType.ESN, EsnId.NO_ESN)]
    return [t for tt in _TYPE_ORDER for t in by_type[tt]]


def parse_proposals(text: str, protocol: ProtocolId) -> list[Proposal]:
    """Parse a strongSwan proposal list such as 'aes256gcm16-prfsha384-ecp384,default'.

    Proposals are numbered from 1 in the order given. Raises ValueError with a reason.
    """
    if protocol not in (ProtocolId.IKE, ProtocolId.ESP):
        raise ValueError(f"proposals for {protocol.name} are not supported")
    items = [item.strip() for item in text.split(",")]
    if not any(items):
        raise ValueError("empty proposal list")
    transforms: list[list[Transform]] = []
    for item in items:
        if not item:
            raise ValueError(f"empty proposal in '{text}'")
        if item.lower() == "default":
            defaults = _DEFAULT_IKE if protocol == ProtocolId.IKE else _DEFAULT_ESP
            transforms.extend(_parse_one(d, protocol) for d in defaults)
        else:
            transforms.append(_parse_one(item, protocol))
    return [Proposal(n, protocol, transforms=ts) for n, ts in enumerate(transforms, start=1)]


def default_ike_proposals() -> list[Proposal]:
    return parse_proposals("default", ProtocolId.IKE)


def default_esp_proposals() -> list[Proposal]:
    return parse_proposals("default", ProtocolId.ESP)


# ---------------------------------------------------------------------------
# The selected proposal
# ---------------------------------------------------------------------------


class ChosenIds(NamedTuple):
    """The algorithms of a selected proposal (one transform of each type)."""

    encr: int
    key_bits: int | None
    integ: int | None  # None for AEAD
    prf: int | None  # None for ESP
    dh: int | None  # None when no key exchange is part of the proposal
    esn: bool


def chosen_ids(p: Proposal) -> ChosenIds:
    """Unpack a proposal that `check_selected` accepted."""
    encr = p.first(TransformType.ENCR)
    if encr is None:
        raise ValueError("proposal has no encryption transform")
    integ = p.first(TransformType.INTEG)
    prf = p.first(TransformType.PRF)
    dh = p.first(TransformType.DH)
    esn = p.first(TransformType.ESN)
    return ChosenIds(
        encr=encr.id,
        key_bits=encr.key_length,
        integ=integ.id if integ and integ.id != IntegId.NONE else None,
        prf=prf.id if prf else None,
        dh=dh.id if dh and dh.id != DhId.NONE else None,
        esn=bool(esn and esn.id == EsnId.ESN),
    )


def _name(table: dict, key: object, ttype: TransformType, t: Transform) -> str:
    name = table.get(key)
    if name is not None:
        return name
    bits = f"_{t.key_length}" if t.key_length else ""
    return f"{ttype.name.lower()}{t.id}{bits}"


def format_proposal(p: Proposal) -> str:
    """strongSwan-style name of a selected proposal, e.g. 'aes256gcm16-prfsha384-ecp384'.

    The PRF is left out when it is the one the integrity algorithm implies, as strongSwan
    would parse it back the same way ('aes128-sha256-modp2048').
    """
    ids = chosen_ids(p)
    encr = p.first(TransformType.ENCR)
    assert encr is not None
    parts = [_name(_ENCR_NAMES, (ids.encr, ids.key_bits), TransformType.ENCR, encr)]
    if ids.integ is not None:
        t = p.first(TransformType.INTEG)
        assert t is not None
        parts.append(_name(_INTEG_NAMES, ids.integ, TransformType.INTEG, t))
    if ids.prf is not None:
        implied = _PRF_FOR_INTEG.get(IntegId(ids.integ)) if ids.integ is not None else None
        if ids.prf != implied:
            t = p.first(TransformType.PRF)
            assert t is not None
            parts.append(_name(_PRF_NAMES, ids.prf, TransformType.PRF, t))
    if ids.dh is not None:
        t = p.first(TransformType.DH)
        assert t is not None
        parts.append(_name(_DH_NAMES, ids.dh, TransformType.DH, t))
    if ids.esn:
        parts.append("esn")
    return "-".join(parts)


def _label(value: int) -> str:
    """An enum member's name; a peer's value we have no name for (a plain int) as a number."""
    return value.name if isinstance(value, IntEnum) else f"#{value}"


def check_selected(offered: list[Proposal], chosen: Proposal) -> Proposal:
    """Validate the responder's choice against what we offered (RFC 7296 3.3.6).

    The chosen proposal must carry our proposal number and exactly one transform of each
    type that proposal had, each one of ours (key length included). A NONE integrity
    transform next to AEAD (RFC 5282 8) is tolerated and dropped from the returned copy.
    Raises NoProposalChosen with a reason.
    """
    ours = next((p for p in offered if p.number == chosen.number), None)
    if ours is None:
        raise NoProposalChosen(f"responder chose proposal #{chosen.number}, which we never sent")
    if chosen.protocol != ours.protocol:
        raise NoProposalChosen(
            f"responder chose protocol {_label(chosen.protocol)}, we offered "
            f"{_label(ours.protocol)}"
        )
    transforms = list(chosen.transforms)
    if not ours.of_type(TransformType.INTEG):
        transforms = [t for t in transforms
                      if not (t.type == TransformType.INTEG and t.id == IntegId.NONE)]
    for t in transforms:
        if t not in ours.transforms:
            bits = f" ({t.key_length} bits)" if t.key_length else ""
            raise NoProposalChosen(
                f"responder chose {_label(t.type)} transform {t.id}{bits}, which we did not "
                "offer"
            )
    for ttype in TransformType:
        count = sum(1 for t in transforms if t.type == ttype)
        wanted = 1 if ours.of_type(ttype) else 0
        if count != wanted:
            raise NoProposalChosen(
                f"responder chose {count} {ttype.name} transforms, expected {wanted}"
            )
    return Proposal(chosen.number, chosen.protocol, chosen.spi, transforms)


# ---------------------------------------------------------------------------
# Helpers for the exchanges
# ---------------------------------------------------------------------------


def first_dh_group(proposals: list[Proposal]) -> int | None:
    """The group to send a KE payload for: the first DH transform of the first proposal."""
    for p in proposals:
        dh = p.first(TransformType.DH)
        if dh is not None and dh.id != DhId.NONE:
            return dh.id
    return None


def with_dh_first(proposals: list[Proposal], group: int) -> list[Proposal]:
    """Proposals for the retry after INVALID_KE_PAYLOAD asking for `group`.

    Keeps only the proposals that offered `group`, each with that group as its only DH
    transform (so the responder cannot pick yet another group), renumbered from 1.
    Raises NoProposalChosen if we never offered `group`.
    """
    want = Transform(TransformType.DH, group)
    result = []
    for p in proposals:
        if want in p.transforms:
            ts = [t for t in p.transforms if t.type != TransformType.DH or t == want]
            result.append(Proposal(len(result) + 1, p.protocol, p.spi, ts))
    if not result:
        name = DhId(group).name if group in DhId._value2member_map_ else str(group)
        raise NoProposalChosen(f"responder asked for key exchange group {name}, not offered")
    return result


def without_dh(proposals: list[Proposal]) -> list[Proposal]:
    """Copies without DH transforms: the Child SA in IKE_AUTH has no key exchange."""
    return [Proposal(p.number, p.protocol, p.spi,
                     [t for t in p.transforms if t.type != TransformType.DH])
            for p in proposals]


def with_spi(proposals: list[Proposal], spi: bytes) -> list[Proposal]:
    """Copies carrying `spi` (our inbound ESP SPI, or the new IKE SPI when rekeying)."""
    return [Proposal(p.number, p.protocol, spi, list(p.transforms)) for p in proposals]


def select_proposal(offered: list[Proposal], acceptable: list[Proposal],
                    ke_group: int | None = None) -> Proposal | None:
    """Choose as the responder (the gateway rekeys, RFC 7296 2.7): the first of the peer's
    proposals one of ours covers, one transform of each type, the first the peer lists
    among ours, except that the group of the peer's KE payload is preferred (no
    INVALID_KE_PAYLOAD round). The result carries the peer's number and SPI."""
    for theirs in offered:
        types = list(dict.fromkeys(t.type for t in theirs.transforms))
        for ours in acceptable:
            if ours.protocol != theirs.protocol or set(types) != {
                    t.type for t in ours.transforms}:
                continue
            picked = []
            for ttype in types:
                options = [t for t in theirs.of_type(ttype) if t in ours.transforms]
                if ttype == TransformType.DH:
                    options = [t for t in options if t.id == ke_group] or options
                if not options:
                    break
                picked.append(options[0])
            else:
                return Proposal(theirs.number, theirs.protocol, theirs.spi, picked)
    return None
