"""strongSwan proposal syntax, defaults, formatting and checking the responder's choice."""

import pytest

from client.ikev2.constants import DhId, EncrId, EsnId, IntegId, PrfId, ProtocolId
from client.ikev2.constants import TransformType as T
from client.ikev2.errors import NoProposalChosen
from client.ikev2.proposals import (
    ChosenIds,
    Proposal,
    Transform,
    check_selected,
    chosen_ids,
    default_esp_proposals,
    default_ike_proposals,
    first_dh_group,
    format_proposal,
    parse_proposals,
    with_dh_first,
    with_spi,
    without_dh,
)

IKE, ESP = ProtocolId.IKE, ProtocolId.ESP


def ids(p: Proposal) -> list[tuple[int, int, int | None]]:
    return [(t.type, t.id, t.key_length) for t in p.transforms]


def test_parse_aead_ike_proposal_with_several_algorithms() -> None:
    [p] = parse_proposals("aes256gcm16-aes128gcm16-prfsha384-prfsha256-ecp384-x25519", IKE)
    assert p.number == 1 and p.protocol == IKE and p.spi == b""
    assert ids(p) == [
        (T.ENCR, EncrId.AES_GCM_16, 256),
        (T.ENCR, EncrId.AES_GCM_16, 128),
        (T.PRF, PrfId.HMAC_SHA2_384, None),
        (T.PRF, PrfId.HMAC_SHA2_256, None),
        (T.DH, DhId.ECP_384, None),
        (T.DH, DhId.CURVE25519, None),
    ]


def test_ike_prf_follows_integrity_when_not_given() -> None:
    [p] = parse_proposals("aes128-aes256-sha256-sha384-modp2048", IKE)
    assert [t.id for t in p.of_type(T.PRF)] == [PrfId.HMAC_SHA2_256, PrfId.HMAC_SHA2_384]
    assert [t.id for t in p.of_type(T.INTEG)] == [IntegId.HMAC_SHA2_256_128,
                                                  IntegId.HMAC_SHA2_384_192]
    assert p.of_type(T.ESN) == []
    [p] = parse_proposals("aes128-sha256-prfsha512-ecp256", IKE)
    assert [t.id for t in p.of_type(T.PRF)] == [PrfId.HMAC_SHA2_512]


@pytest.mark.parametrize("word,encr,bits", [
    ("aes128", EncrId.AES_CBC, 128), ("aes192", EncrId.AES_CBC, 192),
    ("aes256", EncrId.AES_CBC, 256),
    ("aes128gcm16", EncrId.AES_GCM_16, 128), ("aes128gcm128", EncrId.AES_GCM_16, 128),
    ("aes128gcm", EncrId.AES_GCM_16, 128), ("aes256gcm16", EncrId.AES_GCM_16, 256),
    ("aes256gcm128", EncrId.AES_GCM_16, 256), ("aes256gcm", EncrId.AES_GCM_16, 256),
    ("chacha20poly1305", EncrId.CHACHA20_POLY1305, None),
])
def test_encryption_keywords(word: str, encr: EncrId, bits: int | None) -> None:
    [p] = parse_proposals(word if "gcm" in word or "chacha" in word else word + "-sha256",
                          ESP)
    assert p.first(T.ENCR) == Transform(T.ENCR, encr, bits)


@pytest.mark.parametrize("word,integ", [
    ("sha1", IntegId.HMAC_SHA1_96), ("sha256", IntegId.HMAC_SHA2_256_128),
    ("sha2_256", IntegId.HMAC_SHA2_256_128), ("sha384", IntegId.HMAC_SHA2_384_192),
    ("sha2_384", IntegId.HMAC_SHA2_384_192), ("sha512", IntegId.HMAC_SHA2_512_256),
    ("sha2_512", IntegId.HMAC_SHA2_512_256),
])
def test_integrity_keywords(word: str, integ: IntegId) -> None:
    [p] = parse_proposals(f"aes128-{word}", ESP)
    assert p.of_type(T.INTEG) == [Transform(T.INTEG, integ)]


@pytest.mark.parametrize("word,group", [
    ("modp2048", DhId.MODP_2048), ("modp3072", DhId.MODP_3072), ("modp4096", DhId.MODP_4096),
    ("ecp256", DhId.ECP_256), ("ecp384", DhId.ECP_384), ("ecp521", DhId.ECP_521),
    ("x25519", DhId.CURVE25519), ("curve25519", DhId.CURVE25519),
    ("x448", DhId.CURVE448), ("curve448", DhId.CURVE448),
])
def test_group_keywords(word: str, group: DhId) -> None:
    [p] = parse_proposals(f"aes128gcm16-prfsha256-{word}", IKE)
    assert p.of_type(T.DH) == [Transform(T.DH, group)]


def test_esp_defaults_to_no_esn_and_optional_dh() -> None:
    [p] = parse_proposals("aes256gcm16", ESP)
    assert ids(p) == [(T.ENCR, EncrId.AES_GCM_16, 256), (T.ESN, EsnId.NO_ESN, None)]
    [p] = parse_proposals("aes256-sha384-ecp384-esn-noesn", ESP)
    assert [t.id for t in p.of_type(T.ESN)] == [EsnId.ESN, EsnId.NO_ESN]
    assert p.of_type(T.DH) == [Transform(T.DH, DhId.ECP_384)]


