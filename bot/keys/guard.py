"""Binding the database to one master key.

On first use the bot seals a known value (the canary) with its master key. Every start then proves,
before serving a request, that the key opens the canary and the newest credential (``/healthz``
repeats the canary check), so a second host's own key, a mistyped ``CONNECTIONS_MASTER_KEY`` or a
database restored with another key's data is refused, instead of sealing rows nobody else can open.

A start reads the staged slot (:mod:`bot.keys.slots`) named after the canary's key id only when the
primary key does not open the canary:

* the primary opens it: a slot staged for its own id is a copy left by a promotion stopped halfway
  and is removed (an operator deletes one for ``CONNECTIONS_MASTER_KEY``); slots of a rotation that
  never committed are never read;
* only the staged key opens it: the promotion is finished here, only over the key the rotation
  started from, or into an empty primary slot (``CONNECTIONS_MASTER_KEY``: the bot starts with the
  staged file's key and warns);
* neither: :class:`WrongMasterKey`, naming the rotation that moved the data if the audit log has one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

from keyring.backend import KeyringBackend

from bot.crypto import Cipher, DecryptionError, MasterKey, Sealed, associated_data
from bot.keys import MasterKeyError, MasterKeyMissing, WrongMasterKey
from bot.keys.binding import upgrade_sealed_rows
from bot.keys.slots import (
    StagedKey,
    discard_staged_key,
    find_staged_for_missing_primary,
    promote_staged_key,
    read_staged_key,
    rotation_lock,
)
from bot.keys.sources import (
    ENV_VAR,
    KEYRING_USERNAME,
    PREVIOUS_ENV_VAR,
    KeySource,
    LoadedKey,
    MasterKeySettings,
    load_master_key,
    load_previous_key,
    read_entry,
    read_key_file,
)
from bot.redaction import Secret
from bot.store import CanaryExists, Credential, Database, KeyCanary

__all__ = [
    "CANARY_AAD",
    "CANARY_TEXT",
    "ROTATION_ACTION",
    "canary_sealed_with",
    "guard_master_key",
    "key_opens_database",
    "sealed_canary",
    "sealed_row",
    "verify_key_opens",
]

logger = logging.getLogger(__name__)

CANARY_AAD = associated_data("connections-bot", "key-canary", 1)
CANARY_TEXT = "connections-bot master-key canary"
ROTATION_ACTION = "master_key.rotated"  # its details name both key ids and the staged slot
LOCK_WAIT = 60.0  # seconds a start waits for another holder of the rotation lock


class SealedRow(NamedTuple):
    """A stored row's sealed value and the associated data that binds it to the row."""

    sealed: Sealed
    aad: bytes

    def opens_with(self, cipher: Cipher) -> bool:
        try:
            cipher.open(self.sealed, self.aad)
        except DecryptionError:
            return False
        return True


def sealed_row(
    row: KeyCanary | Credential, bindings: Mapping[tuple[str, int], str] | None = None
) -> SealedRow:
    """A row's sealed value and associated data; a credential's binds it to the configuration
    ``bindings`` names for its version (see ``CredentialRepository.bindings``)."""
    sealed = Sealed(key_id=row.key_id, nonce=row.nonce, ciphertext=row.ciphertext)
    if isinstance(row, KeyCanary):
        return SealedRow(sealed, CANARY_AAD)
    return SealedRow(sealed, row.aad((bindings or {}).get((row.connection_id, row.version), "")))


def sealed_canary(canary: KeyCanary) -> Sealed:
    return sealed_row(canary).sealed


async def guard_master_key(
    db: Database,
    settings: MasterKeySettings,
    *,
    keyring_backend: KeyringBackend | None = None,
    default_key_file: Path | None = None,
) -> tuple[LoadedKey, Cipher]:
    """Load the master key and prove it opens the database's data; raises :class:`MasterKeyError`.
    A key is only ever created while the database holds neither a canary nor a credential, under
    the rotation lock held until the canary's commit: a second first start at the same moment waits,
    then finds the first one's key and canary, instead of replacing that key in its slot."""
    with contextlib.ExitStack() as held:
        canary, probes = await _stored_probes(db)
        if not probes and _may_create_a_key(settings, keyring_backend, default_key_file):
            held.enter_context(rotation_lock(settings, default_key_file=default_key_file, wait=LOCK_WAIT))
            canary, probes = await _stored_probes(db)  # as the start that held the lock left it
        return await _bind(db, settings, canary, probes, keyring_backend, default_key_file)


