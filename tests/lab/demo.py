"""The README's first command: `python3 -m tests.lab.demo` (as root).

Builds the lab (namespaces, test PKI, strongSwan gateway), connects with vpnclient
using an EAP-MSCHAPv2 profile (password on stdin), shows `vpnclient status`, pings the
protected LAN through the tunnel, disconnects, shows that the gateway saw the Delete and
that nothing was left behind, and tears the lab down. Exits non-zero on any failure.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tests.lab.checks import disconnect_cleanly
from tests.lab.gateway import LAN_HOST, SCENARIOS
from tests.lab.topology import Lab, lab_unavailable
from tests.lab.vpnclient import ClientError, VpnClient

PROFILES_DIR = Path(__file__).resolve().parents[2] / "profiles"


def step(text: str) -> None:
    print(f"\n==> {text}", flush=True)


SAMPLES = {
    "eap-mschapv2": "lab-eap.vpnprofile",
    "eap-md5": "lab-md5.vpnprofile",
    "psk": "lab-psk.vpnprofile",
}


def sample_profile(lab: Lab, scenario: str) -> Path:
    """The profile from profiles/, trusting this lab run's freshly made CA."""
    sample = SAMPLES.get(scenario)
    if sample is None:  # certificate scenarios need this run's PKCS#12
        return lab.profile(scenario)
    data = json.loads((PROFILES_DIR / sample).read_text())
    data.setdefault("remote", {})["cert"] = lab.pki.ca.cert_b64
    path = lab.dir / sample
    path.write_text(json.dumps(data, indent=2))
    return path


def demo(scenario: str) -> int:
    conn = "cert" if scenario.startswith("cert-") else scenario
    with Lab() as lab:
        assert lab.gateway is not None
        step(f"lab up: client namespace {lab.client_ns.name}, gateway namespace "
             f"{lab.gw_ns.name}, gateway {SCENARIOS[conn].addr}, LAN {LAN_HOST}")
        profile = sample_profile(lab, scenario)
        print(f"profile: {profile}")
        client = VpnClient(lab.client_ns, lab.dir / "demo-client")
        offset = lab.gateway.log_size()
        try:
            step("vpnclient connect (secret on stdin)")
            client.connect(profile, lab.secret(scenario), timeout=30)
            step("vpnclient status")
            print(client.run("status").stdout, end="")
            step(f"ping {LAN_HOST} through the tunnel")
            ping = lab.ping(count=3)
            print(ping.output, end="")
            if not ping.ok:
                raise ClientError("no ping reply through the tunnel")
            step("vpnclient disconnect")
            problems = disconnect_cleanly(lab, client, conn, log_offset=offset)
            delete_lines = [line for line in lab.gateway.log_since(offset).splitlines()
                            if "DELETE for IKE_SA" in line]
            step("gateway log")
            print("\n".join(delete_lines) or "(no Delete logged)")
            step("gateway SAs")
            print(lab.gateway.list_sas() or "(none)")
            step("left behind in the client namespace")
            print("\n".join(problems) or "nothing")
            if problems:
                return 1
        except ClientError as exc:
            print(f"FAILED: {exc}", file=sys.stderr)
            return 1
        finally:
            client.kill()
    step("lab torn down; demo OK")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m tests.lab.demo")
    parser.add_argument("--scenario", default="eap-mschapv2",
                        choices=["eap-mschapv2", "eap-md5", "cert-rsa", "cert-ecdsa", "psk"])
    args = parser.parse_args(argv)
    reason = lab_unavailable()
    if reason:
        print(f"cannot run the demo: {reason}", file=sys.stderr)
        return 2
    return demo(args.scenario)


if __name__ == "__main__":
    sys.exit(main())