def test_several_proposals_are_numbered() -> None:
    props = parse_proposals(" aes256gcm16-prfsha384-ecp384 , aes128-sha256-modp2048", IKE)
    assert [p.number for p in props] == [1, 2]
    assert props[1].first(T.ENCR) == Transform(T.ENCR, EncrId.AES_CBC, 128)


@pytest.mark.parametrize("text,protocol,message", [
    ("aes999-sha256-modp2048", IKE, "unknown algorithm 'aes999'"),
    ("aes256gcm16", IKE, "proposal 'aes256gcm16': no key exchange group"),
    ("aes256gcm16-ecp256", IKE, "proposal 'aes256gcm16-ecp256': no PRF"),
    ("aes256gcm16-sha256-prfsha256-ecp256", IKE, "integrity algorithm cannot be used with AEAD"),
    ("aes256gcm16-sha256", ESP, "integrity algorithm cannot be used with AEAD"),
    ("aes256-modp2048", IKE, "no integrity algorithm"),
    ("aes256", ESP, "no integrity algorithm"),
    ("sha256-prfsha256-modp2048", IKE, "no encryption algorithm"),
    ("aes256gcm16-aes256-sha256-prfsha256-ecp256", IKE, "cannot be mixed"),
    ("aes128-sha256-prfsha256", ESP, "PRF is only allowed in IKE"),
    ("aes128-sha256-modp2048-esn", IKE, "ESN is only allowed in ESP"),
    ("aes128--sha256", ESP, "empty algorithm name"),
    ("", IKE, "empty proposal list"),
    ("aes128-sha256,,aes256-sha256", ESP, "empty proposal"),
    ("modp1024", ESP, "unknown algorithm 'modp1024'"),
])
def test_errors(text: str, protocol: ProtocolId, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_proposals(text, protocol)


def test_defaults_are_modern_and_valid() -> None:
    ike = default_ike_proposals()
    assert ike == parse_proposals("default", IKE)
    encrs = {(t.id, t.key_length) for p in ike for t in p.of_type(T.ENCR)}
    assert encrs == {(EncrId.AES_GCM_16, 256), (EncrId.AES_GCM_16, 128),
                     (EncrId.CHACHA20_POLY1305, None), (EncrId.AES_CBC, 256),
                     (EncrId.AES_CBC, 128)}
    for p in ike:
        assert [t.id for t in p.of_type(T.DH)] == [DhId.CURVE25519, DhId.ECP_256, DhId.ECP_384,
                                                   DhId.MODP_3072, DhId.MODP_2048]
        assert {t.id for t in p.of_type(T.PRF)} == {PrfId.HMAC_SHA2_256, PrfId.HMAC_SHA2_384,
                                                    PrfId.HMAC_SHA2_512}
    assert first_dh_group(ike) == DhId.CURVE25519
    esp = default_esp_proposals()
    for p in esp:
        assert p.protocol == ESP
        assert p.of_type(T.ESN) == [Transform(T.ESN, EsnId.NO_ESN)]
        assert p.of_type(T.DH) == [] and p.of_type(T.PRF) == []
    assert first_dh_group(esp) is None
    # 'default' combines with explicit proposals, numbered in order.
    mixed = parse_proposals("aes128-sha256-modp2048,default", IKE)
    assert [p.number for p in mixed] == [1, 2, 3]
    # Each call returns fresh objects callers may modify.
    default_ike_proposals()[0].transforms.clear()
    assert default_ike_proposals()[0].transforms


def selected(protocol: ProtocolId, number: int, *transforms: Transform,
             spi: bytes = b"") -> Proposal:
    return Proposal(number, protocol, spi, list(transforms))


GCM256 = Transform(T.ENCR, EncrId.AES_GCM_16, 256)
GCM128 = Transform(T.ENCR, EncrId.AES_GCM_16, 128)
CBC128 = Transform(T.ENCR, EncrId.AES_CBC, 128)
SHA256 = Transform(T.INTEG, IntegId.HMAC_SHA2_256_128)
PRF256 = Transform(T.PRF, PrfId.HMAC_SHA2_256)
PRF384 = Transform(T.PRF, PrfId.HMAC_SHA2_384)
ECP384 = Transform(T.DH, DhId.ECP_384)
X25519 = Transform(T.DH, DhId.CURVE25519)
MODP2048 = Transform(T.DH, DhId.MODP_2048)
NO_ESN = Transform(T.ESN, EsnId.NO_ESN)
ESN = Transform(T.ESN, EsnId.ESN)


@pytest.mark.parametrize("p,name", [
    (selected(IKE, 1, GCM256, PRF384, ECP384), "aes256gcm16-prfsha384-ecp384"),
    (selected(IKE, 1, CBC128, SHA256, PRF256, MODP2048), "aes128-sha256-modp2048"),
    (selected(IKE, 1, CBC128, SHA256, PRF384, MODP2048), "aes128-sha256-prfsha384-modp2048"),
    (selected(IKE, 1, Transform(T.ENCR, EncrId.CHACHA20_POLY1305), PRF256, X25519),
     "chacha20poly1305-prfsha256-x25519"),
    (selected(ESP, 1, GCM256, NO_ESN), "aes256gcm16"),
    (selected(ESP, 1, GCM128, ESN), "aes128gcm16-esn"),
    (selected(ESP, 1, CBC128, SHA256, ECP384, NO_ESN), "aes128-sha256-ecp384"),
])
def test_format_proposal(p: Proposal, name: str) -> None:
    assert format_proposal(p) == name
    # strongSwan would read the name back as the same algorithms.
    [back] = parse_proposals(name, p.protocol)
    assert chosen_ids(back) == chosen_ids(p)


def test_chosen_ids() -> None:
    assert chosen_ids(selected(IKE, 1, GCM256, PRF384, ECP384)) == ChosenIds(
        EncrId.AES_GCM_16, 256, None, PrfId.HMAC_SHA2_384, DhId.ECP_384, False)
    assert chosen_ids(selected(ESP, 2, CBC128, SHA256, ESN)) == (
        EncrId.AES_CBC, 128, IntegId.HMAC_SHA2_256_128, None, None, True)


def test_check_selected_accepts_a_valid_choice() -> None:
    offered = default_ike_proposals()
    chosen = selected(IKE, 2, CBC128, SHA256, PRF256, MODP2048)
    assert check_selected(offered, chosen) == chosen
    chosen = selected(IKE, 1, GCM128, PRF384, X25519)
    assert check_selected(offered, chosen) == chosen


def test_check_selected_tolerates_integ_none_with_aead() -> None:
    offered = default_esp_proposals()
    chosen = selected(ESP, 1, GCM256, Transform(T.INTEG, IntegId.NONE), NO_ESN,
                      spi=b"\x01\x02\x03\x04")
    result = check_selected(offered, chosen)
    assert result.transforms == [GCM256, NO_ESN]
    assert result.spi == b"\x01\x02\x03\x04"


@pytest.mark.parametrize("chosen,reason", [
    (selected(IKE, 3, GCM256, PRF384, ECP384), "never sent"),
    (selected(ESP, 1, GCM256, NO_ESN), "protocol"),
    (selected(IKE, 1, Transform(T.ENCR, EncrId.AES_GCM_16, 192), PRF384, ECP384),
     "192 bits"),
    (selected(IKE, 1, GCM256, PRF384), "0 DH transforms"),
    (selected(IKE, 1, GCM256, PRF384, ECP384, X25519), "2 DH transforms"),
    (selected(IKE, 1, GCM256, GCM128, PRF384, ECP384), "2 ENCR transforms"),
    (selected(IKE, 1, GCM256, PRF384, ECP384, SHA256), "did not offer"),
    (selected(IKE, 1, GCM256, PRF384, Transform(T.DH, DhId.CURVE448)), "did not offer"),
    (selected(IKE, 2, CBC128, PRF256, MODP2048), "0 INTEG transforms"),
])
def test_check_selected_refuses(chosen: Proposal, reason: str) -> None:
    with pytest.raises(NoProposalChosen, match=reason):
        check_selected(default_ike_proposals(), chosen)


def test_check_selected_esp_needs_esn_choice() -> None:
    offered = parse_proposals("aes128gcm16-esn-noesn", ESP)
    with pytest.raises(NoProposalChosen, match="ESN"):
        check_selected(offered, selected(ESP, 1, GCM128))
    assert check_selected(offered, selected(ESP, 1, GCM128, ESN)).transforms == [GCM128, ESN]


def test_with_dh_first_restricts_to_requested_group() -> None:
    offered = parse_proposals(
        "aes256gcm16-prfsha384-x25519-ecp384,aes128-sha256-modp2048,aes256-sha256-ecp384-x448",
        IKE)
    retry = with_dh_first(offered, DhId.ECP_384)
    assert [p.number for p in retry] == [1, 2]
    assert [p.of_type(T.DH) for p in retry] == [[ECP384], [ECP384]]
    assert retry[0].first(T.ENCR) == GCM256
    assert retry[1].first(T.ENCR) == Transform(T.ENCR, EncrId.AES_CBC, 256)
    assert first_dh_group(retry) == DhId.ECP_384
    # the offered list is left alone
    assert len(offered[0].of_type(T.DH)) == 2
    with pytest.raises(NoProposalChosen, match="MODP_4096"):
        with_dh_first(offered, DhId.MODP_4096)
    with pytest.raises(NoProposalChosen):
        with_dh_first(offered, 999)


def test_without_dh_and_with_spi() -> None:
    esp = parse_proposals("aes256gcm16-ecp384,aes128-sha256-modp2048-esn", ESP)
    stripped = without_dh(esp)
    assert all(not p.of_type(T.DH) for p in stripped)
    assert esp[0].of_type(T.DH) == [ECP384]
    spi = with_spi(stripped, b"\xc0\xff\xee\x01")
    assert [p.spi for p in spi] == [b"\xc0\xff\xee\x01"] * 2
    assert stripped[0].spi == b""
