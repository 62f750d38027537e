"""The write token of a credential version: the same (connection, version) always gives the same
token, so a write repeated after a crash or a lost answer is recognised by the store as the same
write (AWS ``ClientRequestToken``) instead of making a second version."""

from __future__ import annotations

import uuid
from typing import Final

__all__ = ["TOKEN_NAMESPACE", "write_token"]

TOKEN_NAMESPACE: Final = uuid.UUID("0848d5af-72ad-460d-ad55-75eb2c559a9e")
"""Fixed for good: changing it would make every retry after an upgrade look like a new write."""


def write_token(connection_id: str, version: int) -> str:
    """The token of version ``version`` of the connection's credential (a UUID, 36 characters)."""
    return str(uuid.uuid5(TOKEN_NAMESPACE, f"{connection_id}:{version}"))
