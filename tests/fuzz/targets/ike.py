"""The IKE SA at every exchange: mutated gateway messages, re-sealed with its keys.

An input names a recorded Stage and carries the gateway's datagram(s) in plaintext form
(header, SK/SKF header, inner payload chain). Mutations work on the payload chain: drop,
duplicate, reorder, retype, splice payloads from other exchanges, mark them critical,
mutate bodies (length and count fields most of all) and now and then the header. The
result is sealed with the gateway's keys, so it passes the ICV and reaches the payload
parsers and the state machine, and fed to a fresh copy of the client. IkeSA.receive
must swallow every protocol error itself: any exception that escapes is a finding.
"""

from __future__ import annotations

import random
import struct

from client.ikev2.constants import IKE_HEADER_LEN, ExchangeType, PayloadType
from tests.fuzz.engine import Target
from tests.fuzz.ike_session import (
    SK_HEADER_LEN,
    SKF_HEADER_LEN,
    Stage,
    build_stages,
    seal,
    snapshot,
)
from tests.fuzz.mutate import mutate_bytes

_RUN_TIMERS = 0x01  # flag: after the datagrams, fire the client's next timer
_PAYLOAD_TYPES = tuple(int(t) for t in PayloadType) + (0, 1, 32, 55, 127, 128, 255)
_EXCHANGES = tuple(int(e) for e in ExchangeType) + (0, 33, 255)

Item = list  # [payload type, flags byte, body]


def split_chain(first: int, chain: bytes) -> tuple[list[Item], bytes]:
    """The payloads of a chain (generic headers only) and what follows the last sane one."""
    items: list[Item] = []
    ptype, i = first, 0
    while ptype != 0 and i + 4 <= len(chain):
        nxt, flags, length = struct.unpack_from("!BBH", chain, i)
        if length < 4 or i + length > len(chain):
            break
        items.append([ptype, flags, chain[i + 4:i + length]])
        ptype, i = nxt, i + length
    return items, chain[i:]


def join_chain(items: list[Item], tail: bytes = b"") -> tuple[int, bytes]:
    out = bytearray()
    for n, (_, flags, body) in enumerate(items):
        nxt = items[n + 1][0] if n + 1 < len(items) else 0
        out += struct.pack("!BBH", nxt, flags, (4 + len(body)) & 0xFFFF) + body
    return (items[0][0] if items else 0), bytes(out + tail)


