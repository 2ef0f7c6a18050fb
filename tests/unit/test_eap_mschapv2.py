"""MSCHAPv2 primitives: RFC 2759 section 9.2 and RFC 3079 section 3.5.3 vectors."""

from client.ikev2.auth.eap import mschapv2 as m

USER = b"User"
PASSWORD = "clientPass"
AUTH_CHALLENGE = bytes.fromhex("5B5D7C7D7B3F2F3E3C2C602132262628")
PEER_CHALLENGE = bytes.fromhex("21402324255E262A28295F2B3A337C7E")
CHALLENGE = bytes.fromhex("D02E4386BCE91226")
PASSWORD_HASH = bytes.fromhex("44EBBA8D5312B8D611474411F56989AE")
NT_RESPONSE = bytes.fromhex("82309ECD8D708B5EA08FAA3981CD83544233114A3D85D6DF")
PASSWORD_HASH_HASH = bytes.fromhex("41C00C584BD2D91C4017A2A12FA59F3F")
AUTHENTICATOR_RESPONSE = "S=407A5589115FD0D6209F510FE9C04566932CDA56"
MASTER_KEY = bytes.fromhex("FDECE3717A8C838CB388E527AE3CDD31")
SEND_START_KEY_128 = bytes.fromhex("8B7CDC149B993A1BA118CB153F56DCCB")


def test_rfc2759_intermediate_values() -> None:
    assert m.challenge_hash(PEER_CHALLENGE, AUTH_CHALLENGE, USER) == CHALLENGE
    assert m.nt_password_hash(PASSWORD) == PASSWORD_HASH
    assert m.challenge_response(CHALLENGE, PASSWORD_HASH) == NT_RESPONSE
    assert m.generate_nt_response(AUTH_CHALLENGE, PEER_CHALLENGE, USER, PASSWORD) == NT_RESPONSE
    assert m.hash_nt_password_hash(PASSWORD_HASH) == PASSWORD_HASH_HASH


def test_rfc2759_authenticator_response() -> None:
    got = m.generate_authenticator_response(
        PASSWORD, NT_RESPONSE, PEER_CHALLENGE, AUTH_CHALLENGE, USER
    )
    assert got == AUTHENTICATOR_RESPONSE
    args = (PASSWORD, NT_RESPONSE, PEER_CHALLENGE, AUTH_CHALLENGE, USER)
    assert m.check_authenticator_response(*args, AUTHENTICATOR_RESPONSE)
    assert m.check_authenticator_response(*args, AUTHENTICATOR_RESPONSE.lower().replace("s=", "S="))
    assert not m.check_authenticator_response(*args, AUTHENTICATOR_RESPONSE[:-1] + "7")
    assert not m.check_authenticator_response("wrongPass", *args[1:], AUTHENTICATOR_RESPONSE)


def test_rfc3079_master_and_start_keys() -> None:
    assert m.get_master_key(PASSWORD_HASH_HASH, NT_RESPONSE) == MASTER_KEY
    # The RFC's sample is the server's send key (= the client's receive key).
    assert m.get_asymmetric_start_key(MASTER_KEY, 16, True, True) == SEND_START_KEY_128
    assert m.get_asymmetric_start_key(MASTER_KEY, 16, False, False) == SEND_START_KEY_128
    assert m.get_asymmetric_start_key(MASTER_KEY, 8, True, True) == SEND_START_KEY_128[:8]
    client_send = m.get_asymmetric_start_key(MASTER_KEY, 16, True, False)
    assert client_send != SEND_START_KEY_128
    assert client_send == m.get_asymmetric_start_key(MASTER_KEY, 16, False, True)


def test_msk_layout_as_strongswan() -> None:
    msk = m.msk(PASSWORD, NT_RESPONSE)
    client_send = m.get_asymmetric_start_key(MASTER_KEY, 16, True, False)
    assert msk == client_send + SEND_START_KEY_128 + bytes(32)


def test_des_key_parity_and_username_domain() -> None:
    key = m._des_key(bytes(7))
    assert all(bin(b).count("1") % 2 == 1 for b in key)
    assert m.username_for_hash("CORP\\alice") == b"alice"
    assert m.username_for_hash("alice@example.com") == b"alice@example.com"
