"""EAP-MSCHAPv2: RFC 2759 primitives, RFC 3079 keys and the peer side of the EAP method.

EAP framing after the EAP Type octet (draft-kamath-pppext-eap-mschapv2):
OpCode, MS-CHAPv2-ID, MS-Length (= EAP Length - 5), then per OpCode:
  Challenge: Value-Size (16), Challenge, Name
  Response:  Value-Size (49), Peer-Challenge (16), Reserved (8), NT-Response (24),
             Flags (1), Name
  Success:   request "S=<40 hex> M=<message>"; response is the OpCode alone
  Failure:   request "E=eeee R=r C=<32 hex> V=v M=<message>"
"""

import hashlib
import hmac
import secrets
from collections.abc import Callable

from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, modes

from client.ikev2.auth.eap.md4 import md4
from client.ikev2.errors import AuthenticationFailed, PeerNotTrusted, RemoteProtocolError

OP_CHALLENGE = 1
OP_RESPONSE = 2
OP_SUCCESS = 3
OP_FAILURE = 4

CHALLENGE_LEN = 16
RESPONSE_VALUE_LEN = 49

_MAGIC1 = b"Magic server to client signing constant"
_MAGIC2 = b"Pad to make it do more than one iteration"
_MASTER_MAGIC = b"This is the MPPE Master Key"
_SEND_MAGIC_CLIENT = (
    b"On the client side, this is the send key; on the server side, it is the receive key."
)
_RECV_MAGIC_CLIENT = (
    b"On the client side, this is the receive key; on the server side, it is the send key."
)
_SHS_PAD1 = bytes(40)
_SHS_PAD2 = b"\xf2" * 40

_ERRORS = {
    646: "restricted logon hours",
    647: "account disabled",
    648: "password expired",
    649: "no dial-in permission",
    691: "authentication failure",
    709: "error changing password",
}


# --- RFC 2759 section 8 -------------------------------------------------------------


def nt_password_hash(password: str) -> bytes:
    """MD4 of the password in UTF-16LE (RFC 2759 8.3)."""
    return md4(password.encode("utf-16-le"))


def hash_nt_password_hash(password_hash: bytes) -> bytes:
    return md4(password_hash)


def challenge_hash(peer_challenge: bytes, authenticator_challenge: bytes, username: bytes) -> bytes:
    """First 8 octets of SHA-1(PeerChallenge | AuthenticatorChallenge | UserName) (8.2)."""
    return hashlib.sha1(peer_challenge + authenticator_challenge + username).digest()[:8]


def _des_key(key7: bytes) -> bytes:
    """Spread 56 key bits over 8 octets, low bit of each octet the (odd) parity bit."""
    bits = int.from_bytes(key7, "big")
    out = bytearray()
    for i in range(8):
        octet = ((bits >> (49 - 7 * i)) & 0x7F) << 1
        out.append(octet | (bin(octet).count("1") + 1) % 2)
    return bytes(out)


def des_encrypt(clear: bytes, key7: bytes) -> bytes:
    # Single DES is triple DES (EDE) with one key three times; cryptography keeps both
    # only in its "decrepit" package, which is what they are.
    key = _des_key(key7)
    encryptor = Cipher(TripleDES(key * 3), modes.ECB()).encryptor()
    return encryptor.update(clear) + encryptor.finalize()


def challenge_response(challenge: bytes, password_hash: bytes) -> bytes:
    """Three DES encryptions of the 8-octet challenge under the zero-padded hash (8.5)."""
    z = password_hash.ljust(21, b"\0")
    return b"".join(des_encrypt(challenge, z[i : i + 7]) for i in (0, 7, 14))


def generate_nt_response(
    authenticator_challenge: bytes, peer_challenge: bytes, username: bytes, password: str
) -> bytes:
    chash = challenge_hash(peer_challenge, authenticator_challenge, username)
    return challenge_response(chash, nt_password_hash(password))


def generate_authenticator_response(
    password: str,
    nt_response: bytes,
    peer_challenge: bytes,
    authenticator_challenge: bytes,
    username: bytes,
) -> str:
    """The "S=<40 uppercase hex>" string the authenticator must return (8.7)."""
    hash_hash = hash_nt_password_hash(nt_password_hash(password))
    digest = hashlib.sha1(hash_hash + nt_response + _MAGIC1).digest()
    chash = challenge_hash(peer_challenge, authenticator_challenge, username)
    return "S=" + hashlib.sha1(digest + chash + _MAGIC2).hexdigest().upper()


def check_authenticator_response(
    password: str,
    nt_response: bytes,
    peer_challenge: bytes,
    authenticator_challenge: bytes,
    username: bytes,
    received: str,
) -> bool:
    expected = generate_authenticator_response(
        password, nt_response, peer_challenge, authenticator_challenge, username
    )
    return hmac.compare_digest(expected.encode(), received.upper().encode())


# --- RFC 3079 section 3.4 -----------------------------------------------------------


def get_master_key(password_hash_hash: bytes, nt_response: bytes) -> bytes:
    return hashlib.sha1(password_hash_hash + nt_response + _MASTER_MAGIC).digest()[:16]


def get_asymmetric_start_key(
    master_key: bytes, key_len: int, is_send: bool, is_server: bool
) -> bytes:
    magic = _SEND_MAGIC_CLIENT if is_send != is_server else _RECV_MAGIC_CLIENT
    return hashlib.sha1(master_key + _SHS_PAD1 + magic + _SHS_PAD2).digest()[:key_len]


