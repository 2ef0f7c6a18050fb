"""The crypto policy against strongSwan: weak gateway certificates and a SHA-1 AUTH
signature are refused (exit code 4, naming the rule), accepted once the profile relaxes
that rule; EAP-MD5 works only for a profile that names it.

Extra connections are loaded into the lab's gateway for this module only, on addresses
of their own (192.0.2.30-33), and removed afterwards.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.interop.test_failures import EXIT_UNTRUSTED, assert_failed_cleanly
from tests.lab.gateway import EAP_PASSWORD, SCENARIOS, _connection
from tests.lab.pki import GATEWAY_ID
from tests.lab.topology import GW_IF

pytestmark = pytest.mark.interop

# name: (address, TestPKI._issue options for the gateway's certificate, the rule it breaks)
WEAK = {
    "weak-rsa": ("192.0.2.30", {"keytype": "rsa", "size": 1024}, "min-rsa-bits"),
    "leaf-ca": ("192.0.2.31", {"keytype": "rsa", "size": 2048, "ca": True}, "leaf-ca"),
    "sha1-auth": ("192.0.2.32", {"keytype": "rsa", "size": 2048}, "sha1-signatures"),
}


@pytest.fixture(scope="module")
def policy_lab(lab) -> Iterator:
    gw, pki = lab.gateway, lab.pki
    conns = []
    for name, (addr, opts, _rule) in WEAK.items():
        cred = pki._issue(
            f"policy-{name}", pki.ca, opts["keytype"], opts["size"],
            f"C=CH, O=vpnclient lab, CN={GATEWAY_ID} {name}", [GATEWAY_ID, addr],
            ["serverAuth"], ca=opts.get("ca", False),
        )
        gw.install_file("x509", f"policy_{name}.crt.pem", cred.cert_pem)
        gw.install_file("private", f"policy_{name}.key.pem", cred.key_pem, 0o600)
        lab.gw_ns.add_addr(GW_IF, f"{addr}/24")
        base = SCENARIOS["eap-mschapv2"]
        conn = _connection(base).replace(f"{base.conn_name} {{", f"policy-{name} {{", 1)
        conn = conn.replace(f"local_addrs = {base.addr}", f"local_addrs = {addr}")
        conns.append(conn.replace("gateway.crt.pem", f"policy_{name}.crt.pem"))
    conf = gw.swanctl_dir / "conf.d" / "policy.conf"
    conf.write_text("connections {\n" + "".join(conns) + "}\n")
    gw.load_all()
    try:
        yield lab
    finally:
        conf.unlink()
        gw.load_all()
        for addr, _opts, _rule in WEAK.values():
            lab.gw_ns.ip("addr", "del", f"{addr}/24", "dev", GW_IF, check=False)


def _profile(lab, name: str, relax: list[str] | None = None):
    path = lab.profile("eap-mschapv2")
    data = json.loads(path.read_text())
    data["remote"]["addr"] = WEAK[name][0]
    if relax:
        data["remote"]["crypto-policy"] = {"relax": relax}
    path.write_text(json.dumps(data))
    return path


@pytest.fixture
def sha1_gateway(policy_lab) -> Iterator:
    """strongSwan without RFC 7427 signs its AUTH with RSA auth method 1 (SHA-1)."""
    policy_lab.gateway._reload_settings("    signature_authentication = no")
    try:
        yield policy_lab
    finally:
        policy_lab.gateway._reload_settings("")


@pytest.mark.parametrize("name", ["weak-rsa", "leaf-ca"])
def test_weak_cert(policy_lab, new_client, run_client,
                   name: str) -> None:
    lab, rule = policy_lab, WEAK[name][2]
    client = new_client()
    client.start_connect(_profile(lab, name), EAP_PASSWORD)
    assert_failed_cleanly(lab, client, EXIT_UNTRUSTED)
    log = client.log_text()
    assert f"breaks rule '{rule}'" in log and f"{GATEWAY_ID} {name}" in log, log
    if name == "leaf-ca":
        # `pki --ca` writes keyUsage keyCertSign/cRLSign only: with both rules relaxed,
        # RFC 4945's check (digitalSignature or nonRepudiation) still refuses that key.
        again = new_client()
        again.start_connect(_profile(lab, name, [rule, "leaf-key-usage"]), EAP_PASSWORD)
        assert_failed_cleanly(lab, again, EXIT_UNTRUSTED)
        assert "(rule 'leaf-ca' relaxed)" in again.log_text()
        assert "keyUsage does not allow signatures" in again.log_text()
        return
    ok = run_client(_profile(lab, name, [rule]), EAP_PASSWORD)
    assert lab.ping(count=2).ok, ok.log_tail()
    assert f"(rule '{rule}' relaxed)" in ok.log_text()
    assert "relaxed for this gateway by remote.crypto-policy.relax" in ok.log_text()


def test_sha1_auth(sha1_gateway, new_client, run_client) -> None:
    lab = sha1_gateway
    client = new_client()
    client.start_connect(_profile(lab, "sha1-auth"), EAP_PASSWORD)
    assert_failed_cleanly(lab, client, EXIT_UNTRUSTED)
    assert "RFC 7296 auth method 1" in client.log_text()
    assert "breaks rule 'sha1-signatures'" in client.log_text()
    ok = run_client(_profile(lab, "sha1-auth", ["sha1-signatures"]), EAP_PASSWORD)
    assert lab.ping(count=2).ok, ok.log_tail()
    assert "(rule 'sha1-signatures' relaxed)" in ok.log_text()


def test_rfc7427_ok(clean_lab, run_client) -> None:
    """strongSwan's default (auth method 14, SHA-2) passes the strict policy."""
    client = run_client(clean_lab.profile("eap-mschapv2"), EAP_PASSWORD)
    assert clean_lab.ping(count=2).ok, client.log_tail()


def test_md5_opt_in(clean_lab, new_client, run_client) -> None:
    lab = clean_lab
    path = lab.profile("eap-md5")  # names md5 in local.eap-methods
    client = run_client(path, EAP_PASSWORD)
    assert lab.ping(count=2).ok, client.log_tail()
    client.kill()
    lab.gateway.terminate_all()
    data = json.loads(path.read_text())
    del data["local"]["eap-methods"]
    path.write_text(json.dumps(data))
    refused = new_client()
    refused.start_connect(path, EAP_PASSWORD)
    assert_failed_cleanly(lab, refused, EXIT_UNTRUSTED)
    assert "insists on EAP-MD5" in refused.log_text()
