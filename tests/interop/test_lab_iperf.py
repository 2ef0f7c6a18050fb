"""The lab's iperf3 helpers, which the rekey-under-load test and the benchmarks rely on:
a client started the moment the server helper returns is never refused, and a refused
client is an error even though iperf3 3.12 exits 0 with `-J`."""

from __future__ import annotations

import pytest

from tests.lab.gateway import LAN_HOST
from tests.lab.iperf import IperfError, iperf3_server, parse_result

pytestmark = pytest.mark.interop

PORT = 5299


def _client(lab, seconds: int = 1):
    return lab.gw_ns.run(["iperf3", "-c", LAN_HOST, "-p", str(PORT), "-t", str(seconds),
                          "-J"], check=False, timeout=30)


def test_client_started_at_once_connects(lab) -> None:
    for _ in range(3):  # the race this guards against lost one start in several
        with iperf3_server(lab.gw_ns, LAN_HOST, PORT, once=True):
            result = parse_result(_client(lab).stdout)
        assert result["end"]["sum_received"]["bytes"] > 0


def test_refused_client_is_an_error(lab) -> None:
    proc = _client(lab)  # no server
    with pytest.raises(IperfError, match="unable to connect"):
        parse_result(proc.stdout)
