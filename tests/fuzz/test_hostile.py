"""Hand-made worst cases near each input bound (issue 13), run as the fuzz targets run an
input: each must be refused or accepted within the per-input CPU limit. Built here rather
than kept in corpus/, where most would be megabytes.

The fuzz runs found the first two kinds (2000 DNS servers; a 900 KB control line nested
100,000 deep whose depth check first rewrote every string); the others are their
neighbours: every list the profile parser reads item by item, and every way a JSON text
can make json.loads, the depth check or a line reader do work per character.
"""

from __future__ import annotations

import base64
import copy
import json
import plistlib
from collections.abc import Callable
from typing import Any

import pytest

from client.limits import (
    MAX_CONTROL_LINE,
    MAX_DNS_DOMAINS,
    MAX_DNS_SERVERS,
    MAX_PLIST_OBJECTS,
    MAX_PROFILE_BYTES,
    MAX_REMOTE_ADDRS,
    MAX_SPLIT_NETWORKS,
)
from client.profile import parse_profile
from tests.fuzz.engine import INPUT_TIME_LIMIT, check, guarded
from tests.fuzz.targets import target
from tests.fuzz.targets.profile import CA_DER, JSON_SEEDS, PLIST_SEEDS

LINE = MAX_CONTROL_LINE - 64  # room for the envelope
DOC = MAX_PROFILE_BYTES - 16 * 1024  # room for the rest of the profile
CA_B64 = base64.b64encode(CA_DER).decode()


def _profile(path: str, value: Any) -> bytes:
    doc = copy.deepcopy(JSON_SEEDS[1])
    *parents, last = path.split(".")
    cur = doc
    for p in parents:
        cur = cur.setdefault(p, {})
    cur[last] = value
    return b"\x00" + json.dumps(doc).encode()


