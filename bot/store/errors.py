"""The errors the store raises, as one hierarchy under :class:`StoreError` (in the manner of httpx).

Messages are safe to show: they never include a password from the URL, a query parameter or a
secret. Database driver errors that the store does not translate (a lost connection, a constraint
that only a bug could break) propagate as SQLAlchemy's own exceptions.
"""

from __future__ import annotations

__all__ = [
    "CanaryExists",
    "DatabaseUrlError",
    "MasterKeyMoved",
    "MigrationError",
    "NameTaken",
    "RotationPending",
    "StoreError",
]


class StoreError(Exception):
    """Base class for the errors the store raises on purpose."""


class DatabaseUrlError(StoreError):
    """``DATABASE_URL`` cannot be parsed or names an unsupported database."""


class MigrationError(StoreError):
    """The database could not be reached, or a migration failed; the original error is the cause."""


class CanaryExists(StoreError):
    """Another process stored the master-key canary first (two processes initialised one database)."""

    def __init__(self) -> None:
        super().__init__("the database already has a master-key canary")


class NameTaken(StoreError):
    """A connection with this name (compared case-insensitively) already holds it in the workspace.

    Raised when an insert hits the ``uq_connections_team_id_name_key`` index, which is what makes
    the name check safe when two people submit the same name at once.
    """

    def __init__(self, name: str) -> None:
        super().__init__(f"A connection named {name!r} already exists in this workspace.")
        self.name = name


class RotationPending(StoreError):
    """The connection already has a credential rotation waiting for an admin's decision."""

    def __init__(self, connection_id: str) -> None:
        super().__init__(f"connection {connection_id} already has a rotation waiting for approval")
        self.connection_id = connection_id


class MasterKeyMoved(StoreError):
    """``rotate-master-key`` re-sealed the data under another key after this process loaded its key.

    A credential sealed now with the old key would be lost once that key is retired, so writes of
    ciphertext are refused until the process restarts with the new key."""

    def __init__(self, loaded: str, current: str) -> None:
        super().__init__(
            f"the data is sealed with master key {current}, but this process loaded {loaded}; "
            "restart it so it loads the new key"
        )
        self.loaded, self.current = loaded, current
