"""The control protocol and the daemon's checks, in-process over a real UNIX socket
(no lab, no root): what a client gets for every kind of bad request."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest

from client import control
from client.daemon import Daemon, authorize, parse_secrets


def test_messages_round_trip_and_are_strict() -> None:
    line = control.encode({"command": "status", "id": 3})
    assert line.endswith(b"\n") and b"\n" not in line[:-1]
    assert control.decode(line) == {"command": "status", "id": 3, "version": 1}
    for bad in (b"[1, 2]", b"{not json", b'{"version": 2, "command": "status"}',
                b"\xff\xfe"):
        with pytest.raises(control.ProtocolError):
            control.decode(bad)


def test_error_codes_are_the_cli_exit_codes() -> None:
    assert control.error("auth", "x")["code"] == 3
    assert control.error("untrusted", "x")["code"] == 4
    assert control.error("unreachable", "x")["code"] == 5
    assert control.error("profile", "x")["code"] == 2
    assert control.error("not-authorized", "x")["code"] == 1


def test_authorize() -> None:
    assert authorize(0, 0, "no-such-group-xyz") is None  # root, always
    refusal = authorize(65534, 65534, "no-such-group-xyz")
    assert refusal is not None and "does not exist" in refusal and "groupadd" in refusal
    # A user whose primary group is the group is a member.
    import grp

    name = grp.getgrgid(os.getgid()).gr_name
    assert authorize(12345, os.getgid(), name) is None


def test_secrets_are_bounded() -> None:
    assert parse_secrets({"password": "pw"}).password == "pw"
    assert repr(parse_secrets({"password": "pw"})).count("pw") == 0  # never in a repr
    for bad in ([], {"password": 1}, {"password": "x" * 5000}, {"pin": "1"}):
        with pytest.raises(ValueError):
            parse_secrets(bad)


def test_requests_over_a_real_socket(tmp_path: Path) -> None:
    """Bad requests get bad-request, a bad profile gets code 2, and the daemon goes on."""
    replies: list[dict] = []

    async def scenario() -> None:
        daemon = Daemon(tmp_path / "run", group="no-such-group-xyz")
        await daemon.start()
        try:
            reader, writer = await asyncio.open_unix_connection(str(daemon.socket_path))

            async def ask(raw: bytes) -> dict:
                writer.write(raw)
                await writer.drain()
                return json.loads(await asyncio.wait_for(reader.readline(), 5))

            replies.append(await ask(b'{"version":1,"id":1,"command":"status"}\n'))
            replies.append(await ask(b'{"version":1,"id":2,"command":"reboot"}\n'))
            replies.append(await ask(b"garbage\n"))
            replies.append(await ask(b'{"version":1,"id":4,"command":"connect",'
                                     b'"profile":{"type":"ikev2-eap"}}\n'))
            replies.append(await ask(b'{"version":1,"id":5,"command":"connect",'
                                     b'"profile":"not an object"}\n'))
            replies.append(await ask(b'{"version":1,"id":6,"command":"disconnect"}\n'))
            writer.close()
            assert daemon.session is None
        finally:
            await daemon.shutdown()
        assert not daemon.socket_path.exists()

    asyncio.run(scenario())
    status, unknown, garbage, bad_profile, not_object, disconnect = replies
    assert status["ok"] and status["server"] == "daemon" and status["id"] == 1
    assert status["status"]["state"] == "disconnected"
    assert unknown["reason"] == "bad-request" and unknown["id"] == 2
    assert garbage["reason"] == "bad-request" and garbage["code"] == 2
    assert bad_profile["reason"] == "profile" and bad_profile["code"] == 2
    assert "uuid" in bad_profile["error"] or "name" in bad_profile["error"]
    assert not_object["reason"] == "bad-request"
    assert disconnect["reason"] == "not-connected" and disconnect["code"] == 1
