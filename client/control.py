"""The local control protocol: versioned JSON lines over a UNIX socket.

Request:  {"version": 1, "command": "status" | "disconnect"}
Response: {"version": 1, "ok": true, ...} or {"version": 1, "ok": false, "error": "...", "code": N}

The foreground engine serves it at $VPNCLIENT_RUNTIME_DIR/control.sock so that
`vpnclient status` and `vpnclient disconnect` reach it; the daemon will speak the same.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

VERSION = 1
SOCKET_NAME = "control.sock"
MAX_LINE = 64 * 1024

log = logging.getLogger(__name__)

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


def runtime_dir() -> Path:
    env = os.environ.get("VPNCLIENT_RUNTIME_DIR")
    if env:
        return Path(env)
    if os.geteuid() == 0:
        return Path("/run/vpnclient")
    base = os.environ.get("XDG_RUNTIME_DIR") or f"/tmp/vpnclient-{os.getuid()}"
    return Path(base) / "vpnclient"


def socket_path(rdir: Path | None = None) -> Path:
    return (rdir or runtime_dir()) / SOCKET_NAME


async def serve(path: Path, handler: Handler) -> asyncio.AbstractServer:
    """Listen on path (replacing a stale socket) and answer one request per line."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if path.exists() or path.is_symlink():
        if _alive(path):
            raise RuntimeError(f"another vpnclient is already running ({path})")
        path.unlink()

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                try:
                    request = json.loads(line)
                    if not isinstance(request, dict):
                        raise ValueError("a request must be a JSON object")
                    response = await handler(request)
                except (ValueError, KeyError) as exc:
                    response = {"ok": False, "error": f"bad request: {exc}", "code": 2}
                response.setdefault("version", VERSION)
                writer.write(json.dumps(response).encode() + b"\n")
                await writer.drain()
        except (ConnectionError, asyncio.LimitOverrunError, ValueError):
            pass  # a client that goes away or floods us only loses its own connection
        finally:
            writer.close()

    server = await asyncio.start_unix_server(on_client, path=str(path), limit=MAX_LINE)
    os.chmod(path, 0o600)
    return server


def _alive(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        try:
            s.connect(str(path))
            return True
        except OSError:
            return False


def request(command: str, rdir: Path | None = None, timeout: float = 5.0, **args: Any) -> dict:
    """Send one request to the running engine; raises OSError when none is listening."""
    path = socket_path(rdir)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(path))
        s.sendall(json.dumps({"version": VERSION, "command": command, **args}).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    return json.loads(data)
