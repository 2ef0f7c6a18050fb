"""Tiny TCP services for the lab (run with `python3 -m tests.lab.services ...`).

sink: per connection, read an 8-byte big-endian length N, then N bytes, and answer with
      the SHA-256 hex digest of those bytes and a newline.
send: connect to a sink, send N random bytes, print JSON {"sent", "received", "seconds"}.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import socket
import socketserver
import struct
import sys
import time

CHUNK = 64 * 1024
MAX_BYTES = 1 << 34


class _SinkHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        sock: socket.socket = self.request
        sock.settimeout(60)
        header = _recv_exact(sock, 8)
        if header is None:
            return
        (remaining,) = struct.unpack(">Q", header)
        if remaining > MAX_BYTES:
            return
        digest = hashlib.sha256()
        while remaining:
            data = sock.recv(min(CHUNK, remaining))
            if not data:
                return
            digest.update(data)
            remaining -= len(data)
        sock.sendall(digest.hexdigest().encode() + b"\n")


def _recv_exact(sock: socket.socket, n: int) -> bytes | None:
    buf = b""
    while len(buf) < n:
        data = sock.recv(n - len(buf))
        if not data:
            return None
        buf += data
    return buf


class _Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


def serve_sink(host: str, port: int) -> None:
    with _Server((host, port), _SinkHandler) as server:
        print(f"sink listening on {host}:{port}", flush=True)
        server.serve_forever()


def send(host: str, port: int, nbytes: int, timeout: float = 60.0) -> dict[str, object]:
    digest = hashlib.sha256()
    start = time.monotonic()
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(struct.pack(">Q", nbytes))
        remaining = nbytes
        while remaining:
            chunk = os.urandom(min(CHUNK, remaining))
            digest.update(chunk)
            sock.sendall(chunk)
            remaining -= len(chunk)
        answer = b""
        while not answer.endswith(b"\n"):
            data = sock.recv(128)
            if not data:
                break
            answer += data
    return {
        "sent": digest.hexdigest(),
        "received": answer.decode(errors="replace").strip(),
        "seconds": round(time.monotonic() - start, 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m tests.lab.services")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_sink = sub.add_parser("sink")
    p_sink.add_argument("--host", default="0.0.0.0")
    p_sink.add_argument("--port", type=int, default=5001)
    p_send = sub.add_parser("send")
    p_send.add_argument("--host", required=True)
    p_send.add_argument("--port", type=int, default=5001)
    p_send.add_argument("--bytes", type=int, default=20_000_000)
    p_send.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args(argv)
    if args.cmd == "sink":
        serve_sink(args.host, args.port)
        return 0
    print(json.dumps(send(args.host, args.port, args.bytes, args.timeout)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