class IkeTarget(Target):
    name = "ike"
    expected = ()  # IkeSA.receive handles every IkeError itself

    def __init__(self) -> None:
        self.stages = build_stages()
        self.by_name = {s.name: s for s in self.stages}
        # Every payload the gateway ever sent, by type: material to splice in anywhere.
        self.pool: dict[int, list[bytes]] = {}
        for s in self.stages:
            for plain in s.plain:
                first, chain = self._chain_of(plain)
                for ptype, _, body in split_chain(first, chain)[0]:
                    self.pool.setdefault(ptype, []).append(body)
        self.pool_types = sorted(self.pool)

    # -- the input format --------------------------------------------------------------
    @staticmethod
    def encode(stage: str, flags: int, plain: list[bytes]) -> bytes:
        return (stage.encode() + b"\n" + bytes([flags])
                + b"".join(struct.pack("!I", len(p)) + p for p in plain))

    @staticmethod
    def decode(data: bytes) -> tuple[str, int, list[bytes]]:
        name, _, rest = data.partition(b"\n")
        flags, i, plain = rest[0] if rest else 0, 1, []
        while i + 4 <= len(rest):
            (n,) = struct.unpack_from("!I", rest, i)
            plain.append(rest[i + 4:i + 4 + n])
            i += 4 + n
        return name.decode(errors="replace"), flags, plain

    @staticmethod
    def _hlen(plain: bytes) -> int:
        np = plain[16] if len(plain) > 16 else 0
        return IKE_HEADER_LEN + {PayloadType.SK: SK_HEADER_LEN,
                                 PayloadType.SKF: SKF_HEADER_LEN}.get(np, 0)

    def _chain_of(self, plain: bytes) -> tuple[int, bytes]:
        hlen = self._hlen(plain)
        first = plain[16] if hlen == IKE_HEADER_LEN else plain[IKE_HEADER_LEN]
        return first, plain[hlen:]

    # -- mutation -------------------------------------------------------------------------
    def _mutate_items(self, rng: random.Random, items: list[Item]) -> None:
        op = rng.random()
        if op < 0.45 and items:
            it = rng.choice(items)
            it[2] = mutate_bytes(rng, it[2])
        elif op < 0.53 and items:
            del items[rng.randrange(len(items))]
        elif op < 0.61 and items:
            items.insert(rng.randrange(len(items) + 1), list(rng.choice(items)))
        elif op < 0.67 and len(items) > 1:
            i, j = rng.randrange(len(items)), rng.randrange(len(items))
            items[i], items[j] = items[j], items[i]
        elif op < 0.79:
            ptype = rng.choice(self.pool_types)
            body = rng.choice(self.pool[ptype])
            if rng.random() < 0.5:
                body = mutate_bytes(rng, body)
            items.insert(rng.randrange(len(items) + 1), [ptype, 0, body])
        elif op < 0.85 and items:
            it = rng.choice(items)
            if it[0] in self.pool:
                it[2] = rng.choice(self.pool[it[0]])
        elif op < 0.92 and items:
            rng.choice(items)[0] = rng.choice(_PAYLOAD_TYPES)
        elif items:
            rng.choice(items)[1] ^= rng.choice((0x80, 0x01, 0x7F))

    def _mutate_chain(self, rng: random.Random, first: int, chain: bytes) -> tuple[int, bytes]:
        items, tail = split_chain(first, chain)
        for _ in range(rng.choice((1, 1, 1, 2, 2, 3))):
            self._mutate_items(rng, items)
        first, out = join_chain(items, tail)
        if rng.random() < 0.06:  # lengths that disagree with the payloads
            out = mutate_bytes(rng, out)
        if rng.random() < 0.03:
            first = rng.choice(_PAYLOAD_TYPES)
        return first, out

    def _mutate_header(self, rng: random.Random, plain: bytearray) -> None:
        field = rng.randrange(4)
        if field == 0:
            plain[18] = rng.choice(_EXCHANGES)
        elif field == 1:
            plain[19] ^= rng.choice((0x08, 0x20, 0x10, 0x01))
        elif field == 2:
            (mid,) = struct.unpack_from("!I", plain, 20)
            new = (mid + rng.choice((-1, 1, 2))) & 0xFFFFFFFF
            plain[20:24] = struct.pack("!I", rng.choice((new, 0xFFFFFFFF)))
        else:
            plain[17] = rng.choice((0x20, 0x21, 0x30, 0x10))

    def _rebuild(self, plain: bytes, first: int, chain: bytes) -> bytearray:
        hlen = self._hlen(plain)
        out = bytearray(plain[:hlen])
        if hlen == IKE_HEADER_LEN:
            out[16] = first
        else:
            out[IKE_HEADER_LEN] = first
        return out + chain

    def generate(self, rng: random.Random) -> bytes:
        stage = rng.choice(self.stages)
        plains = [bytearray(p) for p in stage.plain]
        if len(plains) == 1:
            first, chain = self._chain_of(plains[0])
            plains[0] = self._rebuild(plains[0], *self._mutate_chain(rng, first, chain))
        else:
            plains = self._mutate_fragments(rng, plains)
        if rng.random() < 0.04 and plains:
            self._mutate_header(rng, rng.choice(plains))
        flags = _RUN_TIMERS if rng.random() < 0.1 else 0
        return self.encode(stage.name, flags, [bytes(p) for p in plains])

    def _mutate_fragments(self, rng: random.Random, plains: list[bytearray]
                          ) -> list[bytearray]:
        """Mutate the reassembled chain and cut it again; or the fragments themselves."""
        op = rng.random()
        if op < 0.6:
            first = plains[0][IKE_HEADER_LEN]
            chain = b"".join(bytes(p[IKE_HEADER_LEN + SKF_HEADER_LEN:]) for p in plains)
            first, chain = self._mutate_chain(rng, first, chain)
            total = max(1, min(len(plains) + rng.choice((0, 0, 0, -1, 1)), len(chain) or 1))
            room = -(-len(chain) // total) or 1
            out = []
            for n in range(total):
                p = bytearray(plains[min(n, len(plains) - 1)][:IKE_HEADER_LEN + SKF_HEADER_LEN])
                p[IKE_HEADER_LEN] = first if n == 0 else 0
                p[IKE_HEADER_LEN + 4:IKE_HEADER_LEN + 8] = struct.pack("!HH", n + 1, total)
                out.append(p + chain[n * room:(n + 1) * room])
            return out
        if op < 0.75:  # number / total fields
            p = rng.choice(plains)
            at = IKE_HEADER_LEN + rng.choice((4, 6))
            p[at:at + 2] = struct.pack("!H", rng.choice((0, 1, 2, 3, 0xFFFF, len(plains) + 1)))
            return plains
        if op < 0.85:  # lost, repeated or reordered fragments
            if rng.random() < 0.5 and len(plains) > 1:
                del plains[rng.randrange(len(plains))]
            else:
                plains.insert(rng.randrange(len(plains) + 1), bytearray(rng.choice(plains)))
            rng.shuffle(plains)
            return plains
        p = rng.choice(plains)
        body = mutate_bytes(rng, bytes(p[IKE_HEADER_LEN + SKF_HEADER_LEN:]))
        p[IKE_HEADER_LEN + SKF_HEADER_LEN:] = body
        return plains

    # -- running ----------------------------------------------------------------------
    def run(self, data: bytes) -> None:
        name, flags, plains = self.decode(data)
        stage: Stage | None = self.by_name.get(name)
        if stage is None:
            return  # a saved case from a stage that no longer exists
        client = snapshot(stage.client)
        for plain in plains:
            client.receive(seal(plain, stage.sk), stage.now)
        client.datagrams_to_send()
        while client.next_event() is not None:
            pass
        if flags & _RUN_TIMERS:
            t = client.get_timer()
            if t is not None:
                client.handle_timer(t)
                client.datagrams_to_send()
                while client.next_event() is not None:
                    pass


TARGET_CLASS = IkeTarget
