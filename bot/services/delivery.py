"""Delivering an approved credential to the secret store (see ``bot.stores``), for approvals.

With a store configured, approving a new connection or a rotation takes three steps, so that no
database transaction (nor SQLite's write lock) is ever held across a call to the store:

1. in a read transaction, the request is checked and its pending sealed fields are opened: the
   version awaiting approval, with the associated data that binds it to the configuration it was
   sealed for (:func:`prepare`);
2. outside any transaction, they are written to the store as the connection's secret
   (:func:`deliver`), under a token derived from the connection and the version, so that a retry
   after a crash between this write and step 3 returns the version already written;
3. the decision transaction records where the credential now lives and destroys every local copy
   (:mod:`bot.services.approvals`).

If step 3 finds the request decided meanwhile (rejected, expired), :func:`undo` takes back what
step 2 wrote. Nothing here raises but :class:`~bot.stores.base.StoreError` from step 2; a problem
found in step 1 is a sentence for the admin.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime

from bot.crypto import Cipher, DecryptionError, Sealed, associated_data, config_digest
from bot.redaction import Secret
from bot.store import Connection, Rotation
from bot.store.uow import UnitOfWork
from bot.stores.base import SecretStore, StoredSecret, StoreError, StoreFailure, store_title
from bot.stores.paths import PathTemplate
from bot.stores.tokens import write_token

__all__ = [
    "Delivered",
    "Pending",
    "deliver",
    "elsewhere",
    "prepare",
    "undo",
]

logger = logging.getLogger(__name__)

NOT_OPENED = (
    "The credentials waiting for approval do not match the settings they were stored with, so they "
    "were not sent to the secret store. Reject this request and ask for it again."
)


@dataclass(frozen=True)
class Pending:
    """What approving one request writes to the store: the credential version awaiting approval
    (its non-empty settings and its secrets), where, in place of which version, with what tags."""

    connection_id: str
    version: int
    path: str
    replaces: str | None
    """The version the bot last wrote there (None: it never wrote there)."""
    fields: dict[str, str | Secret] = field(repr=False)
    metadata: dict[str, str]

    @property
    def token(self) -> str:
        return write_token(self.connection_id, self.version)


@dataclass(frozen=True)
class Delivered:
    """Where the approved credential now lives: the store's key, the path and the version written;
    and the version that write replaced (None: the path held nothing)."""

    store: str
    path: str
    version: str
    replaced: str | None = None


def elsewhere(held_by: str | None, store: SecretStore | None) -> str | None:
    """Why the bot cannot reach a credential that the store ``held_by`` holds (a connection's
    ``secret_store``), when that is not the store it is configured with (``store``, None for its
    own database): one sentence naming what to run; None when it can reach it."""
    if held_by is None or (store is not None and store.key == held_by):
        return None
    where = store_title(held_by)
    configured = "keep credentials in its own database" if store is None else f"use {store.title}"
    to = "local" if store is None else store.key
    return (
        f"The credential is in {where}, but the bot is now set to {configured}, so it cannot reach it. "
        f"Whoever runs the bot can move the credentials with `connections-bot migrate-secrets --to {to}`."
    )


async def prepare(
    tx: UnitOfWork,
    cipher: Cipher,
    store: SecretStore,
    paths: PathTemplate,
    request: Connection | Rotation,
    connection: Connection,
    actor: str,
    now: datetime,
) -> Pending | str:
    """The credential version that approving ``request`` delivers, its sealed fields opened for
    the configuration they were sealed for; or why it cannot be delivered, in a sentence."""
    problem = elsewhere(connection.secret_store, store)
    if problem is not None:
        return problem
    if isinstance(request, Rotation):
        version, settings = request.version, request.config
    else:
        version, settings = connection.credential_version, connection.config
    config = {str(k): str(v) for k, v in settings.items()}
    try:
        path = connection.secret_path or paths.render(
            team=connection.team_id,
            provider=connection.provider,
            name=connection.name,
            connection_id=connection.id,
        )
    except ValueError as exc:
        return f"The secret's path could not be made: CONNECTIONS_SECRET_PATH {exc}."
    bound_to = config_digest(connection.provider, config)
    rows = (await tx.credentials.for_connections([(connection.id, version)]))[connection.id]
    fields: dict[str, str | Secret] = {name: value for name, value in config.items() if value}
    try:
        for row in rows:
            aad = associated_data(row.connection_id, row.field, row.version, bound_to)
            secret = cipher.open(Sealed(row.key_id, row.nonce, row.ciphertext), aad)
            if secret:
                fields[row.field] = secret
    except DecryptionError:
        fields.clear()
        logger.warning(
            "the credential version %d of connection %s does not open for its settings; not delivered",
            version,
            connection.id,
        )
        return NOT_OPENED
    if not rows:
        return NOT_OPENED
    metadata = {
        "provider": connection.provider,
        "connection-id": connection.id,
        "owner": connection.created_by,
        "approved-by": actor,
        "approved-at": now.isoformat(timespec="seconds"),
    }
    return Pending(connection.id, version, path, connection.secret_version, fields, metadata)


async def deliver(store: SecretStore, pending: Pending) -> tuple[Delivered, StoredSecret | None]:
    """Write the pending version to the store; with it, the version it replaced as read just before
    (kept in memory only, to put back if the decision is lost), when that is the one the bot wrote.
    Raises :class:`StoreError` (nothing was written, or a retry may finish it).

    A secret deleted outside the bot since the bot wrote it is written afresh: nothing is
    overwritten, and an approved rotation is how its owner puts a credential back."""
    previous, replaces = None, pending.replaces
    if replaces is not None:
        try:
            current = await store.read(pending.path)
        except StoreError as exc:
            if exc.failure is not StoreFailure.NOT_FOUND:
                raise
            replaces = None
        else:
            previous = current if current.version == replaces else None
    written = await store.write(
        pending.path,
        pending.fields,
        token=pending.token,
        replaces=replaces,
        metadata=pending.metadata,
    )
    return Delivered(store.key, pending.path, written.version, replaces), previous


async def undo(
    store: SecretStore, pending: Pending, delivered: Delivered, previous: StoredSecret | None
) -> str | None:
    """Take back a delivery whose decision was lost: delete a secret the bot had not written
    before (only if it still holds the version just written), or write back the version it
    replaced. Returns the version written back, if any. Never raises: what cannot be undone is
    logged as a warning for an operator."""
    where = f"{store.title} `{delivered.path}`"
    try:
        if delivered.replaced is None:
            current = await store.read(delivered.path)
            if current.version == delivered.version:
                await store.delete(delivered.path)
                logger.info("the request was decided meanwhile: deleted %s again", where)
            else:
                logger.warning(
                    "the request was decided meanwhile, but %s changed since the bot wrote it; left as is",
                    where,
                )
            return None
        if previous is None:
            logger.warning(
                "the request was decided meanwhile, but the version %s replaced in %s could not be "
                "read before, so it was not written back: write it back by hand",
                delivered.version,
                where,
            )
            return None
        restored = await store.write(
            delivered.path,
            previous.fields,
            token=write_token(pending.connection_id, pending.version, ":undone"),
            replaces=delivered.version,
            metadata=pending.metadata,
        )
    except StoreError as exc:
        if exc.failure is StoreFailure.NOT_FOUND:
            return None
        logger.warning(
            "the request was decided meanwhile, and the version %s written to %s could not be taken back: %s",
            delivered.version,
            where,
            exc,
        )
        return None
    logger.info("the request was decided meanwhile: wrote the replaced version back to %s", where)
    return restored.version
