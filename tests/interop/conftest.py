"""Interop fixtures: one lab (namespaces + strongSwan gateway) for the whole session."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.lab.netns import kill_all
from tests.lab.topology import Lab, lab_unavailable
from tests.lab.vpnclient import VpnClient


@pytest.fixture(scope="session")
def lab() -> Iterator[Lab]:
    reason = lab_unavailable()
    if reason:
        pytest.skip(reason)
    with Lab() as the_lab:
        yield the_lab


@pytest.fixture
def clean_lab(lab: Lab) -> Iterator[Lab]:
    """The lab, put back into its initial state after the test whatever happened."""
    yield lab
    kill_all(lab.client_ns.name)
    assert lab.gateway is not None
    lab.gateway.terminate_all()
    lab.reset_client()


@pytest.fixture
def new_client(
    clean_lab: Lab, request: pytest.FixtureRequest
) -> Iterator[Callable[..., VpnClient]]:
    """Factory for VpnClient instances with their own dirs under the lab directory."""
    made: list[VpnClient] = []
    test_id = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)

    def factory(extra_env: dict[str, str] | None = None) -> VpnClient:
        workdir = Path(clean_lab.dir, "clients", f"{test_id}-{len(made)}")
        client = VpnClient(clean_lab.client_ns, workdir, extra_env)
        made.append(client)
        return client

    yield factory
    for client in made:
        client.kill()


@pytest.fixture
def run_client(new_client: Callable[..., VpnClient]) -> Callable[..., VpnClient]:
    """run_client(profile_path, password) -> a connected VpnClient (fails with its log)."""

    def start(profile: Path, password: str | None, timeout: float = 20.0,
              extra_env: dict[str, str] | None = None) -> VpnClient:
        client = new_client(extra_env)
        client.connect(profile, password, timeout=timeout)
        return client

    return start
