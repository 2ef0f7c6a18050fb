"""Issue 13, the IKE side in units: host names of a REDIRECT checked in linear time,
unknown values in a chosen proposal, configured identities refused by the profile
loader (naming the key), and a drain loop that survives a datagram gone wrong."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from client import transport
from client.ikev2.constants import ProtocolId, TransformType
from client.ikev2.errors import NoProposalChosen, RemoteProtocolError
from client.ikev2.identity import MAX_IDENTITY_BYTES, classify_identity
from client.ikev2.proposals import Proposal, Transform, check_selected, parse_proposals
from client.ikev2.tasks.ike_redirect import decode_gateway, is_host_name
from client.profile import ProfileError, parse_profile

REPO = Path(__file__).resolve().parents[2]
HANG_LIMIT = 20.0  # seconds: a hang detector, far above any machine's start-up time


@pytest.mark.parametrize("name,ok", [
    ("vpn.example.com", True),
    ("vpn.example.com.", True),
    ("a", True),
    ("xn--bcher-kva.example", True),
    ("1.2.3.4", True),
    ("a-b.c-d", True),
    ("a" * 63 + ".com", True),
    ("a" * 64 + ".com", False),  # label longer than 63
    (".".join(["a" * 63] * 3) + "." + "a" * 61, True),  # 253
    (".".join(["a" * 63] * 3) + "." + "a" * 62, False),  # 254
    ("", False), (".", False), ("a..b", False), (".a", False), ("a.-b", False),
    ("a-.b", False), ("-a", False), ("a_b", False), ("a b", False), ("bücher.de", False),
    ("a.b..", False),
])
def test_host_names(name: str, ok: bool) -> None:
    assert is_host_name(name) is ok


ADVERSARIAL = ["a" * 40 + "-", "a" * 252 + "-", ("a" * 62 + "-") * 3 + "a" * 60 + "-",
               "a-" * 126 + "-"]


def test_adversarial_names_are_refused_in_linear_time() -> None:
    """Names that made the old regex backtrack for hours, each up to 253 characters."""
    code = ("from client.ikev2.tasks.ike_redirect import decode_gateway\n"
            "from client.ikev2.errors import RemoteProtocolError\n"
            f"for name in {ADVERSARIAL!r}:\n"
            "    data = bytes((3, len(name))) + name.encode()\n"
            "    try:\n"
            "        decode_gateway(data)\n"
            "    except RemoteProtocolError as exc:\n"
            "        assert 'not a host name' in str(exc)\n"
            "    else:\n"
            "        raise AssertionError(name)\n")
    try:  # in a child process: a regex stuck in C ignores a thread's timeout
        proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                              text=True, timeout=HANG_LIMIT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the host name check hung for {HANG_LIMIT} s")
    assert proc.returncode == 0, proc.stderr


def test_the_longest_name_survives_the_round_trip() -> None:
    name = ".".join(["a" * 63] * 3) + "." + "b" * 61
    data = bytes((3, len(name))) + name.encode() + b"nonce"
    assert decode_gateway(data) == (name, b"nonce")
    with pytest.raises(RemoteProtocolError, match="not a host name"):
        decode_gateway(bytes((3, len(name) + 1)) + name.encode() + b"b")


@pytest.mark.parametrize("chosen,reason", [
    (lambda p: Proposal(p.number, 7, p.spi, p.transforms), "protocol #7"),
    (lambda p: Proposal(p.number, p.protocol, p.spi, [*p.transforms, Transform(9, 1)]),
     "#9 transform 1"),
])
def test_unknown_values_in_the_chosen_proposal(chosen, reason: str) -> None:
    offered = parse_proposals("aes256gcm16-prfsha384-ecp384", ProtocolId.IKE)
    ours = offered[0]
    single = Proposal(ours.number, ours.protocol, ours.spi,
                      [ours.first(t) for t in TransformType if ours.first(t)])
    with pytest.raises(NoProposalChosen, match=reason):  # was AttributeError
        check_selected(offered, chosen(single))


@pytest.mark.parametrize("text", ["fqdn:", "@", "keyid:", "email:", "UID=" + "x" * 3000])
def test_identities_without_a_value_or_too_long(text: str) -> None:
    with pytest.raises(ValueError):
        classify_identity(text)
    assert len(classify_identity("UID=" + "x" * 1000)[1]) <= MAX_IDENTITY_BYTES


def _doc(ptype: str = "ikev2-eap", **local: str) -> dict[str, Any]:
    return {"uuid": "6f1c1e8a-2b4f-4c1e-9a57-3e1d2c4b5a69", "name": "T", "type": ptype,
            "remote": {"addr": "vpn.example.com"}, "local": dict(local)}


@pytest.mark.parametrize("key,value", [
    ("local.id", "CN="), ("local.id", "ipv4:1"), ("local.id", "@#zz"),
    ("remote.id", "CN="), ("remote.id", "ipv6:1.2.3.4"), ("remote.id", "C=CHX"),
    ("local.eap_id", "CN="),
])
def test_the_profile_refuses_an_invalid_identity_naming_the_key(key: str, value: str) -> None:
    doc = _doc(eap_id="alice")
    section, name = key.split(".")
    doc.setdefault(section, {})[name] = value
    with pytest.raises(ProfileError) as exc:
        parse_profile(json.dumps(doc))
    assert exc.value.key == key and "not a valid IKE identity" in exc.value.reason


def test_an_eap_username_that_is_no_ike_identity_is_fine_with_local_id() -> None:
    # With local.id set, ikev2-eap sends local.id as IDi: the EAP username is only that.
    doc = _doc(id="alice@example.com", eap_id="x=y")
    assert parse_profile(json.dumps(doc)).eap_id == "x=y"


def test_the_light_parse_leaves_identities_to_the_daemon() -> None:
    doc = _doc(id="CN=")
    assert parse_profile(json.dumps(doc), parse_certificates=False).local_id == "CN="


def test_the_cli_exits_2_on_an_invalid_identity(tmp_path: Path) -> None:
    path = tmp_path / "bad.vpnprofile"
    path.write_text(json.dumps(_doc(ptype="ikev2-psk", id="CN=")))
    proc = subprocess.run([sys.executable, "-m", "client.cli", "import", str(path)],
                          cwd=REPO, capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO),
                               "HOME": str(tmp_path),
                               "VPNCLIENT_CONFIG_DIR": str(tmp_path / "config")})
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "local.id" in proc.stderr and "Traceback" not in proc.stderr


def test_a_datagram_gone_wrong_does_not_end_the_drain() -> None:
    """One bad datagram in a batch: the ones after it are still handed over."""
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    a.setblocking(False)
    try:
        for d in (b"bad", b"good1", b"good2"):
            b.send(d)
        from client.ikev2.ike_sa import IkeSA
        from tests.exchange.conftest import CLIENT_ADDR, GATEWAY_ADDR, client_config

        sa = IkeSA(client_config(), CLIENT_ADDR, GATEWAY_ADDR)
        sa.initiate(0.0)
        seen: list[bytes] = []

        def on_ike(data: bytes) -> None:
            seen.append(data)
            sa.receive(data, 0.0)  # garbage: must be dropped, never raise

        assert transport.drain(a, False, on_ike, lambda d: None)
        assert seen == [b"bad", b"good1", b"good2"]
    finally:
        a.close()
        b.close()
