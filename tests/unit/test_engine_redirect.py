"""The engine follows redirects (RFC 5685) from gateway to gateway, up to its loop limit."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from client.engine import Engine, Secrets
from client.ikev2.errors import IkeError
from client.ikev2.events import IkeSaClosed
from client.ikev2.tasks.ike_redirect import MAX_REDIRECTS
from client.profile import parse_profile

PROFILE = {
    "uuid": "5f2d4d0e-8f5b-4b8e-9d7e-2d6c0c3b1a11", "name": "Test", "type": "ikev2-eap",
    "remote": {"addr": "192.0.2.1"}, "local": {"eap_id": "alice"},
}


def run_chain(tmp_path: Path, redirects: int) -> tuple[IkeSaClosed, list[tuple[str, str | None]]]:
    """Gateway n sends the client on to gateway n+1, `redirects` times; returns how the
    chain ended and every (gateway, redirected_from) the engine connected to."""
    engine = Engine(parse_profile(json.dumps(PROFILE)), Secrets(), tmp_path,
                    progress=lambda _: None)
    attempts: list[tuple[str, str | None]] = []

    async def attempt(host: str, redirected_from: str | None = None) -> IkeSaClosed:
        attempts.append((host, redirected_from))
        engine.gateway = (host, 500)
        if len(attempts) <= redirects:
            engine.redirect_to = f"192.0.2.{len(attempts) + 1}"
            return IkeSaClosed(f"redirected to {engine.redirect_to}")
        return IkeSaClosed("disconnected on request")

    async def main() -> IkeSaClosed:
        engine.loop = asyncio.get_running_loop()
        engine._attempt = attempt  # type: ignore[method-assign]
        engine._close_sockets = lambda: None  # type: ignore[method-assign]
        return await engine._attempt_following_redirects("192.0.2.1")

    return asyncio.run(main()), attempts


def test_redirects_are_followed_naming_the_previous_gateway(tmp_path: Path) -> None:
    closed, attempts = run_chain(tmp_path, redirects=2)
    assert attempts == [("192.0.2.1", None), ("192.0.2.2", "192.0.2.1"),
                        ("192.0.2.3", "192.0.2.2")]
    assert closed.error is None


def test_a_redirect_loop_ends_at_the_limit(tmp_path: Path) -> None:
    closed, attempts = run_chain(tmp_path, redirects=100)
    assert len(attempts) == 1 + MAX_REDIRECTS
    assert isinstance(closed.error, IkeError) and "redirected more than 5 times" in closed.reason
