"""Bounds on input that someone else sizes: profile files, property lists, control messages.

Every limit is checked where the input enters, before (or while) it is decoded, so that a
hostile file or peer costs at most a bounded amount of time and memory in the root daemon.
"""

from __future__ import annotations

import re

# A profile with a PKCS#12 and a CA chain is a few KiB; 1 MiB leaves room for long chains.
MAX_PROFILE_BYTES = 1 << 20
# Real profiles nest 3 levels (remote.crypto-policy.relax); beyond 32 is an attack on the
# recursive JSON decoder (RecursionError), not a profile.
MAX_PROFILE_DEPTH = 32
# Routes and traffic selectors: 1024 IPv6 selectors already make a 40 KiB TS payload, and
# a range "a - b" can expand to up to 256 networks each (44 KB once became 568,000).
MAX_SPLIT_NETWORKS = 1024
# A .mobileconfig holds a few payloads of a few dozen keys each.
MAX_PLIST_OBJECTS = 10_000
MAX_PLIST_DEPTH = 32
# One .mobileconfig usually configures one VPN; each payload costs a PKCS#12 decryption.
MAX_VPN_PAYLOADS = 16
# A property list integer is 64-bit; a longer one is an attack on int/str conversion.
MAX_PLIST_INT_BITS = 64
# A control request carries at most a profile (MAX_PROFILE_BYTES) plus base64 and secrets.
MAX_CONTROL_LINE = 2 * 1024 * 1024
# Control messages nest a profile inside a request: a few levels more than a profile.
MAX_CONTROL_DEPTH = MAX_PROFILE_DEPTH + 4

# A string literal, as an unrolled loop (an alternation per character is 15x slower).
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_BRACKETS = re.compile(rb"[\[\]{}]")


def json_depth_exceeds(data: bytes | str, limit: int) -> bool:
    """Whether a JSON text nests arrays/objects deeper than limit (checked before
    json.loads, whose decoder recurses once per level). Linear in the input."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return False  # the common case: too few brackets to nest that deep at all
    depth = 0
    for m in _BRACKETS.finditer(_JSON_STRING.sub(b'""', raw)):
        if m.group() in (b"[", b"{"):
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
    return False
