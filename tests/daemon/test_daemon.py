"""The daemon with real sockets, real users and the strongSwan lab gateway.

The daemon runs as root inside the lab's client namespace; clients are this process
forked and switched to a throw-away user (tests/daemon/users.py), so the daemon's
SO_PEERCRED check sees exactly what it would see from a desktop user's process.
"""

from __future__ import annotations

import argparse
import encodings.utf_8_sig  # noqa: F401 - the profile parser needs it in the children
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

import pytest

# Imported before any fork: the children cannot read the interpreter's directories.
from client import (
    control,
    daemon_client,
    profile_commands,  # noqa: F401 - used by cli_connect in the children
)
from client.control import ControlClient
from tests.lab.checks import wait_gateway_delete
from tests.lab.profiles import make_profile

from .users import AsUser, as_user

pytestmark = pytest.mark.interop

CONN = "eap-mschapv2"


# -- what the children run (as a user) ------------------------------------------------
def call_once(sock: str, command: str, args: dict[str, Any]) -> dict:
    with ControlClient.open(Path(sock), 30) as client:
        return client.call(command, **args)


def connect_watch_disconnect(sock: str, profile: dict, password: str) -> dict:
    """Subscribe, connect, watch until the statistics show traffic, disconnect."""
    events: list[dict] = []
    with ControlClient.open(Path(sock), 60, on_event=events.append) as client:
        subscribed = client.call("subscribe")
        connected = client.call("connect", profile=profile, secrets={"password": password})
        if connected.get("ok"):
            deadline = time.monotonic() + 45
            for message in client.messages():
                events.append(message)
                stats = [e for e in events if e.get("event") == "stats"]
                if len(stats) >= 2 and stats[-1]["packets_in"] >= 3:
                    break
                if time.monotonic() > deadline:
                    break
        disconnected = client.call("disconnect", wait=True)
    return {"subscribe": subscribed, "connect": connected, "disconnect": disconnected,
            "events": events}


def cli(command: str, argv: dict[str, Any], rdir: str) -> int:
    os.environ["VPNCLIENT_RUNTIME_DIR"] = rdir
    entry = getattr(daemon_client, f"cli_{command}")
    return entry(argparse.Namespace(**argv))


# -- helpers ---------------------------------------------------------------------------
def lab_profile(lab, scenario: str = CONN) -> dict:
    return make_profile(lab.pki, scenario)


def states(events: list[dict]) -> list[str]:
    return [e["state"] for e in events if e.get("event") == "state"]


def assert_clean(lab, daemon, log_offset: int) -> None:
    problem = wait_gateway_delete(lab, CONN, log_offset)
    assert problem is None, problem
    assert lab.leftovers() == [], daemon.log()
    assert sorted(p.name for p in daemon.rdir.iterdir()) == ["control.sock"], daemon.log()


# -- who may talk to the daemon ---------------------------------------------------------
def test_outsider_is_refused(clean_lab, daemon, users) -> None:
    sock = str(daemon.socket)
    for command, args in (("status", {}), ("subscribe", {}), ("disconnect", {}),
                          ("connect", {"profile": lab_profile(clean_lab),
                                       "secrets": {"password": clean_lab.secret(CONN)}})):
        reply, _ = as_user(users.outsider, call_once, sock, command, args)
        assert reply["ok"] is False, (command, reply)
        assert reply["reason"] == "not-authorized", reply
        assert users.group in reply["error"] and users.outsider.name in reply["error"]
        assert "usermod" in reply["error"], reply  # the fix is in the message
    # Nothing happened: no connection was attempted, the daemon still serves members.
    assert clean_lab.gateway.sas_for(CONN) == []
    reply, _ = as_user(users.member, call_once, sock, "status", {})
    assert reply["ok"] is True and reply["status"]["state"] == "disconnected", reply
    # The CLI run as the outsider says so and fails.
    code, output = as_user(users.outsider, cli, "status", {"json": True}, str(daemon.rdir))
    assert code == 1 and "not a member of the group" in output, output


