"""Authentication variants beyond the basic methods: EAP-only (RFC 5998), RSA-PSS."""

from __future__ import annotations

import pytest

from tests.interop.test_failures import EXIT_UNTRUSTED, assert_failed_cleanly
from tests.lab.checks import disconnect_cleanly

pytestmark = pytest.mark.interop


def test_eap_only_gateway_with_opt_in(clean_lab, run_client) -> None:
    """A gateway without a certificate that proves itself by EAP-MSCHAPv2 alone."""
    lab = clean_lab
    offset = lab.gateway.log_size()
    profile = lab.profile("eap-only")
    data = profile.read_text().replace('"remote": {', '"remote": {"eap-only": true, ', 1)
    profile.write_text(data)
    client = run_client(profile, lab.secret("eap-only"))
    assert lab.ping(count=3).ok, client.log_tail()
    log = lab.gateway.log_since(offset)
    # The gateway really skipped its own AUTH: no certificate-based signature was sent.
    assert "authentication of 'vpn.example.com' (myself) with EAP" in log, log
    assert "authenticated by mutual EAP (EAP-only)" in client.log_text()
    assert disconnect_cleanly(lab, client, "eap-only", offset) == []


def test_eap_only_gateway_refused_by_default(clean_lab, new_client) -> None:
    """Without the profile's opt-in, a gateway that shows no certificate is not trusted."""
    lab = clean_lab
    client = new_client()
    client.start_connect(lab.profile("eap-only"), lab.secret("eap-only"))
    assert_failed_cleanly(lab, client, EXIT_UNTRUSTED)
    assert "without authenticating itself" in client.log_text()


def test_rsa_pss_client_certificate(clean_lab, run_client) -> None:
    lab = clean_lab
    offset = lab.gateway.log_size()
    profile = lab.profile("cert-rsa")
    data = profile.read_text().replace('"local": {', '"local": {"rsa-pss": true, ', 1)
    profile.write_text(data)
    client = run_client(profile, lab.secret("cert-rsa"))
    assert lab.ping(count=3).ok, client.log_tail()
    log = lab.gateway.log_since(offset)
    assert "RSA_EMSA_PSS" in log, log
    assert disconnect_cleanly(lab, client, "cert", offset) == []
