"""The local control protocol: versioned JSON lines over a UNIX stream socket.

Every message is one JSON object on one line and carries `"version": 1`.

Requests (client -> server), with an optional `id` that the response echoes:

    {"version": 1, "id": 7, "command": "status"}
    {"version": 1, "id": 8, "command": "subscribe"}
    {"version": 1, "id": 9, "command": "connect", "profile": {...}, "secrets": {...},
     "wait": true}
    {"version": 1, "id": 10, "command": "disconnect", "wait": true}

Responses: {"version": 1, "id": 7, "ok": true, ...} or
           {"version": 1, "id": 7, "ok": false, "code": N, "reason": "...", "error": "..."}
where `code` is the exit code CLI.md gives `connect` for the same outcome (2 profile,
3 credentials rejected, 4 gateway not trusted, 5 unreachable, 1 anything else) and
`reason` a stable word for programs (see REASONS).

Events (server -> subscribed client, no `id`): {"version": 1, "event": KIND, ...} with
KIND one of EVENTS: `state` (with the full `status`), `stats` (every second while a
connection exists), `rekey`, `roam`, `log`.

Two servers speak it at $VPNCLIENT_RUNTIME_DIR/control.sock: the foreground engine of
`vpnclient connect` run as root (status and disconnect only, one request per line, via
`serve`), and the daemon (client/daemon.py, everything; its responses carry
`"server": "daemon"`).
"""

from __future__ import annotations

import collections
import itertools
import json
import os
import socket
import stat
import struct
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .limits import MAX_CONTROL_DEPTH, MAX_CONTROL_LINE, MAX_CONTROL_VALUES, json_too_complex

if TYPE_CHECKING:
    import asyncio

VERSION = 1
SOCKET_NAME = "control.sock"
# A profile with its PKCS#12 and CA certificates is a few KiB; the profile parser
# refuses more than 1 MiB, so a request line never needs more than that plus base64.
MAX_LINE = MAX_CONTROL_LINE

# CLI.md's exit codes of `connect`; the protocol's error codes are the same numbers.
CODE_OK, CODE_FAILURE, CODE_USAGE, CODE_AUTH, CODE_UNTRUSTED, CODE_UNREACHABLE = range(6)

# reason -> code: the stable words an error response carries next to its code.
REASONS: dict[str, int] = {
    "bad-request": CODE_USAGE,  # not JSON, wrong version, unknown command or field
    "profile": CODE_USAGE,  # the profile or its secrets cannot make a connection
    "auth": CODE_AUTH,  # the gateway rejected our credentials
    "untrusted": CODE_UNTRUSTED,  # certificate chain, identity or AUTH check failed
    "unreachable": CODE_UNREACHABLE,  # no answer from the gateway
    "failed": CODE_FAILURE,  # anything else that ended a connection
    "not-authorized": CODE_FAILURE,  # the peer is neither root nor in the group
    "busy": CODE_FAILURE,  # another connection is active
    "not-connected": CODE_FAILURE,  # disconnect without a connection
    "cancelled": CODE_FAILURE,  # a disconnect request ended the connect attempt
    "not-owner": CODE_FAILURE,  # another user's connection: only they or root may do that
}
REASON_FOR_EXIT = {
    CODE_USAGE: "profile", CODE_AUTH: "auth", CODE_UNTRUSTED: "untrusted",
    CODE_UNREACHABLE: "unreachable", CODE_FAILURE: "failed",
}
COMMANDS = ("status", "subscribe", "connect", "disconnect")
EVENTS = ("state", "stats", "rekey", "roam", "log")

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


class ProtocolError(ValueError):
    """A message that is not a protocol message (bad JSON, not an object, wrong version)."""


def runtime_dir() -> Path | None:
    """This process's runtime directory: $VPNCLIENT_RUNTIME_DIR, else /run/vpnclient for
    root, else $XDG_RUNTIME_DIR/vpnclient. None for a user without either (or whose
    $XDG_RUNTIME_DIR is not theirs alone): never a fallback under /tmp, where any local
    user could plant a socket first and answer our commands with a fake status."""
    env = os.environ.get("VPNCLIENT_RUNTIME_DIR")
    if env:
        return Path(env)
    if os.geteuid() == 0:
        return Path("/run/vpnclient")
    base = os.environ.get("XDG_RUNTIME_DIR")
    if not base or not _private_dir(Path(base)):
        return None
    return Path(base) / "vpnclient"


def _private_dir(path: Path) -> bool:
    """The XDG Base Directory rule for $XDG_RUNTIME_DIR: a directory owned by this user
    that nobody else may write to (a world-writable /tmp is not one)."""
    try:
        st = path.lstat()
    except OSError:
        return False
    return (stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid()
            and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH))


def socket_path(rdir: Path) -> Path:
    return rdir / SOCKET_NAME


def daemon_socket_path() -> Path:
    """Where the daemon listens: $VPNCLIENT_RUNTIME_DIR, else the system's /run/vpnclient
    (for every user: the daemon is one per machine, not per user)."""
    env = os.environ.get("VPNCLIENT_RUNTIME_DIR")
    return Path(env or "/run/vpnclient") / SOCKET_NAME


# -- messages ----------------------------------------------------------------------------
def encode(message: dict[str, Any]) -> bytes:
    message.setdefault("version", VERSION)
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


