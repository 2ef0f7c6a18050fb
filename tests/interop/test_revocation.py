"""Revocation of the gateway's certificate (remote.revocation) against strongSwan.

The lab CA issues gateway certificates carrying a CRL distribution point and an OCSP
responder (AIA) on the gateway namespace's outer address; a tiny http.server serves the
CRL (`pki --signcrl`) and `openssl ocsp` answers OCSP there. The eap-mschapv2
scenario's certificate is swapped for the test and put back after it.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from tests.lab.pki import GATEWAY_ID, GATEWAY_IPS, Credential
from tests.lab.profiles import make_profile, secret_for, write_profile

pytestmark = pytest.mark.interop

EXIT_UNTRUSTED = 4
SCENARIO = "eap-mschapv2"
SERVER = GATEWAY_IPS[0]  # the gateway namespace's outer address, reached without a tunnel
CRL_PORT, OCSP_PORT = 8081, 8080
CRL_URL = f"http://{SERVER}:{CRL_PORT}/ca.crl"
OCSP_URL = f"http://{SERVER}:{OCSP_PORT}/"
DEAD_OCSP_URL = f"http://{SERVER}:8089/"  # nothing listens there


def _index_line(cred: Credential, revoked: bool) -> str:
    c = x509.load_der_x509_certificate(cred.cert_der)
    expiry = c.not_valid_after_utc.strftime("%y%m%d%H%M%SZ")
    subject = "/" + "/".join(a.rfc4514_string() for a in reversed(list(c.subject)))
    return (f"{'R' if revoked else 'V'}\t{expiry}\t{'250101000000Z' if revoked else ''}\t"
            f"{c.serial_number:X}\tunknown\t{subject}\n")


class RevocationLab:
    def __init__(self, lab) -> None:
        self.lab = lab
        pki = lab.pki
        dn = f"C=CH, O=vpnclient lab, CN={GATEWAY_ID}"
        sans = [GATEWAY_ID, *GATEWAY_IPS]
        issue = pki.issue_gateway
        self.good = issue("rev-good", dn, sans, crl_url=CRL_URL, ocsp_url=OCSP_URL)
        self.crl_revoked = issue("rev-crl", dn, sans, crl_url=CRL_URL)
        self.ocsp_revoked = issue("rev-ocsp", dn, sans, ocsp_url=OCSP_URL)
        self.dead = issue("rev-dead", dn, sans, ocsp_url=DEAD_OCSP_URL)
        self.dir = Path(lab.dir, "revocation")
        www = self.dir / "www"
        www.mkdir(parents=True, exist_ok=True)
        (www / "ca.crl").write_bytes(pki.sign_crl([self.crl_revoked]))
        index = self.dir / "index.txt"
        index.write_text(_index_line(self.good, False) + _index_line(self.ocsp_revoked, True))
        ns = lab.gw_ns
        self.procs = [
            ns.popen([sys.executable, "-m", "http.server", "-b", SERVER, "-d", str(www),
                      str(CRL_PORT)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
            ns.popen(["openssl", "ocsp", "-index", str(index), "-port", str(OCSP_PORT),
                      "-rsigner", str(pki.ca.cert_path), "-rkey", str(pki.ca.key_path),
                      "-CA", str(pki.ca.cert_path), "-ndays", "1"],
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
        ]
        self._wait_listening(ns, {CRL_PORT, OCSP_PORT})

    def _wait_listening(self, ns, ports: set[int], timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = ns.run(["ss", "-Hltn"]).stdout
            if all(f":{p} " in out for p in ports):
                return
            if any(p.poll() is not None for p in self.procs):
                break
            time.sleep(0.1)
        self.close()
        raise RuntimeError(f"the CRL/OCSP servers did not start:\n{out}")

    def use(self, cred: Credential) -> None:
        gw = self.lab.gateway
        gw.install_file("x509", "gateway.crt.pem", cred.cert_pem)
        gw.install_file("private", "gateway.key.pem", cred.key_pem, 0o600)
        gw.load_all()

    def close(self) -> None:
        pki = self.lab.pki
        gw = self.lab.gateway
        gw.install_file("x509", "gateway.crt.pem", pki.gateway.cert_pem)
        gw.install_file("private", "gateway.key.pem", pki.gateway.key_pem, 0o600)
        gw.load_all()
        for proc in self.procs:
            proc.terminate()
            proc.wait(timeout=5)


@pytest.fixture
def rev(clean_lab) -> Iterator[RevocationLab]:
    r = RevocationLab(clean_lab)
    try:
        yield r
    finally:
        r.close()


def _profile(lab, name: str, **revocation: bool) -> Path:
    profile = make_profile(lab.pki, SCENARIO)
    if revocation:
        profile["remote"]["revocation"] = revocation
    return write_profile(Path(lab.dir, f"rev-{name}.json"), profile)


def _refused(lab, new_client, rev, cred, name, **settings) -> str:
    rev.use(cred)
    client = new_client()
    client.start_connect(_profile(lab, name, **settings), secret_for(SCENARIO, lab.pki))
    code = client.wait_exit(30)
    log = client.log_text()
    assert code == EXIT_UNTRUSTED, f"exit {code}\n{client.log_tail()}"
    return log


def test_revoked_by_crl_is_refused(clean_lab, new_client, rev) -> None:
    log = _refused(clean_lab, new_client, rev, rev.crl_revoked, "crl")
    assert "was revoked" in log and GATEWAY_ID in log
    assert "EAP/RES" not in log  # no credential went out


def test_revoked_by_ocsp_is_refused(clean_lab, new_client, rev) -> None:
    log = _refused(clean_lab, new_client, rev, rev.ocsp_revoked, "ocsp")
    assert "was revoked" in log and "EAP/RES" not in log


def test_good_certificate_connects(clean_lab, run_client, rev) -> None:
    rev.use(rev.good)
    client = run_client(_profile(clean_lab, "good"), secret_for(SCENARIO, clean_lab.pki))
    log = client.log_text()
    assert "is good" in log and "revocation status unknown" not in log
    client.disconnect()


def test_responder_down_refuses_only_when_strict(clean_lab, new_client, run_client,
                                                 rev) -> None:
    log = _refused(clean_lab, new_client, rev, rev.dead, "strict", strict=True)
    assert "revocation status unknown" in log and "EAP/RES" not in log
    client = run_client(_profile(clean_lab, "lax"), secret_for(SCENARIO, clean_lab.pki))
    assert "revocation status unknown" in client.log_text()
    client.disconnect()


def test_a_crl_elsewhere_is_fetched_through_the_kill_switch(clean_lab, run_client,
                                                            rev) -> None:
    """With the kill switch on and revocation strict, a CRL on another host, named by
    DNS, is still fetched (its name resolved and its address let through for the
    engine's marked packets), while everything else to that host stays rejected."""
    from tests.interop.test_kill_switch import OUTSIDE4, lab_dns, queries, rejected

    lab = clean_lab
    name, port = "crl.lab.example", 8082
    cred = lab.pki.issue_gateway("rev-elsewhere", f"C=CH, O=vpnclient lab, CN={GATEWAY_ID}",
                                 [GATEWAY_ID, *GATEWAY_IPS],
                                 crl_url=f"http://{name}:{port}/ca.crl")
    server = lab.gw_ns.popen([sys.executable, "-m", "http.server", "-b", OUTSIDE4, "-d",
                              str(rev.dir / "www"), str(port)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        rev._wait_listening(lab.gw_ns, {port})
        rev.use(cred)
        profile = make_profile(lab.pki, SCENARIO)
        profile["remote"]["revocation"] = {"crl": True, "ocsp": False, "strict": True}
        profile["kill-switch"] = True
        path = write_profile(Path(lab.dir, "rev-kill-switch.json"), profile)
        with lab_dns(lab, Path(lab.dir, "rev-dns.log"), **{name: OUTSIDE4}) as log:
            client = run_client(path, secret_for(SCENARIO, lab.pki), timeout=30)
            assert "is good" in client.log_text(), client.log_tail()
            assert any(name in q for q in queries(log)), queries(log)
        assert rejected(lab.ping(OUTSIDE4, count=1)), client.log_tail()
        client.disconnect()
    finally:
        server.terminate()
        server.wait(5)
