"""EAP-TLS (RFC 5216 / RFC 9190) and certificate-then-EAP (RFC 4739) against strongSwan."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

import pytest

from tests.interop.test_failures import EXIT_AUTH_FAILED, EXIT_UNTRUSTED, assert_failed_cleanly
from tests.lab.checks import check_status, disconnect_cleanly
from tests.lab.gateway import EAP_PASSWORD, EAP_USER, SCENARIOS, TLS_GATEWAY_ID
from tests.lab.profiles import make_profile, write_profile

pytestmark = pytest.mark.interop


def tls_profile(lab, scenario: str, **remote) -> Path:
    """A profile for one of the gateway's EAP-TLS / cert-EAP scenarios (alice's PKCS#12)."""
    profile = make_profile(lab.pki, "cert-rsa")
    profile["name"] = f"lab {scenario}"
    profile["remote"]["addr"] = SCENARIOS[scenario].addr
    if scenario == "cert-eap":
        profile["type"] = "ikev2-cert-eap"
        profile["local"]["eap_id"] = EAP_USER
    else:
        profile["type"] = "ikev2-eap-tls"
        profile["remote"]["id"] = TLS_GATEWAY_ID
    profile["remote"].update(remote)
    return write_profile(Path(lab.dir, f"{scenario}-{profile['uuid'][:8]}.vpnprofile"), profile)


def cert_eap_stdin(lab, password: str = EAP_PASSWORD) -> str:
    """The lines `--password-stdin` reads for ikev2-cert-eap: one per secret, in the
    order the CLI asks for them (client.importers.secret_kinds)."""
    from client.credentials import Kind
    from client.importers import secret_kinds
    from client.profile import load_profile_file

    kinds = secret_kinds(load_profile_file(tls_profile(lab, "cert-eap")))
    values = {Kind.PASSWORD: password, Kind.P12: lab.pki.p12_passphrase}
    assert set(kinds) == set(values), kinds
    return "\n".join(values[k] for k in kinds)


@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_eap_tls_connect_use_disconnect(clean_lab, run_client, version: str) -> None:
    lab = clean_lab
    offset = lab.gateway.log_size()
    raise_max = lab.gateway.tls_version_max(version) if version != "1.2" else nullcontext()
    with raise_max:
        client = run_client(tls_profile(lab, "eap-tls"), lab.pki.p12_passphrase)
    status = client.status()
    assert status is not None and check_status(status, SCENARIOS["eap-tls"].addr) == [], status
    sas = lab.gateway.sas_for("eap-tls")
    assert len(sas) == 1, lab.gateway.list_sas()
    assert sas[0].get("remote-id") == "alice@example.com", sas[0]
    log = lab.gateway.log_since(offset)
    assert f"negotiated TLS 1.{version[-1]}" in log, log
    assert "EAP method EAP_TLS succeeded, MSK established" in log, log
    assert f"EAP-TLS: TLSv{version} handshake complete" in client.log_text()

    ping = lab.ping(count=3)
    assert ping.ok, f"no ping reply through the tunnel:\n{ping.output}\n{client.log_tail()}"
    problems = disconnect_cleanly(lab, client, "eap-tls", offset)
    assert problems == [], "\n".join(problems) + "\n" + client.log_tail()


def test_eap_tls_as_the_only_gateway_authentication(clean_lab, run_client) -> None:
    """EAP-only (RFC 5998): no IKE certificate; the TLS server certificate vouches alone."""
    lab = clean_lab
    offset = lab.gateway.log_size()
    client = run_client(tls_profile(lab, "eap-tls-only", **{"eap-only": True}),
                        lab.pki.p12_passphrase)
    assert lab.ping(count=3).ok, client.log_tail()
    log = client.log_text()
    assert f"EAP-TLS: gateway certificate CN={TLS_GATEWAY_ID},O=vpnclient lab" in log, log
    assert "authenticated by mutual EAP (EAP-only)" in log, log
    assert disconnect_cleanly(lab, client, "eap-tls-only", offset) == [], client.log_tail()


def test_eap_tls_server_certificate_not_from_the_profiles_ca(clean_lab, new_client) -> None:
    """The TLS server certificate is checked against the profile's CA: exit code 4, and
    the gateway never sees our certificate."""
    lab = clean_lab
    offset = lab.gateway.log_size()
    profile = tls_profile(lab, "eap-tls-only", cert=lab.pki.evil_ca.cert_b64,
                          **{"eap-only": True})
    client = new_client()
    client.start_connect(profile, lab.pki.p12_passphrase)
    assert_failed_cleanly(lab, client, EXIT_UNTRUSTED)
    assert "EAP-TLS" in client.log_text() and "trusted CA" in client.log_text()
    assert "received TLS peer certificate" not in lab.gateway.log_since(offset)


def test_cert_then_eap_connect_use_disconnect(clean_lab, run_client) -> None:
    lab = clean_lab
    offset = lab.gateway.log_size()
    client = run_client(tls_profile(lab, "cert-eap"), cert_eap_stdin(lab))
    status = client.status()
    assert status is not None and check_status(status, SCENARIOS["cert-eap"].addr) == [], status
    sas = lab.gateway.sas_for("cert-eap")
    assert len(sas) == 1, lab.gateway.list_sas()
    log = lab.gateway.log_since(offset)
    # Both rounds, in order: the certificate, then EAP as alice with a new IDi.
    first = log.find("authentication of 'alice@example.com' with RSA")
    second = log.find(f"authentication of '{EAP_USER}' with EAP successful")
    assert 0 <= first < second, log
    assert "EAP method EAP_MSCHAPV2 succeeded" in log[first:second], log
    assert "authentication round 1 of 2 done" in client.log_text()

    ping = lab.ping(count=3)
    assert ping.ok, f"no ping reply through the tunnel:\n{ping.output}\n{client.log_tail()}"
    problems = disconnect_cleanly(lab, client, "cert-eap", offset)
    assert problems == [], "\n".join(problems) + "\n" + client.log_tail()


def test_cert_then_eap_wrong_password(clean_lab, new_client) -> None:
    lab = clean_lab
    client = new_client()
    client.start_connect(tls_profile(lab, "cert-eap"), cert_eap_stdin(lab, "not-the-password"))
    assert_failed_cleanly(lab, client, EXIT_AUTH_FAILED)
    assert "authentication round 1 of 2 done" in client.log_text()


def test_eap_tls_certificate_refused_by_the_gateway(clean_lab, new_client) -> None:
    """An EAP identity that alice's certificate does not carry: strongSwan refuses the
    TLS client certificate, and that is a credentials failure (exit code 3)."""
    lab = clean_lab
    profile = tls_profile(lab, "eap-tls")
    data = profile.read_text().replace('"local": {', '"local": {"eap_id": "carol@example.com", ', 1)
    profile.write_text(data)
    client = new_client()
    client.start_connect(profile, lab.pki.p12_passphrase)
    assert_failed_cleanly(lab, client, EXIT_AUTH_FAILED)
    assert "refused our certificate" in client.log_text(), client.log_tail()