def decode(line: bytes) -> dict[str, Any]:
    """One received line as a message; ProtocolError if it is not one."""
    if len(line) > MAX_LINE:
        raise ProtocolError("message too long")
    # json.loads recurses once per level: refuse deep nesting before it can overflow, and
    # a line of 700,000 empty lists before it costs the daemon half a second.
    too_complex = json_too_complex(line, MAX_CONTROL_DEPTH, MAX_CONTROL_VALUES)
    if too_complex:
        raise ProtocolError(f"message {too_complex}")
    try:
        message = json.loads(line)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise ProtocolError(f"not JSON: {exc}") from None
    if not isinstance(message, dict):
        raise ProtocolError("a message must be a JSON object")
    version = message.get("version", VERSION)
    if version != VERSION:
        raise ProtocolError(f"unsupported protocol version {version!r} (this is {VERSION})")
    return message


def error(reason: str, message: str, code: int | None = None) -> dict[str, Any]:
    """An error response; the code follows from the reason unless given."""
    return {"ok": False, "code": REASONS.get(reason, CODE_FAILURE) if code is None else code,
            "reason": reason, "error": message}


def peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process at the other end of a UNIX socket (SO_PEERCRED):
    what the kernel recorded at connect(), which the peer cannot forge."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", raw)
    return pid, uid, gid


# -- the foreground engine's server: one response per request line -----------------------
async def serve(path: Path, handler: Handler) -> asyncio.AbstractServer:
    """Listen on path (replacing a stale socket) and answer one request per line."""
    import asyncio  # here, not above: the CLI's clients of this module need no event loop

    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    remove_stale(path)

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                request: dict[str, Any] = {}
                try:
                    request = decode(line)
                    response = await handler(request)
                except (ValueError, KeyError) as exc:
                    response = error("bad-request", f"bad request: {exc}")
                if "id" in request:
                    response.setdefault("id", request["id"])
                writer.write(encode(response))
                await writer.drain()
        except (ConnectionError, asyncio.LimitOverrunError, ValueError):
            pass  # a client that goes away or floods us only loses its own connection
        except asyncio.CancelledError:
            pass  # the event loop is shutting down with this client still connected
        finally:
            writer.close()

    server = await asyncio.start_unix_server(on_client, path=str(path), limit=MAX_LINE)
    os.chmod(path, 0o600)
    return server


def remove_stale(path: Path) -> None:
    """Remove a socket file nobody listens on; RuntimeError if a server answers there."""
    if path.exists() or path.is_symlink():
        if _alive(path):
            raise RuntimeError(f"another vpnclient is already running ({path})")
        path.unlink()


def _alive(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        try:
            s.connect(str(path))
            return True
        except OSError:
            return False


# -- clients -------------------------------------------------------------------------------
def request(command: str, rdir: Path | None = None, timeout: float = 5.0, **args: Any) -> dict:
    """Send one request to the running engine; raises OSError when none is listening."""
    rdir = rdir or runtime_dir()
    if rdir is None:
        raise FileNotFoundError("no runtime directory: set XDG_RUNTIME_DIR or "
                                "VPNCLIENT_RUNTIME_DIR")
    with ControlClient.open(socket_path(rdir), timeout) as client:
        return client.call(command, **args)


class ControlClient:
    """A blocking client connection (the CLI's side; the tray app uses Qt's socket).

    `call` sends a request and returns its response; events that arrive meanwhile go to
    `on_event`. Raises OSError if the server goes away, ProtocolError on garbage.
    """

    def __init__(self, sock: socket.socket,
                 on_event: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.sock = sock
        self.on_event = on_event
        self._lines: collections.deque[bytes] = collections.deque()  # complete, not yielded
        self._buffer = bytearray()  # the line still arriving
        self._scanned = 0  # how much of _buffer is known to hold no newline
        self._ids = itertools.count(1)

    @classmethod
    def open(cls, path: Path, timeout: float | None = 5.0,
             on_event: Callable[[dict[str, Any]], None] | None = None) -> ControlClient:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(timeout)
            sock.connect(str(path))
        except OSError:
            sock.close()
            raise
        return cls(sock, on_event)

    def send(self, command: str, **args: Any) -> int:
        request_id = next(self._ids)
        try:
            self.sock.sendall(encode({"id": request_id, "command": command, **args}))
        except BrokenPipeError:
            pass  # a server that refused us has already written why: read it
        return request_id

    def call(self, command: str, **args: Any) -> dict[str, Any]:
        request_id = self.send(command, **args)
        for message in self.messages():
            if "event" in message:
                if self.on_event is not None:
                    self.on_event(message)
                continue
            # A refusal is written before the request is read, so it has no id.
            if message.get("id", request_id) == request_id:
                return message
        raise ConnectionResetError("the control socket closed before answering")

    def messages(self) -> Iterator[dict[str, Any]]:
        """Every message the server sends until it closes the connection.

        Linear in what arrives: each byte is searched for a newline once, and the
        complete lines are split off together (re-splitting the rest of the buffer per
        line was quadratic: 2 MiB of empty lines took 2 s). What is not yet yielded stays
        for the next call (call() stops reading at its response)."""
        while True:
            while self._lines:
                line = self._lines.popleft()
                if line.strip():
                    yield decode(line)
            end = self._buffer.rfind(b"\n", self._scanned)
            if end >= 0:
                self._lines.extend(bytes(self._buffer[:end]).split(b"\n"))
                del self._buffer[:end + 1]  # from the front of a bytearray: no copy
                self._scanned = 0
                continue
            self._scanned = len(self._buffer)
            if len(self._buffer) > MAX_LINE:
                raise ProtocolError("message too long")
            chunk = self.sock.recv(65536)
            if not chunk:
                return
            self._buffer += chunk

    def settimeout(self, timeout: float | None) -> None:
        self.sock.settimeout(timeout)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
