"""ESP microbenchmark: microseconds per packet for encapsulate and decapsulate, next to the
bare AEAD call of `cryptography` on the same data (the floor the ESP path can approach).

No root, no network: `python3 -m tests.perf.esp_micro [--json FILE]`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable

from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from client.esp.sa import EspInbound, EspOutbound
from client.ikev2.constants import EncrId

SUITES = {
    "AES-GCM-256": (EncrId.AES_GCM_16, AESGCM),
    "ChaCha20-Poly1305": (EncrId.CHACHA20_POLY1305, ChaCha20Poly1305),
}
SIZES = (64, 1400)
KEY = bytes(range(36))  # 32-byte key || 4-byte salt
CHUNK = 64  # packets decapsulated per timed stretch: a batch of the data plane


def inner_packet(size: int) -> bytes:
    """An IPv4 packet of `size` bytes (only the version nibble matters to ESP)."""
    return b"\x45" + bytes(size - 1)


def per_packet_us(run: Callable[[int], None], n: int, repeat: int) -> float:
    """The best of `repeat` rounds of run(n), per packet: on a shared machine the minimum
    is the figure least disturbed by other work."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        run(n)
        times.append((time.perf_counter() - t0) / n * 1e6)
    return min(times)


def decapsulate_us(encr_id: int, inner: bytes, n: int, repeat: int) -> float:
    """Like per_packet_us for decapsulate(). It needs fresh sequence numbers (the replay
    window is exact): a new pair of SAs each round, and the packets sealed CHUNK at a time,
    untimed, just before they are decapsulated in order. Like a datagram just received,
    they are then in the CPU cache: sealing all n beforehand (2.8 MB at 1400 bytes) charged
    decapsulate() with cache misses that neither the data plane nor the bare AEAD call (on
    one hot buffer) pays."""
    times = []
    for _ in range(repeat):
        seal = EspOutbound(0x1234, encr_id, 256, KEY).encapsulate
        dec = EspInbound(0x1234, encr_id, 256, KEY).decapsulate
        elapsed = 0.0
        for _ in range(n // CHUNK):
            chunk = [seal(inner) for _ in range(CHUNK)]
            t0 = time.perf_counter()
            for p in chunk:
                dec(p)
            elapsed += time.perf_counter() - t0
        times.append(elapsed / (n // CHUNK * CHUNK) * 1e6)
    return min(times)


def measure(suite: str, size: int, n: int, repeat: int) -> dict[str, float]:
    encr_id, aead_cls = SUITES[suite]
    inner = inner_packet(size)

    def encapsulate(count: int) -> None:
        out = EspOutbound(0x1234, encr_id, 256, KEY)
        enc = out.encapsulate
        for _ in range(count):
            enc(inner)

    # The bare AEAD calls on what ESP seals: the inner packet plus its 2-byte trailer
    # (and padding to 4 bytes), 8 bytes of AAD, a 12-byte nonce.
    aead = aead_cls(KEY[:32])
    nonce, aad = bytes(12), bytes(8)
    plain = inner + bytes(-(size + 2) % 4 + 2)
    sealed = aead.encrypt(nonce, plain, aad)

    def bare_encrypt(count: int) -> None:
        e = aead.encrypt
        for _ in range(count):
            e(nonce, plain, aad)

    def bare_decrypt(count: int) -> None:
        d = aead.decrypt
        for _ in range(count):
            d(nonce, sealed, aad)

    row = {
        "encapsulate_us": per_packet_us(encapsulate, n, repeat),
        "decapsulate_us": decapsulate_us(encr_id, inner, n, repeat),
        "aead_encrypt_us": per_packet_us(bare_encrypt, n, repeat),
        "aead_decrypt_us": per_packet_us(bare_decrypt, n, repeat),
    }
    row["ratio"] = (row["encapsulate_us"] + row["decapsulate_us"]) / (
        row["aead_encrypt_us"] + row["aead_decrypt_us"]
    )
    return {k: round(v, 3) for k, v in row.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m tests.perf.esp_micro")
    parser.add_argument("--packets", type=int, default=2_000)
    parser.add_argument("--repeat", type=int, default=200)
    parser.add_argument("--json", metavar="FILE", help="also write the table as JSON")
    args = parser.parse_args(argv)
    rows = []
    print(f"{'suite':<18} {'bytes':>5} {'encap us':>9} {'decap us':>9} {'AEAD enc':>9}"
          f" {'AEAD dec':>9} {'(enc+dec)/AEAD':>15}")
    for suite in SUITES:
        for size in SIZES:
            r = measure(suite, size, args.packets, args.repeat)
            rows.append({"suite": suite, "bytes": size, **r})
            print(f"{suite:<18} {size:>5} {r['encapsulate_us']:>9.2f} {r['decapsulate_us']:>9.2f}"
                  f" {r['aead_encrypt_us']:>9.2f} {r['aead_decrypt_us']:>9.2f}"
                  f" {r['ratio']:>14.2f}x", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"esp_micro": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
