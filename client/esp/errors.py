"""The single exception of the ESP layer."""


class EspError(ValueError):
    """A packet was dropped (malformed, replayed, forged) or cannot be sent; `reason` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