async def _stored_probes(db: Database) -> tuple[KeyCanary | None, list[SealedRow]]:
    """The canary and the rows a key must open: the canary first (it decides between the primary
    and a staged key), then the newest credential."""
    async with db.read() as tx:
        canary = await tx.key_canary.get()
        latest = await tx.credentials.latest()
        bindings = await tx.credentials.bindings([latest] if latest is not None else [])
    return canary, [sealed_row(row, bindings) for row in (canary, latest) if row is not None]


def _may_create_a_key(settings: MasterKeySettings, ring: KeyringBackend | None, default: Path | None) -> bool:
    if settings.master_key is not None:
        return False
    try:
        load_master_key(settings, has_ciphertext=True, keyring_backend=ring, default_key_file=default)
    except MasterKeyMissing:
        return True
    return False


async def _bind(
    db: Database,
    settings: MasterKeySettings,
    canary: KeyCanary | None,
    probes: list[SealedRow],
    keyring_backend: KeyringBackend | None,
    default_key_file: Path | None,
) -> tuple[LoadedKey, Cipher]:
    try:
        loaded = load_master_key(
            settings,
            has_ciphertext=bool(probes),
            keyring_backend=keyring_backend,
            default_key_file=default_key_file,
        )
    except MasterKeyMissing:
        restored = _restore_a_lost_primary(settings, probes[0], keyring_backend, default_key_file)
        if restored is None:
            raise
        loaded = restored
    # A previous key opens what was sealed before a rotation; the cipher never seals with it.
    previous = [key for key in [load_previous_key(settings)] if key is not None]
    if probes and probes[0].opens_with(Cipher(loaded.key, previous)):
        if not loaded.from_next_slot:
            # A key still read from its staged slot is the only copy: never discard that slot.
            _settle_a_copy_of_the_primary(loaded, default_key_file)
    elif probes:
        # Only now is a staged key needed, so only now may a bad one stop the start.
        staged = read_staged_key(loaded, probes[0].sealed.key_id, default_key_file=default_key_file)
        if staged is not None and probes[0].opens_with(Cipher(staged.key)):
            loaded = _resume_rotation(loaded, staged, settings, default_key_file)
        else:
            await _refuse_a_rotated_key(db, loaded, probes[0].sealed.key_id)
    cipher = Cipher(loaded.key, previous)
    # Every probe must open, or verify_key_opens says why (other key ids, or a damaged row). Once
    # the canary proved the key, a credential of that key that does not open is one row's problem
    # (altered, or its connection's settings changed outside the bot), which its re-test reports:
    # it must not let a database writer stop the bot.
    for probe in probes:
        if probe is not probes[0] and canary is not None and probe.sealed.key_id in cipher.key_ids:
            if not probe.opens_with(cipher):
                logger.warning(
                    "the newest stored credential does not open with the master key that opens the "
                    "canary: its row or its connection's settings were altered outside the bot; it "
                    "will not be used"
                )
            continue
        verify_key_opens(cipher, *probe, where=loaded.location)
    if canary is None:
        await _store_canary(db, cipher, loaded.location)
        _confirm_the_slot_holds(loaded)
    await upgrade_sealed_rows(db, cipher, CANARY_AAD)
    return loaded, cipher


async def key_opens_database(db: Database, cipher: Cipher) -> bool:
    """Whether the key in use still opens the canary (for /healthz); False if the database fails."""
    try:
        canary = await _read_canary(db)
        return canary is not None and cipher.open(sealed_canary(canary), CANARY_AAD).reveal() == CANARY_TEXT
    except Exception:
        return False


