"""The control protocol: JSON lines from the socket, as the daemon and the CLI read them.

An input is the byte stream one peer sends. Each line goes through control.decode (as
the daemon's _handle_line does) and the daemon's answer to it is encoded, echoing the
request's id; the same stream is read by ControlClient.messages (the CLI's side).
Everything must parse or raise control.ProtocolError.
"""

from __future__ import annotations

import random
from typing import Any

from client import control
from tests.fuzz.engine import Target
from tests.fuzz.mutate import mutate_bytes
from tests.fuzz.targets.profile import JSON_SEEDS
from tests.fuzz.tree import MAX_DOC, deep_json, dumps_json, mutate_tree

SEEDS: list[dict[str, Any]] = [
    {"version": 1, "id": 1, "command": "status"},
    {"version": 1, "id": 2, "command": "subscribe"},
    {"version": 1, "id": 3, "command": "connect", "profile": JSON_SEEDS[1],
     "secrets": {"password": "pw"}, "wait": True},
    {"version": 1, "id": 4, "command": "disconnect", "wait": False},
    {"version": 1, "event": "state", "state": "connected", "profile": "x"},
    {"version": 1, "ok": False, "code": 2, "reason": "bad-request", "error": "x"},
]


class _Stream:
    """A socket whose recv() hands out the input in pieces."""

    def __init__(self, data: bytes, piece: int) -> None:
        self.data, self.piece, self.pos = data, piece, 0

    def recv(self, n: int) -> bytes:
        # From an offset: slicing off the rest at each call would copy a 2 MiB input
        # 256 times over in 8 KiB pieces, CPU time charged to the code under test.
        out = self.data[self.pos:self.pos + min(n, self.piece)]
        self.pos += len(out)
        return out


class ControlTarget(Target):
    name = "control"
    expected = (control.ProtocolError,)

    def generate(self, rng: random.Random) -> bytes:
        lines = []
        for _ in range(rng.randint(1, 3)):
            tree = mutate_tree(rng, rng.choice(SEEDS))
            try:
                line = dumps_json(tree, 2 * MAX_DOC)
            except (ValueError, RecursionError):
                line = b"{}"
            if rng.random() < 0.2:
                line = mutate_bytes(rng, line)
            if rng.random() < 0.02:
                line = b'{"version": 1, "id": ' + deep_json(rng) + b"}"
            lines.append(line)
        return (b"\n".join(lines) + rng.choice((b"\n", b"", b"\r\n")))[:2 * MAX_DOC]

    def run(self, data: bytes) -> None:
        for line in data.split(b"\n"):
            if not line.strip():
                continue
            try:
                request = control.decode(line)
            except control.ProtocolError:
                continue
            response = control.error("bad-request", f"unknown command {request.get('command')!r}")
            if "id" in request:
                response["id"] = request["id"]
            control.encode(response)
        # Pieces as a local stream socket delivers them (a peer that trickles single bytes
        # into a 2 MiB line is another matter, see the README's fuzzing notes).
        piece = 65536 >> (len(data) % 4)
        client = control.ControlClient(_Stream(data, piece))  # type: ignore[arg-type]
        for _ in client.messages():
            pass


TARGET_CLASS = ControlTarget
