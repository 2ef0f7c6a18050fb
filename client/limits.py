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
# Values in a JSON profile (arrays and objects, and the items and members in them, counted
# as the brackets and commas outside strings, before json.loads): a real profile has a
# few dozen, a few thousand with both split-tunnel lists full. Each one costs the decoder,
# the depth check and the copies of Profile.raw (to_dict, the store) microseconds: a 1 MiB
# profile of 200,000 empty lists once took 0.9 s to read and write back.
MAX_PROFILE_VALUES = 4 * MAX_SPLIT_NETWORKS
# Per-item work (address parsing, X.509, later DNS lookups and firewall rules at connect)
# is bounded per key; each list is checked for its length before any item is parsed.
# resolv.conf uses 3 name servers, systemd-resolved takes more; nobody needs dozens
# (2000 in a 36 KB profile cost 30 ms to read and write back).
MAX_DNS_SERVERS = 32
MAX_DNS_DOMAINS = 64
# Gateways tried in turn (failover); each is resolved and let through the kill switch.
MAX_REMOTE_ADDRS = 32
# CA certificates to trust for the gateway (remote.cert, a list or a PEM bundle); each one
# is an X.509 parse. A whole public CA store is ~150.
MAX_REMOTE_CERTS = 256
# A proposal list: a proposal number is one octet (RFC 7296 3.3.1), and a real list of
# proposals is a few hundred characters (a 1 MiB one once took 1.7 s to parse).
MAX_PROPOSALS = 255
MAX_PROPOSAL_TEXT = 8192
# An IKE identity (remote.id, local.id): an FQDN or e-mail address is at most ~254
# characters, a DN a few hundred; a DN's text is parsed RDN by RDN (1 MiB took 0.1 s).
MAX_IDENTITY_CHARS = 2048
# A .mobileconfig holds a few payloads of a few dozen keys each: a few hundred objects.
# Each one costs microseconds to parse (XML), check and convert, each unknown key a report
# line (9,800 unknown keys took 44 ms): the same bound as a JSON profile's values.
MAX_PLIST_OBJECTS = MAX_PROFILE_VALUES
MAX_PLIST_DEPTH = 32
# One .mobileconfig usually configures one VPN; each payload costs a PKCS#12 decryption.
MAX_VPN_PAYLOADS = 16
# A property list integer is 64-bit; a longer one is an attack on int/str conversion.
MAX_PLIST_INT_BITS = 64
# A control request carries at most a profile (MAX_PROFILE_BYTES) plus base64 and secrets.
MAX_CONTROL_LINE = 2 * 1024 * 1024
# Control messages nest a profile inside a request: a few levels more than a profile.
MAX_CONTROL_DEPTH = MAX_PROFILE_DEPTH + 4
# ...and carry a profile's values plus a few dozen of their own (a status, an event).
MAX_CONTROL_VALUES = MAX_PROFILE_VALUES + 256

# Everything up to the next bracket or comma outside a string, then that character (or
# the end): strings are skipped whole inside the regex engine, an unterminated one to the
# end, so the Python loop below takes one step per bracket or comma, never per string or
# byte. Possessive quantifiers: no backtracking, linear in the input.
_TO_NEXT_TOKEN = re.compile(
    rb'(?:[^"\[\]{},]++|"[^"\\]*+(?:\\.[^"\\]*+)*+(?:"|\\?\Z))*+([\[\]{},]|\Z)', re.DOTALL)
_OPEN = frozenset(b"[{")
_CLOSE = frozenset(b"]}")


def json_too_complex(data: bytes | str, max_depth: int,
                     max_values: int | None = None) -> str | None:
    """Why a JSON text is beyond bounds, checked before json.loads (whose decoder
    recurses once per level and whose result later code copies): "nested deeper than N"
    or "more than N values" (arrays, objects and their items, see MAX_PROFILE_VALUES),
    else None. Brackets and commas inside strings do not count.

    Linear in the input, and stops at the first bound exceeded: at most about
    2 * max_values Python steps (a stray closing bracket ends the scan: json.loads
    refuses the text there anyway)."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    opens = raw.count(b"[") + raw.count(b"{")
    if opens <= max_depth and (max_values is None or opens + raw.count(b",") <= max_values):
        return None  # the common case: too few brackets and commas, even in strings
    depth = values = 0
    limit = max_values if max_values is not None else len(raw)
    for m in _TO_NEXT_TOKEN.finditer(raw):
        token = m.group(1)
        if not token:
            break  # the end
        c = token[0]
        if c in _CLOSE:
            depth -= 1
            if depth < 0:
                break
            continue
        values += 1
        if values > limit:
            return f"more than {limit} values"
        if c in _OPEN:
            depth += 1
            if depth > max_depth:
                return f"nested deeper than {max_depth}"
    return None


def json_depth_exceeds(data: bytes | str, limit: int) -> bool:
    """Whether a JSON text nests arrays/objects deeper than limit (see json_too_complex)."""
    reason = json_too_complex(data, limit)
    return reason is not None