async def canary_sealed_with(db: Database, key: MasterKey) -> bool:
    """Whether the canary is sealed with ``key``; True when that cannot be read (keep the key)."""
    try:
        canary = await _read_canary(db)
    except Exception:
        return True
    return canary is not None and canary.key_id == key.key_id


def verify_key_opens(cipher: Cipher, sealed: Sealed, aad: bytes, *, where: str = "the configuration") -> None:
    """Raise :class:`WrongMasterKey` unless ``cipher`` opens one stored row (``sealed`` with ``aad``);
    ``where`` names the key's source (``LoadedKey.location``) in the message."""
    if sealed.key_id not in cipher.key_ids:
        raise WrongMasterKey(
            f"the master key from {where} does not open the stored credentials: they were sealed with "
            f"master key {sealed.key_id}, but the loaded key is {cipher.key_id}; restore the key that "
            "sealed them (the bot will not start with a different key)"
        )
    try:
        cipher.open(sealed, aad)
    except DecryptionError:
        raise WrongMasterKey(
            f"the master key from {where} does not open the stored credentials: the key id "
            f"{sealed.key_id} matches but decryption failed, so the stored row is damaged or altered "
            "(or its connection's settings were changed outside the bot)"
        ) from None


async def _read_canary(db: Database) -> KeyCanary | None:
    async with db.read() as tx:
        return await tx.key_canary.get()


async def _store_canary(db: Database, cipher: Cipher, location: str) -> None:
    sealed = cipher.seal(Secret(CANARY_TEXT), CANARY_AAD)
    try:
        async with db.transaction() as tx:
            await tx.key_canary.add(
                KeyCanary(key_id=sealed.key_id, nonce=sealed.nonce, ciphertext=sealed.ciphertext)
            )
    except CanaryExists:
        # Another process initialised the database at the same moment; its key must be ours too.
        theirs = await _read_canary(db)
        if theirs is None:
            raise MasterKeyError("the master-key canary vanished while starting; start again") from None
        verify_key_opens(cipher, sealed_canary(theirs), CANARY_AAD, where=location)
    logger.info("this database is now bound to master key %s", sealed.key_id)


def _confirm_the_slot_holds(loaded: LoadedKey) -> None:
    """Stop if the slot the key came from holds another key now that the database is bound to it:
    every credential sealed from here on would not open after a restart."""
    if loaded.backend is not None:
        now = read_entry(loaded.backend, KEYRING_USERNAME)
    elif loaded.source is KeySource.KEY_FILE and loaded.path is not None:
        now = read_key_file(loaded.path)
    else:
        return
    if now != loaded.key:
        holds = f"master key {now.key_id}" if now is not None else "no key"
        raise MasterKeyError(
            f"{loaded.location} holds {holds}, not master key {loaded.key.key_id}, which this start has "
            "just bound the database to: another process changed it without taking the rotation lock. "
            "Stopping before sealing a credential with a key no slot holds; if the database holds no "
            "credential yet, delete its key canary (table key_canaries) and start one instance again"
        )


def _restore_a_lost_primary(
    settings: MasterKeySettings, first: SealedRow, ring: KeyringBackend | None, default: Path | None
) -> LoadedKey | None:
    # The staged key of a committed rotation is the only key that can fill the empty primary slot.
    found = find_staged_for_missing_primary(
        settings, first.sealed.key_id, keyring_backend=ring, default_key_file=default
    )
    if found is None or not first.opens_with(Cipher(found[1].key)):
        return None
    empty, staged = found
    restored = _promote(
        empty,
        staged,
        None,
        "could not move the staged master key into the empty primary slot",
        settings,
        default,
    )
    if not restored.from_next_slot:
        logger.warning(
            "no master key was in %s; restored master key %s there from %s, where a rotation staged it",
            restored.location,
            staged.key.key_id,
            staged.location,
        )
    return restored


