"""Throw-away system users and a group for tests that need a real non-root peer.

The interpreter lives under /root (pyenv), which other users cannot traverse, so a
client "run as a user" is this process forked and switched to that user's uid, gid and
groups: what the kernel records for SO_PEERCRED is exactly that of a user's process.
Everything the child needs must be imported before the fork.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import pwd
import secrets
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class User:
    name: str
    uid: int
    gid: int


@dataclass(frozen=True)
class TestUsers:
    group: str
    member: User
    outsider: User
    other: User  # a second member: one member's connection is not the other's


def _run(argv: list[str]) -> None:
    for _ in range(20):  # retried while another useradd/userdel holds the passwd lock
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        if proc.returncode == 0:
            return
        time.sleep(0.5)
    raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr.strip()}")


def _user(name: str) -> User:
    pw = pwd.getpwnam(name)
    return User(name, pw.pw_uid, pw.pw_gid)


@contextlib.contextmanager
def test_users() -> Iterator[TestUsers]:
    """A group, two members of it and a user outside it; all removed afterwards."""
    tag = secrets.token_hex(3)
    group, member, outsider = f"vpnct{tag}", f"vpnct{tag}m", f"vpnct{tag}o"
    other = f"vpnct{tag}b"
    made: list[list[str]] = []
    try:
        _run(["groupadd", "--system", group])
        made.append(["groupdel", group])
        for name, extra in ((member, ["-G", group]), (outsider, []), (other, ["-G", group])):
            _run(["useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent",
                  "--shell", "/usr/sbin/nologin", "--user-group", *extra, name])
            made.insert(0, ["userdel", name])
        yield TestUsers(group, _user(member), _user(outsider), _user(other))
    finally:
        # --user-group made a group per user; userdel removes it with the user. Retried:
        # another useradd/userdel on the machine holds the passwd lock for a moment.
        for argv in made:
            for _ in range(20):
                if subprocess.run(argv, capture_output=True, timeout=30).returncode in (0, 6):
                    break  # 6: no such user/group (already gone)
                time.sleep(0.5)


class ChildFailed(AssertionError):
    pass


class AsUser:
    """`fn(*args)` in a forked child running as `user`; its JSON result via a pipe.

    start() returns at once; result() waits. stdout of the child is captured and
    returned next to the result, stdin is `stdin` text.
    """

    def __init__(self, user: User, fn: Callable[..., Any], *args: Any,
                 stdin: str = "") -> None:
        self.user = user
        self.fn = fn
        self.args = args
        self.stdin = stdin
        self.pid = 0
        self._read = -1

    def start(self) -> AsUser:
        read, write = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the child: never returns into pytest
            os.close(read)
            code = 0
            try:
                os.setgroups(os.getgrouplist(self.user.name, self.user.gid))
                os.setgid(self.user.gid)
                os.setuid(self.user.uid)
                out = io.StringIO()
                sys.stdin = io.StringIO(self.stdin)
                with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
                    value = self.fn(*self.args)
                payload = {"value": value, "output": out.getvalue()}
            except BaseException:
                payload = {"error": traceback.format_exc()}
                code = 1
            try:
                data = json.dumps(payload, default=str).encode()
                with os.fdopen(write, "wb") as f:
                    f.write(data)
            finally:
                os._exit(code)
        os.close(write)
        self.pid, self._read = pid, read
        return self

    def result(self, timeout: float = 60.0) -> tuple[Any, str]:
        import select

        chunks = []
        deadline = time.monotonic() + timeout
        with os.fdopen(self._read, "rb") as f:
            while True:
                left = max(0.0, deadline - time.monotonic())
                ready, _, _ = select.select([f], [], [], left)
                if not ready:
                    os.kill(self.pid, 9)
                    os.waitpid(self.pid, 0)
                    raise ChildFailed(f"the client as {self.user.name} did not finish "
                                      f"in {timeout} s")
                chunk = f.read1(65536)
                if not chunk:
                    break
                chunks.append(chunk)
        os.waitpid(self.pid, 0)
        payload = json.loads(b"".join(chunks) or b"{}")
        if "error" in payload:
            raise ChildFailed(f"the client as {self.user.name} failed:\n{payload['error']}")
        return payload.get("value"), payload.get("output", "")


def as_user(user: User, fn: Callable[..., Any], *args: Any, stdin: str = "",
            timeout: float = 60.0) -> tuple[Any, str]:
    return AsUser(user, fn, *args, stdin=stdin).start().result(timeout)