def test_member_connects_through_the_daemon_and_sees_events(clean_lab, daemon, users) -> None:
    lab = clean_lab
    log_offset = lab.gateway.log_size()
    child = AsUser(users.member, connect_watch_disconnect, str(daemon.socket),
                   lab_profile(lab), lab.secret(CONN)).start()
    status = daemon.wait_state("connected", timeout=30)
    assert lab.gateway.sas_for(CONN), lab.gateway.list_sas()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and daemon.status()["state"] == "connected":
        assert lab.ping(count=2).ok, daemon.log()
    result, _ = child.result(timeout=90)

    assert result["subscribe"]["ok"], result["subscribe"]
    assert result["connect"]["ok"], f"{result['connect']}\n{daemon.log()}"
    connected = result["connect"]["status"]
    assert connected["state"] == "connected" and connected["virtual_ips"], connected
    assert connected["profile"] == status["profile"] == "lab eap-mschapv2"
    assert result["disconnect"]["ok"], result["disconnect"]

    events = result["events"]
    seen = states(events)
    assert seen[:2] == ["connecting", "connected"], seen
    assert seen[-1] == "disconnected", seen
    logs = [e["message"] for e in events if e.get("event") == "log"]
    assert any(m.startswith("connected: ") for m in logs), logs
    assert any("IKE_AUTH request" in m for m in logs), logs  # the protocol log reaches us
    assert not any(lab.secret(CONN) in json.dumps(e) for e in events)
    stats = [e for e in events if e.get("event") == "stats"]
    assert len(stats) >= 2, events
    assert stats[-1]["packets_in"] >= 3 and stats[-1]["bytes_in"] > stats[0]["bytes_in"], stats
    assert stats[-1]["uptime"] > stats[0]["uptime"]

    assert daemon.status()["state"] == "disconnected"
    assert_clean(lab, daemon, log_offset)


def test_wrong_password_is_code_3(clean_lab, daemon, users) -> None:
    reply, _ = as_user(users.member, call_once, str(daemon.socket), "connect",
                       {"profile": lab_profile(clean_lab), "secrets": {"password": "wrong"}})
    assert reply["ok"] is False and reply["code"] == 3 and reply["reason"] == "auth", reply
    status = daemon.status()
    assert status["state"] == "failed" and status["last_error"], status
    assert clean_lab.leftovers() == []


def test_cli_as_a_user_goes_through_the_daemon(clean_lab, daemon, users, tmp_path) -> None:
    lab = clean_lab
    profile_dir = Path(lab.dir, "user-profiles", daemon.dir.name)
    profile_dir.mkdir(parents=True)
    path = profile_dir / "work.vpnprofile"
    path.write_text(json.dumps(lab_profile(lab)))
    os.chown(profile_dir, users.member.uid, users.member.gid)
    os.chown(path, users.member.uid, users.member.gid)
    env_args = {"profile": str(path), "password_stdin": True, "verbose": 0}

    code, output = as_user(users.member, cli, "connect", env_args, str(daemon.rdir),
                           stdin=lab.secret(CONN) + "\n", timeout=60)
    assert code == 0, output + daemon.log()
    assert "connected: " in output, output
    assert lab.ping(count=2).ok

    code, output = as_user(users.member, cli, "status", {"json": True}, str(daemon.rdir))
    assert code == 0 and json.loads(output)["state"] == "connected", output
    code, output = as_user(users.member, cli, "disconnect", {}, str(daemon.rdir))
    assert code == 0, output
    assert daemon.status()["state"] == "disconnected"

    code, output = as_user(users.member, cli, "connect", env_args, str(daemon.rdir),
                           stdin="wrong\n")
    assert code == 3, output
    assert lab.leftovers() == []


