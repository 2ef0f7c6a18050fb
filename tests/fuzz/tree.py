"""Mutations of decoded documents (JSON / property-list trees): wrong types, edge values,
missing and unknown keys, long strings and lists, deep nesting."""

from __future__ import annotations

import copy
import datetime
import random
from typing import Any

# Deep enough to reach every recursion limit a parser might forget to bound.
DEEP = (5, 50, 200, 700, 3000)
_STRINGS = ("", " ", "x" * 300, "\x00", "a\nb", "é", "\ud800", "CN=", "@#zz", "ipv4:1",
            "0.0.0.0/0", "::/0", "192.0.2.1", "2001:db8::1", "vpn.example.com", "*", "%s",
            "-1", "1e999", "aes999", "aes256gcm16-prfsha384-ecp384", "None", "IKEv2",
            "../../etc/passwd", "A" * 5000)  # the long one last: never repeated
_NUMBERS = (0, 1, -1, 2**31, 2**63, 2**64 + 1, 10**400, 1.5, float("nan"), float("inf"),
            1280, 1500, 65535, 65536)


def _nest(rng: random.Random, plist: bool) -> Any:
    depth = rng.choice(DEEP)
    node: Any = rng.choice((1, "x", [])) if not plist else "x"
    for _ in range(depth):
        node = [node] if rng.random() < 0.5 else {"k": node}
    return node


def scalar(rng: random.Random, plist: bool) -> Any:
    r = rng.random()
    if r < 0.35:
        return rng.choice(_STRINGS)
    if r < 0.6:
        n = rng.choice(_NUMBERS)
        if plist and isinstance(n, float) and n != n:
            return 0.5
        return n
    if r < 0.7:
        return rng.choice((True, False, None)) if not plist else rng.choice((True, False))
    if r < 0.8:
        return [rng.choice(_STRINGS[:-1])] * rng.choice((0, 1, 2, 100, 3000))
    if r < 0.85:
        return _nest(rng, plist)
    if plist and r < 0.95:
        return rng.choice((b"", b"\x30\x82\x01\x00", rng.randbytes(64),
                           datetime.datetime(2020, 1, 1)))
    return {}


# Generated documents stay near the parsers' own limits (1 MiB profiles, 2 MiB lines):
# beyond those the parsers refuse before reading, and building them only costs time.
MAX_DOC = 1200 * 1024
_MAX_PATH = 6  # mutation points this deep at most (a nest we made is mutated as a whole)


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if len(prefix) >= _MAX_PATH:
        return out
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node[:50]):
            out += _paths(v, prefix + (i,))
    return out


def mutate_tree(rng: random.Random, tree: Any, plist: bool = False) -> Any:
    tree = copy.deepcopy(tree)
    for _ in range(rng.choice((1, 1, 2, 3, 5))):
        paths = _paths(tree)
        path = rng.choice(paths)
        if not path:
            continue
        parent = tree
        for p in path[:-1]:
            parent = parent[p]
        key = path[-1]
        r = rng.random()
        if r < 0.5:
            parent[key] = scalar(rng, plist)
        elif r < 0.65 and isinstance(parent, dict):
            del parent[key]
        elif r < 0.75 and isinstance(parent, dict):
            parent[rng.choice(("unknown", "PayloadContent", "IKEv2", key + "x"))] = \
                scalar(rng, plist)
        elif r < 0.85:  # the value's type is kept, its content changed
            v = parent[key]
            if isinstance(v, str):
                parent[key] = v * rng.choice((0, 2, 100)) + rng.choice(("", "\x7f", "/33"))
                parent[key] = parent[key][:MAX_DOC]
            elif isinstance(v, bool):
                parent[key] = not v
            elif isinstance(v, int):
                parent[key] = v + rng.choice((-1, 1, 2**32, -(2**40)))
            elif isinstance(v, list) and v:  # long lists, yet no huge tree to build
                parent[key] = v * max(1, min(rng.choice((2, 50, 1000)), 5000 // len(v)))
        else:  # the whole value somewhere else (a payload in the wrong place)
            src = rng.choice(paths)
            node = tree
            for p in src:
                node = node[p]
            if node is not parent:
                parent[key] = node  # shared, or a cycle: the serializer refuses those
    return tree


def deep_json(rng: random.Random) -> bytes:
    """Nesting the JSON encoder would refuse to write, as raw text."""
    n = rng.choice(DEEP) * rng.choice((1, 10, 30))
    open_, close = rng.choice(((b"[", b"]"), (b'{"a":', b"}")))
    return open_ * n + b"1" + close * n