def _fill(item: Any, size: int = DOC) -> list[Any]:
    return [item] * (size // (len(json.dumps(item)) + 2))


_PLIST_HEAD = (b'<?xml version="1.0" encoding="UTF-8"?>'
               b'<plist version="1.0"><dict><key>a</key><array>')
_PLIST_TAIL = b"</array></dict></plist>"


def _plist(change: Callable[[dict[str, Any]], None]) -> bytes:
    doc = copy.deepcopy(PLIST_SEEDS[0])
    change(doc["PayloadContent"][0])
    return b"\x01" + plistlib.dumps(doc)


PROFILES: dict[str, Callable[[], bytes]] = {
    "dns-servers": lambda: _profile("dns-servers", ["198.18.0.1", "2001:db8::1"] * 2500),
    "dns-servers-max-list": lambda: _profile("dns-servers", _fill("2001:db8::1")),
    "dns-servers-string": lambda: _profile("dns-servers", "1.1.1.1 " * (DOC // 8)),
    "dns-domains-string": lambda: _profile("dns-domains", "a.b " * (DOC // 4)),
    "remote-addrs": lambda: _profile("remote.addrs", _fill("a")),
    "remote-addrs-5000": lambda: _profile("remote.addrs", [f"gw{i}.example" for i in range(5000)]),
    "remote-certs": lambda: _profile("remote.cert", [CA_B64] * 2000),
    "remote-cert-pem-bundle": lambda: _profile(
        "remote.cert", "".join(f"-----BEGIN CERTIFICATE-----\n{CA_B64}\n-----END CERTIFICATE-----\n"
                               for _ in range(1500))),
    "pem-begin-lines": lambda: _profile("remote.cert", "-----BEGIN CERTIFICATE-----" * 20000),
    "ike-proposals": lambda: _profile(
        "ike-proposal", ",".join(["aes256gcm16-prfsha384-ecp384"] * (DOC // 29))),
    "esp-proposals": lambda: _profile("esp-proposal", ",".join(["aes128-sha256"] * (DOC // 14))),
    "dn-identity": lambda: _profile("remote.id", "CN=" + "a," * (DOC // 2)),
    "name-1mib": lambda: _profile("name", "a" * DOC),
    "unknown-empty-lists": lambda: _profile("unknown", _fill([])),
    "unknown-objects": lambda: _profile("unknown", _fill({"a": [1, {"b": "c"}]})),
    "unknown-numbers": lambda: _profile("unknown", _fill(1)),
    "plist-many-tags": lambda: b"\x01" + _PLIST_HEAD + b"<true/>" * (DOC // 7) + _PLIST_TAIL,
    "plist-unknown-keys": lambda: _plist(lambda vpn: vpn.update(
        {f"K{i}": i for i in range(MAX_PLIST_OBJECTS - 100)})),
    "plist-proxies": lambda: _plist(lambda vpn: vpn.__setitem__(
        "Proxies", {"x": [{} for _ in range(MAX_PLIST_OBJECTS - 100)]})),
    "plist-dns": lambda: _plist(lambda vpn: vpn.__setitem__(
        "DNS", {"ServerAddresses": ["198.18.0.1"] * (MAX_PLIST_OBJECTS - 100)})),
}

CONTROL: dict[str, Callable[[], bytes]] = {
    "deep-objects": lambda: b'{"version": 1, "id": ' + b'{"k": [' * (LINE // 8) + b"1\n",
    "empty-lists": lambda: b'{"version": 1, "u": [' + b"[]," * (LINE // 3) + b"[]]}\n",
    "numbers": lambda: b'{"version": 1, "u": [' + b"1," * (LINE // 2) + b"1]}\n",
    "strings": lambda: b'{"version": 1, "u": [' + b'"a",' * (LINE // 4) + b'"a"]}\n',
    "adjacent-strings-deep": lambda: b"[" * 40 + b'""' * (LINE // 2) + b"\n",
    "unterminated-string": lambda: b'{"version": 1, "u": "' + b"[" * LINE + b"\n",
    "escaped-quotes": lambda: b'{"version": 1, "u": "' + b'\\"' * (LINE // 2) + b"\n",
    "stray-closing": lambda: b"]" * LINE + b"\n",
    "empty-lines": lambda: b"\n" * (128 * 1024),  # a line reader that re-split its buffer
}


def _run(name: str, make: Callable[[], bytes]) -> None:
    data = make()
    with guarded():
        elapsed, problem = check(target(name), data)
    assert problem is None, f"{problem[1]}: {problem[2]}"
    assert elapsed <= INPUT_TIME_LIMIT


@pytest.mark.parametrize("case", list(PROFILES))
def test_hostile_profile(case: str) -> None:
    _run("profile", PROFILES[case])


@pytest.mark.parametrize("case", list(CONTROL))
def test_hostile_control_stream(case: str) -> None:
    _run("control", CONTROL[case])


def test_the_largest_real_profile_is_accepted() -> None:
    """Every per-key bound at once is still a profile, within the values bound. (Not
    timed: 2048 networks take the target's round trip ~35 ms, too near the limit for a
    loaded machine; the fuzz targets rarely make more than one list that long.)"""
    doc = copy.deepcopy(JSON_SEEDS[1])
    doc["remote"]["addrs"] = [f"gw{i}.example.com" for i in range(MAX_REMOTE_ADDRS)]
    doc["remote"]["cert"] = [CA_B64] * 16
    doc["dns-servers"] = [f"2001:db8::{i:x}" for i in range(MAX_DNS_SERVERS)]
    doc["dns-domains"] = [f"d{i}.example.com" for i in range(MAX_DNS_DOMAINS)]
    doc["split-tunneling"]["subnets"] = [f"2001:db8:{i:x}::/48"
                                         for i in range(MAX_SPLIT_NETWORKS)]
    doc["split-tunneling"]["excluded"] = [f"198.18.{i // 256}.{i % 256}/32"
                                          for i in range(MAX_SPLIT_NETWORKS)]
    doc["apps"] = [f"org.example.app{i}" for i in range(300)]
    p = parse_profile(json.dumps(doc))
    assert len(p.split_subnets) == len(p.split_excluded) == MAX_SPLIT_NETWORKS
    assert len(p.remote_addrs) == MAX_REMOTE_ADDRS + 1
    assert parse_profile(p.to_json()).to_dict() == p.to_dict()
