"""The one error every registration step raises: no 3 x 9 connector could be found."""

from __future__ import annotations

__all__ = ["NoConnectorError"]


class NoConnectorError(ValueError):
    """No 3 x 9 connector could be found; the message says why and what to do."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"no connector found ({reason})")
        self.reason = reason