def msk(password: str, nt_response: bytes) -> bytes:
    """The 64-octet MSK as strongSwan's eap-mschapv2 derives it for IKEv2.

    MasterReceiveKey | MasterSendKey (the server's view, i.e. the client's send key
    first) | 32 zero octets.
    """
    master = get_master_key(hash_nt_password_hash(nt_password_hash(password)), nt_response)
    client_send = get_asymmetric_start_key(master, 16, is_send=True, is_server=False)
    client_recv = get_asymmetric_start_key(master, 16, is_send=False, is_server=False)
    return client_send + client_recv + bytes(32)


def username_for_hash(identity: str) -> bytes:
    """The user name that enters ChallengeHash: without a "DOMAIN\\" prefix (RFC 2759 4)."""
    return identity.rpartition("\\")[2].encode()


# --- the EAP method, peer side ------------------------------------------------------


class MsChapV2Peer:
    """Answers the gateway's MSCHAPv2 requests (EAP Type-Data after the Type octet)."""

    def __init__(
        self, identity: str, password: str, rng: Callable[[int], bytes] = secrets.token_bytes
    ) -> None:
        self._identity = identity
        self._password = password
        self._rng = rng
        self._state = "challenge"
        self._peer_challenge = b""
        self._auth_challenge = b""
        self._nt_response = b""
        self.done = False

    def handle(self, type_data: bytes) -> bytes:
        if len(type_data) < 1:
            raise RemoteProtocolError("EAP-MSCHAPv2: empty request")
        opcode = type_data[0]
        if opcode == OP_CHALLENGE and self._state == "challenge":
            return self._challenge(type_data)
        if opcode == OP_SUCCESS and self._state == "success":
            return self._success(type_data)
        if opcode == OP_FAILURE and self._state == "success":
            self._failure(type_data)
        raise RemoteProtocolError(
            f"EAP-MSCHAPv2: unexpected OpCode {opcode} while waiting for {self._state}"
        )

    @staticmethod
    def _header(type_data: bytes) -> tuple[int, bytes]:
        if len(type_data) < 4:
            raise RemoteProtocolError("EAP-MSCHAPv2: request shorter than its header")
        ms_length = int.from_bytes(type_data[2:4], "big")
        if ms_length != len(type_data):
            raise RemoteProtocolError(
                f"EAP-MSCHAPv2: MS-Length {ms_length} but {len(type_data)} octets"
            )
        return type_data[1], type_data[4:]

    def _challenge(self, type_data: bytes) -> bytes:
        ms_id, body = self._header(type_data)
        if len(body) < 1 + CHALLENGE_LEN or body[0] != CHALLENGE_LEN:
            raise RemoteProtocolError("EAP-MSCHAPv2: challenge is not 16 octets")
        self._auth_challenge = body[1 : 1 + CHALLENGE_LEN]
        self._peer_challenge = self._rng(CHALLENGE_LEN)
        if len(self._peer_challenge) != CHALLENGE_LEN:
            raise ValueError("rng returned the wrong number of octets")
        self._nt_response = generate_nt_response(
            self._auth_challenge,
            self._peer_challenge,
            username_for_hash(self._identity),
            self._password,
        )
        value = self._peer_challenge + bytes(8) + self._nt_response + b"\x00"
        name = self._identity.encode()
        ms_length = 4 + 1 + RESPONSE_VALUE_LEN + len(name)
        self._state = "success"
        return (
            bytes((OP_RESPONSE, ms_id))
            + ms_length.to_bytes(2, "big")
            + bytes((RESPONSE_VALUE_LEN,))
            + value
            + name
        )

    @staticmethod
    def _message(body: bytes) -> str:
        # strongSwan NUL-terminates the message; other servers do not.
        try:
            return body.rstrip(b"\0").decode("ascii")
        except UnicodeDecodeError:
            raise RemoteProtocolError("EAP-MSCHAPv2: message is not ASCII") from None

    def _success(self, type_data: bytes) -> bytes:
        _, body = self._header(type_data)
        tokens = [t for t in self._message(body).split(" ") if t.startswith("S=")]
        if not tokens or len(tokens[0]) != 42:
            raise RemoteProtocolError("EAP-MSCHAPv2: success request without authenticator")
        if not check_authenticator_response(
            self._password,
            self._nt_response,
            self._peer_challenge,
            self._auth_challenge,
            username_for_hash(self._identity),
            tokens[0],
        ):
            raise PeerNotTrusted(
                "EAP-MSCHAPv2: the gateway's authenticator response is wrong "
                "(it does not know the password)"
            )
        self._state = "eap-success"
        self.done = True
        return bytes((OP_SUCCESS,))

    def _failure(self, type_data: bytes) -> None:
        _, body = self._header(type_data)
        text = self._message(body)
        fields = dict(t.split("=", 1) for t in text.split(" ") if "=" in t)
        code = fields.get("E", "")
        reason = _ERRORS.get(int(code), "unknown error") if code.isdigit() else "no error code"
        detail = f"MSCHAPv2 error {code or '?'}: {reason}"
        self._state = "failed"
        raise AuthenticationFailed(f"EAP: the gateway rejected the credentials ({detail})")

    @property
    def msk(self) -> bytes | None:
        return msk(self._password, self._nt_response) if self.done else None
