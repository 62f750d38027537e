"""The write token of a credential version: the same (connection, version) always gives the same
token, so a write repeated after a crash or a lost answer is recognised by the store as the same
write (AWS ``ClientRequestToken``) instead of making a second version."""

from __future__ import annotations

import uuid
from typing import Final

__all__ = ["TOKEN_NAMESPACE", "write_token"]

TOKEN_NAMESPACE: Final = uuid.UUID("5d3f3c1e-8a4b-4f7e-9c2d-6b1a0e9f4c37")
"""Fixed for good: changing it would make every retry after an upgrade look like a new write."""


def write_token(connection_id: str, version: int, purpose: str = "") -> str:
    """The token of version ``version`` of the connection's credential (a UUID, 36 characters);
    ``purpose`` tells apart another write of the same version (putting it back after a lost race)."""
    return str(uuid.uuid5(TOKEN_NAMESPACE, f"{connection_id}:{version}{purpose}"))
