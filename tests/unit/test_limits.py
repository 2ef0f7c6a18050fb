"""Hostile profiles and control messages (issue 13): each one is a profile error naming
the key (or the file) or a protocol error, never another exception, a stall or a blow-up."""

from __future__ import annotations

import asyncio
import base64
import json
import plistlib
import struct
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from client import control
from client.importers import read_import_file
from client.limits import (
    MAX_CONTROL_DEPTH,
    MAX_PLIST_OBJECTS,
    MAX_PROFILE_DEPTH,
    MAX_SPLIT_NETWORKS,
    MAX_VPN_PAYLOADS,
    json_depth_exceeds,
)
from client.mobileconfig import convert
from client.profile import ProfileError, parse_profile
from tests.unit.test_mobileconfig import _cert, doc, eap, root

BASE = {"uuid": "8c6f2a36-3e2f-4c1a-9d1e-2b7f4f1d9a10", "name": "x", "type": "ikev2-eap",
        "remote": {"addr": "192.0.2.1"}, "local": {"eap_id": "alice"}}


def _profile(**extra: Any) -> bytes:
    return json.dumps({**BASE, **extra}).encode()


def _import(tmp_path: Path, data: bytes, name: str = "x.mobileconfig"):
    path = tmp_path / name
    path.write_bytes(data)
    return read_import_file(path)


# -- .vpnprofile / .sswan ------------------------------------------------------------------
def test_split_tunnel_ranges_are_bounded() -> None:
    # One IPv6 range summarizes to ~200 networks; 44 KB of them once became 568,000.
    rng = "2001:db8::1 - 2001:db8:ffff:ffff:ffff:ffff:ffff:fffe"
    started = time.monotonic()
    with pytest.raises(ProfileError) as exc:
        parse_profile(_profile(**{"split-tunneling": {"subnets": " ".join([rng] * 400)}}))
    assert exc.value.key.startswith("split-tunneling.subnets["), str(exc.value)
    assert str(MAX_SPLIT_NETWORKS) in exc.value.reason
    assert time.monotonic() - started < 2


def test_split_tunnel_at_the_limit_is_accepted() -> None:
    nets = [f"198.18.{i // 256}.{i % 256}/32" for i in range(MAX_SPLIT_NETWORKS)]
    p = parse_profile(_profile(**{"split-tunneling": {"excluded": nets}}))
    assert len(p.split_excluded) == MAX_SPLIT_NETWORKS


def test_huge_json_integer_names_the_file() -> None:
    with pytest.raises(ProfileError) as exc:
        parse_profile(_profile().replace(b'"name"', b'"mtu": ' + b"9" * 5000 + b', "name"'),
                      source="f.vpnprofile")
    assert exc.value.key == "f.vpnprofile"


def test_deep_json_profile_names_the_file() -> None:
    deep = b"[" * (MAX_PROFILE_DEPTH + 1) + b"]" * (MAX_PROFILE_DEPTH + 1)
    with pytest.raises(ProfileError) as exc:
        parse_profile(_profile().replace(b'"name"', b'"x-extra": ' + deep + b', "name"'),
                      source="f.vpnprofile")
    assert exc.value.key == "f.vpnprofile" and "nested" in exc.value.reason


def test_lazily_parsed_bad_subject_in_remote_cert() -> None:
    der = _cert("Corp Root CA", True)[1].public_bytes(serialization.Encoding.DER)
    bad = der.replace(b"Corp Root CA", b"Corp Root \xff\xfe")  # invalid UTF8String
    with pytest.raises(ProfileError) as exc:
        parse_profile(_profile(remote={"addr": "192.0.2.1",
                                       "cert": base64.b64encode(bad).decode()}))
    assert exc.value.key == "remote.cert"


# -- .mobileconfig ---------------------------------------------------------------------------
@pytest.mark.parametrize("key", ["DeadPeerDetectionRate", "MTU", "NATKeepAliveInterval",
                                 "DisableMOBIKE", "AuthenticationMethod"])
def test_mobileconfig_array_where_a_value_belongs(tmp_path: Path, key: str) -> None:
    with pytest.raises(ProfileError) as exc:
        _import(tmp_path, doc(eap(**{key: [1]})))
    assert exc.value.key == f"PayloadContent[0].IKEv2.{key}", str(exc.value)


@pytest.mark.parametrize("key", ["MTU", "IKESecurityAssociationParameters.DiffieHellmanGroup"])
def test_mobileconfig_4300_digit_integer(tmp_path: Path, key: str) -> None:
    # int() accepts 4300 digits, but repr() of the value in an error message does not.
    ikev2 = eap(MTU=1400, IKESecurityAssociationParameters={"DiffieHellmanGroup": 14})
    placeholder = b"1400" if key == "MTU" else b"14"
    data = doc(ikev2).replace(b"<integer>" + placeholder + b"</integer>",
                              b"<integer>" + b"9" * 4300 + b"</integer>")
    with pytest.raises(ProfileError) as exc:
        _import(tmp_path, data)
    assert exc.value.key == f"PayloadContent[0].IKEv2.{key}", str(exc.value)
    assert "integer" in exc.value.reason


