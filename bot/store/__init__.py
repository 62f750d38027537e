"""Persistence: SQLAlchemy 2 models, repositories and the unit of work (DESIGN.md, "Storage").

Services use :class:`Database` (``async with db.transaction() as tx``) and the models; the schema
changes only through the Alembic migrations run by :mod:`bot.store.migrate`.
"""

from bot.store.errors import (
    CanaryExists,
    DatabaseUrlError,
    MasterKeyMoved,
    MigrationError,
    NameTaken,
    RotationPending,
    StoreError,
)
from bot.store.models import AuditEvent, Connection, Credential, KeyCanary, Rotation, VerificationRecord
from bot.store.uow import Database, UnitOfWork

__all__ = [
    "AuditEvent",
    "CanaryExists",
    "Connection",
    "Credential",
    "Database",
    "DatabaseUrlError",
    "KeyCanary",
    "MasterKeyMoved",
    "MigrationError",
    "NameTaken",
    "Rotation",
    "RotationPending",
    "StoreError",
    "UnitOfWork",
    "VerificationRecord",
]