def test_a_profile_the_daemon_rejects_names_the_key(clean_lab, daemon, users) -> None:
    """The CLI leaves the X.509 parse to the daemon: a remote.cert that is base64 but no
    certificate still fails with exit code 2 and the key named, and changes nothing."""
    lab = clean_lab
    profile_dir = Path(lab.dir, "user-profiles", daemon.dir.name + "-bad-cert")
    profile_dir.mkdir(parents=True)
    path = profile_dir / "bad.vpnprofile"
    profile = lab_profile(lab)
    profile["remote"]["cert"] = "MAMCAQE="  # DER of SEQUENCE { INTEGER 1 }
    path.write_text(json.dumps(profile))
    os.chown(profile_dir, users.member.uid, users.member.gid)
    os.chown(path, users.member.uid, users.member.gid)
    code, output = as_user(users.member, cli, "connect",
                           {"profile": str(path), "password_stdin": True, "verbose": 0},
                           str(daemon.rdir), stdin=lab.secret(CONN) + "\n", timeout=60)
    assert code == control.CODE_USAGE, output + daemon.log()
    assert "remote.cert: not an X.509 certificate" in output, output
    assert daemon.status()["state"] == "disconnected"
    assert lab.leftovers() == [], daemon.log()


# -- robustness ------------------------------------------------------------------------
def test_a_client_that_drops_mid_request_leaves_the_daemon_healthy(
        clean_lab, daemon, users) -> None:
    lab = clean_lab
    log_offset = lab.gateway.log_size()
    sock = str(daemon.socket)
    # Half a request, then gone.
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(sock)
        s.sendall(b'{"version": 1, "command": "sta')
    # Garbage, an over-long line, a wrong version.
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(sock)
        s.sendall(b"\xff\xfe not json\n")
        assert json.loads(s.makefile("rb").readline())["reason"] == "bad-request"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(sock)
        try:
            s.sendall(b"x" * (control.MAX_LINE + 10))
        except OSError:
            pass  # the daemon hung up on us: that is the point
    assert daemon.call("connect", profile={"version": 2}, version=2)["reason"] == "bad-request"
    # A connect request whose client is gone before the answer: the connection is made.
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(sock)
        request = {"version": 1, "id": 1, "command": "connect", "profile": lab_profile(lab),
                   "secrets": {"password": lab.secret(CONN)}}
        s.sendall(json.dumps(request).encode() + b"\n")
    daemon.wait_state("connected", timeout=30)
    assert lab.ping(count=2).ok
    # A member whose subscription it never reads does not block anybody.
    stalled = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stalled.connect(sock)
    stalled.sendall(b'{"version": 1, "command": "subscribe"}\n')
    reply, _ = as_user(users.member, call_once, sock, "disconnect", {"wait": True})
    stalled.close()
    assert reply["ok"], reply
    assert daemon.status()["state"] == "disconnected"
    assert_clean(lab, daemon, log_offset)
    assert daemon.proc.poll() is None, daemon.log()


def test_sigterm_ends_the_connection_cleanly(clean_lab, daemon) -> None:
    lab = clean_lab
    log_offset = lab.gateway.log_size()
    reply = daemon.call("connect", profile=lab_profile(lab),
                        secrets={"password": lab.secret(CONN)})
    assert reply["ok"], f"{reply}\n{daemon.log()}"
    assert daemon.stop() == 0, daemon.log()
    problem = wait_gateway_delete(lab, CONN, log_offset)
    assert problem is None, problem
    assert lab.leftovers() == []
    assert list(daemon.rdir.iterdir()) == [], "the daemon left files in its runtime dir"


def test_busy_and_not_connected(clean_lab, daemon) -> None:
    lab = clean_lab
    assert daemon.call("disconnect")["reason"] == "not-connected"
    profile = lab_profile(lab)
    assert daemon.call("connect", profile=profile,
                       secrets={"password": lab.secret(CONN)})["ok"]
    busy = daemon.call("connect", profile=profile, secrets={"password": lab.secret(CONN)})
    assert busy["ok"] is False and busy["reason"] == "busy", busy
    assert "disconnect first" in busy["error"]
    assert daemon.call("disconnect", wait=True)["ok"]