def _settle_a_copy_of_the_primary(loaded: LoadedKey, default_key_file: Path | None) -> None:
    try:
        staged = read_staged_key(loaded, loaded.key.key_id, default_key_file=default_key_file)
    except MasterKeyError as exc:
        # The primary opens the data, so the staged key is needed by nobody: say so and go on.
        logger.warning("ignoring the staged master key: %s", exc)
        return
    if staged is None:
        return
    if staged.key != loaded.key:
        logger.warning(
            "ignoring %s: it is named after master key %s but holds another key",
            staged.location,
            loaded.key.key_id,
        )
    elif loaded.source is KeySource.ENV:
        logger.info(
            "%s holds the master key staged in %s; delete that file once every instance uses the key",
            ENV_VAR,
            staged.location,
        )
    else:
        discard_staged_key(staged)
        logger.info(
            "finished an interrupted master-key rotation: removed the staged copy of master key %s from %s",
            staged.key.key_id,
            staged.location,
        )


def _resume_rotation(
    loaded: LoadedKey, staged: StagedKey, settings: MasterKeySettings, default_key_file: Path | None
) -> LoadedKey:
    old, new = loaded.key.key_id, staged.key.key_id
    if loaded.source is KeySource.ENV:
        return dataclasses.replace(
            loaded,
            key=staged.key,
            location=f"{staged.location} (staged by rotate-master-key)",
            warning=(
                f"{ENV_VAR} holds master key {old}, which no longer opens the data: rotate-master-key "
                f"moved it to master key {new} and wrote that key to {staged.location}, which the bot "
                f"uses for now. Set {ENV_VAR} to the contents of {staged.location} on every instance, "
                "restart them, then delete the file"
            ),
            path=staged.path,
            from_next_slot=True,
        )
    promoted = _promote(
        loaded,
        staged,
        loaded.key,
        "could not finish the interrupted master-key rotation",
        settings,
        default_key_file,
    )
    if not promoted.from_next_slot:
        logger.warning(
            "finished a master-key rotation that stopped after its commit: master key %s replaced %s in %s",
            new,
            old,
            promoted.location,
        )
    return promoted


def _promote(
    loaded: LoadedKey,
    staged: StagedKey,
    expected: MasterKey | None,
    failure: str,
    settings: MasterKeySettings,
    default_key_file: Path | None,
) -> LoadedKey:
    """``staged`` promoted into ``loaded``'s slot under the rotation lock (its compare-and-set is a
    read then a write); if that fails, ``staged`` read from its slot, which keeps the key durably:
    the next start tries the promotion again."""
    try:
        with rotation_lock(settings, default_key_file=default_key_file, wait=LOCK_WAIT):
            return promote_staged_key(loaded, staged, expected=expected)
    except MasterKeyError as exc:
        logger.warning("%s: %s", failure, exc)
        return dataclasses.replace(
            loaded, key=staged.key, location=staged.location, path=staged.path, from_next_slot=True
        )


async def _refuse_a_rotated_key(db: Database, loaded: LoadedKey, key_id: str) -> None:
    """Raise :class:`WrongMasterKey` naming the rotation that moved the data to ``key_id``, if the
    audit log has one."""
    if key_id == loaded.key.key_id:
        return
    async with db.read() as tx:
        rotation = await tx.audit.latest_with_action(ROTATION_ACTION)
    if rotation is None or rotation.details.get("to_key_id") != key_id:
        return
    staged_in = rotation.details.get("staged_in") or "the slot it printed"
    moved = (
        f"the master key from {loaded.location} (key {loaded.key.key_id}) no longer opens the stored "
        f"credentials: rotate-master-key moved them to master key {key_id} on "
        f"{rotation.created_at:%Y-%m-%d %H:%M} UTC"
    )
    if rotation.details.get("key_source") == KeySource.ENV.value:
        raise WrongMasterKey(
            f"{moved}; on every instance set {ENV_VAR} to the new key (rotate-master-key took it from, "
            f"or wrote it to, {staged_in}) and {PREVIOUS_ENV_VAR} to the old one, and restart"
        )
    raise WrongMasterKey(
        f"{moved}; it staged the new key in {staged_in}: put it back where the bot reads its key"
    )
