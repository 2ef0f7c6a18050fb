"""Mutations of decoded documents (JSON / property-list trees): wrong types, edge values,
missing and unknown keys, long strings and lists, deep nesting."""

from __future__ import annotations

import copy
import datetime
import io
import json
import plistlib
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


# A mutated tree shares subtrees (long lists of one node, a value copied elsewhere), so
# written out in full it can expand to gigabytes: one such JSON tree took 3 s and 85 MiB
# to serialize, an XML plist 0.8 s and 100 MiB, all of it in the fuzz process's peak RSS
# (the memory bound's measure) before the document was cut to MAX_DOC. These write only
# the first `limit` bytes. A binary plist stores each shared object once: it stays small.


def dumps_json(tree: Any, limit: int = MAX_DOC, indent: int | None = None) -> bytes:
    """json.dumps(tree, indent=indent).encode()[:limit], writing little more than that.

    A tree that would write more is first cut down to the children that begin within
    the limit (sizes from _json_sizes: a lower bound, so the cut tree still writes the
    same first `limit` bytes). Without indent the C encoder writes it, as before; with
    one, _dumps_indented (json's own indenting encoder is Python generators, a step per
    nesting level per chunk: 2.5 s and 100 MiB of chunks for one such tree)."""
    sizes = _json_sizes(tree)
    if sizes[id(tree)] > limit:
        tree = _prune(tree, limit, sizes)
    if indent is None:
        return json.dumps(tree).encode()[:limit]
    return _dumps_indented(tree, indent, limit).encode()[:limit]


class _Enough(Exception):
    pass


def _dumps_indented(tree: Any, indent: int, limit: int) -> str:
    """json.dumps(tree, indent=indent)'s text, or at least its first `limit` characters.
    (Cycles are _json_sizes' to refuse; nesting beyond the recursion limit raises
    RecursionError, as json's encoder does.)"""
    out: list[str] = []
    written = 0

    def put(text: str) -> None:
        nonlocal written
        out.append(text)
        written += len(text)
        if written > limit:
            raise _Enough()

    def value(node: Any, level: int) -> None:
        if isinstance(node, dict | list):
            if not node:
                put("{}" if isinstance(node, dict) else "[]")
                return
            inner = "\n" + " " * (indent * (level + 1))
            put("{" if isinstance(node, dict) else "[")
            for n, item in enumerate(node.items() if isinstance(node, dict) else node):
                put(("," if n else "") + inner)
                if isinstance(node, dict):
                    k, item = item
                    put(json.dumps(k if isinstance(k, str) else str(k)) + ": ")
                value(item, level + 1)
            put("\n" + " " * (indent * level) + ("}" if isinstance(node, dict) else "]"))
        else:
            put(json.dumps(node))

    try:
        value(tree, 0)
    except _Enough:
        pass
    return "".join(out)


def _json_sizes(root: Any) -> dict[int, int]:
    """id -> length of json.dumps(node) with its default separators (", ", ": "), each
    shared node once; with `indent` the text is longer. Iterative: nests are thousands
    deep. ValueError for a cycle, as json.dumps would raise."""
    sizes: dict[int, int] = {}
    open_: set[int] = set()  # being summed: the ancestors of what is popped next
    stack: list[tuple[Any, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if not isinstance(node, (dict, list)):
            if id(node) not in sizes:
                sizes[id(node)] = len(json.dumps(node))
            continue
        children = list(node.values()) if isinstance(node, dict) else node
        if children_done:
            open_.discard(id(node))
            n = 2 + sum(sizes[id(c)] for c in children) + 2 * max(0, len(children) - 1)
            if isinstance(node, dict):
                n += sum(_key_size(k) for k in node)
            sizes[id(node)] = n
            continue
        if id(node) in sizes:
            continue
        if id(node) in open_:
            raise ValueError("Circular reference detected")
        open_.add(id(node))
        stack.append((node, True))
        stack.extend((c, False) for c in children if id(c) not in sizes)
    return sizes


def _key_size(key: Any) -> int:
    return len(json.dumps(key if isinstance(key, str) else str(key))) + 2  # and ": "


def _prune(node: Any, budget: int, sizes: dict[int, int]) -> Any:
    """node with only the children that begin within `budget` characters of its text
    (the one that crosses the budget cut down in turn): what it writes begins as node's
    text does, for at least `budget` characters."""
    if not isinstance(node, (dict, list)) or sizes[id(node)] <= budget:
        return node
    is_dict = isinstance(node, dict)
    out = []
    pos = 1  # how much of node's text is covered: its bracket
    for n, (k, v) in enumerate(node.items() if is_dict else enumerate(node)):
        if pos >= budget:
            break
        pos += (2 if n else 0) + (_key_size(k) if is_dict else 0)  # ", " and '"key": '
        out.append((k, _prune(v, budget - pos, sizes)))
        pos += sizes[id(v)]
    return dict(out) if is_dict else [v for _, v in out]


class _Full(Exception):
    pass


class _CappedFile(io.BytesIO):
    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def write(self, b: Any) -> int:
        n = super().write(b)
        if self.tell() > self.limit:
            raise _Full()
        return n


def dumps_plist(tree: Any, fmt: Any, limit: int = MAX_DOC) -> bytes:
    """plistlib.dumps(tree, fmt=fmt)[:limit], writing no more than that."""
    f = _CappedFile(limit)
    try:
        plistlib.dump(tree, f, fmt=fmt)
    except _Full:
        pass
    return f.getvalue()[:limit]