def test_mobileconfig_lazily_parsed_bad_ca_subject(tmp_path: Path) -> None:
    der = _cert("Corp Root CA", True)[1].public_bytes(serialization.Encoding.DER)
    bad = der.replace(b"Corp Root CA", b"Corp Root \xff\xfe")
    with pytest.raises(ProfileError) as exc:
        _import(tmp_path, doc(eap(), root(bad)))
    assert exc.value.key == "PayloadContent[1].PayloadContent", str(exc.value)


def _dag(levels: int) -> list[Any]:
    node: list[Any] = []
    for _ in range(levels):
        node = [node, node]  # plistlib writes (and reads) each shared list once
    return node


def test_mobileconfig_binary_dag_does_not_blow_up(tmp_path: Path) -> None:
    top = plistlib.loads(doc(eap()))
    top["PayloadContent"][0]["Proxies"] = {"x": _dag(24)}  # 2**24 uses of 25 objects
    data = plistlib.dumps(top, fmt=plistlib.FMT_BINARY)
    assert len(data) < 4096
    started = time.monotonic()
    with pytest.raises(ProfileError) as exc:
        _import(tmp_path, data)
    assert exc.value.key.endswith("x.mobileconfig") and "objects" in exc.value.reason
    assert time.monotonic() - started < 2


def test_binary_plist_object_count_checked_before_parsing() -> None:
    data = bytearray(plistlib.dumps({"a": 1}, fmt=plistlib.FMT_BINARY))
    data[-24:-16] = struct.pack(">Q", MAX_PLIST_OBJECTS + 1)
    with pytest.raises(ProfileError) as exc:
        convert(bytes(data), "f.mobileconfig")
    assert exc.value.key == "f.mobileconfig" and "objects" in exc.value.reason


def test_mobileconfig_nested_600_deep(tmp_path: Path) -> None:
    top = plistlib.loads(doc(eap()))
    top["PayloadContent"][0]["Proxies"] = {"x": "DEEP"}
    data = plistlib.dumps(top).replace(  # plistlib cannot write this itself
        b"<string>DEEP</string>", b"<array>" * 600 + b"</array>" * 600)
    with pytest.raises(ProfileError) as exc:
        _import(tmp_path, data)
    assert exc.value.key.startswith("PayloadContent[0].Proxies.x"), str(exc.value)
    assert "nested" in exc.value.reason


# -- the control protocol ----------------------------------------------------------------
def test_json_depth_ignores_brackets_in_strings() -> None:
    assert not json_depth_exceeds(b'{"a": "[[[[\\"[[[["}', 1)
    assert json_depth_exceeds(b'{"a": [[]]}', 2)


def test_control_deep_message_is_a_protocol_error() -> None:
    with pytest.raises(control.ProtocolError, match="nested"):
        control.decode(b"[" * 100_000 + b"\n")
    with pytest.raises(control.ProtocolError):
        control.decode(b'{"version": 1, "id": ' + b"9" * 5000 + b"}\n")
    # within the limit: decodes
    ok = b'{"a":' + b"[" * (MAX_CONTROL_DEPTH - 1) + b"]" * (MAX_CONTROL_DEPTH - 1) + b"}"
    assert "a" in control.decode(ok)


def test_foreground_server_answers_a_deep_message_and_continues(tmp_path: Path) -> None:
    async def main() -> list[dict[str, Any]]:
        async def handler(request: dict[str, Any]) -> dict[str, Any]:
            return {"ok": True, "state": "connected"}

        path = tmp_path / "control.sock"
        server = await control.serve(path, handler)
        try:
            reader, writer = await asyncio.open_unix_connection(str(path))
            writer.write(b"[" * 200_000 + b"\n")
            writer.write(control.encode({"id": 2, "command": "status"}))
            await writer.drain()
            out = [control.decode(await asyncio.wait_for(reader.readline(), 5))
                   for _ in range(2)]
            writer.close()
            return out
        finally:
            server.close()

    first, second = asyncio.run(main())
    assert first["ok"] is False and first["reason"] == "bad-request"
    assert second["ok"] is True and second["id"] == 2


def test_mobileconfig_copies_of_a_payload_are_refused(tmp_path: Path) -> None:
    # Shared objects make 50 copies of a VPN payload cost a few bytes, and each one a
    # PKCS#12 decryption plus every CA: refused by their UUID, naming the second copy.
    top = plistlib.loads(doc(eap()))
    top["PayloadContent"] = top["PayloadContent"] * 50
    data = plistlib.dumps(top, fmt=plistlib.FMT_BINARY)
    with pytest.raises(ProfileError) as exc:
        _import(tmp_path, data)
    assert exc.value.key == "PayloadContent[1].PayloadUUID", str(exc.value)


def test_mobileconfig_vpn_payload_count_is_bounded(tmp_path: Path) -> None:
    top = plistlib.loads(doc(eap()))
    vpn = top["PayloadContent"][0]
    top["PayloadContent"] = [{**vpn, "PayloadUUID": f"0E6B4F0C-7C1B-4B8E-9A53-{i:012X}"}
                             for i in range(MAX_VPN_PAYLOADS + 1)]
    with pytest.raises(ProfileError) as exc:
        _import(tmp_path, plistlib.dumps(top))
    assert exc.value.key == "PayloadContent" and str(MAX_VPN_PAYLOADS) in exc.value.reason
