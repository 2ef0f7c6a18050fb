"""Error hierarchy, after h11: who broke the protocol decides the exception class."""


class IkeError(Exception):
    """Base class of every error raised by the IKEv2 engine."""


class RemoteProtocolError(IkeError):
    """The peer sent something malformed or out of place."""


class LocalProtocolError(IkeError):
    """We were asked to do something the protocol does not allow."""


class CryptoError(IkeError):
    """A cryptographic check failed (bad ICV, bad padding, bad key exchange value)."""


class NoProposalChosen(IkeError):
    """No proposal acceptable to both sides."""


class AuthenticationFailed(IkeError):
    """Our credentials were rejected by the gateway (CLI exit code 3)."""


class PeerNotTrusted(IkeError):
    """The gateway's certificate chain, identity or AUTH payload did not verify (exit code 4)."""


class PeerUnreachable(IkeError):
    """The gateway did not answer within the retransmission budget (exit code 5)."""
