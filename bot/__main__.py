"""The ``connections-bot`` command: ``serve`` runs the bot, ``migrate`` applies schema migrations,
``audit export`` writes the audit log as JSON Lines, ``rotate-master-key`` re-encrypts every
credential under a new master key, ``generate-master-key`` makes one for a secret manager,
``migrate-secrets`` moves every active credential to one secret store."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, TypeVar

from bot.logs import configure_logging
from bot.providers.registry import build_registry
from bot.settings import (
    SECRET_STORES,
    ConfigError,
    KeySettings,
    Settings,
    StoreSettings,
    load_database_url,
    load_key_settings,
    load_settings,
    load_store_settings,
)

if TYPE_CHECKING:
    from bot.crypto import Cipher
    from bot.keys.rotation import GivenKey, RotationOutcome
    from bot.services.secret_moves import MovePlan, MoveReport
    from bot.store import Database
    from bot.stores.base import SecretStore

__all__ = ["main"]

logger = logging.getLogger("connections_bot")

EXIT_CONFIG = 2
T = TypeVar("T")


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return _command(argv)
    except ConfigError as exc:
        print(f"connections-bot: {exc}", file=sys.stderr)
        return EXIT_CONFIG


def _command(argv: Sequence[str] | None) -> int:
    parser = argparse.ArgumentParser(prog="connections-bot", description=__doc__)
    parser.add_argument("--env-file", default=".env", help="read settings from this file too (default: .env)")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve", help="apply pending migrations, then run the Slack app")
    commands.add_parser("migrate", help="apply pending database migrations and exit")
    audit = commands.add_parser("audit", help="read the audit log (needs only DATABASE_URL)")
    audit_commands = audit.add_subparsers(dest="audit_command", required=True)
    export = audit_commands.add_parser(
        "export", help="write every audit event as JSON Lines (one object per line) and exit"
    )
    export.add_argument("--output", "-o", metavar="FILE", help="write to FILE instead of standard output")
    rotate = commands.add_parser(
        "rotate-master-key",
        help="re-encrypt every credential under a new master key (needs only DATABASE_URL and the key)",
    )
    given = rotate.add_mutually_exclusive_group()
    given.add_argument(
        "--new-key-from-env",
        metavar="NAME",
        help="with CONNECTIONS_MASTER_KEY: the new key is the value of the variable NAME, as kept in "
        "your secret manager (make one with generate-master-key)",
    )
    given.add_argument(
        "--new-key-file",
        metavar="PATH",
        type=Path,
        help="with CONNECTIONS_MASTER_KEY: the new key is in PATH, a file you keep (mode 0600)",
    )
    rotate.add_argument(
        "--yes",
        action="store_true",
        help="replace a key kept in the keyring or the default key file without asking (other "
        "databases run by this OS user may use it too: see the warning)",
    )
    commands.add_parser(
        "generate-master-key",
        help="print a new master key once, to store in your secret manager (changes nothing)",
    )
    move = commands.add_parser(
        "migrate-secrets",
        help="move every active connection's credential, in every workspace, to one secret store "
        "(needs DATABASE_URL, the master key and the stores' settings, no Slack token)",
    )
    move.add_argument(
        "--to",
        dest="target",
        required=True,
        choices=SECRET_STORES,
        help="where every active credential goes: local (sealed in the bot's database), aws or vault",
    )
    move.add_argument(
        "--dry-run", action="store_true", help="say what would move; read no secret and change nothing"
    )
    args = parser.parse_args(argv)

    if args.command == "audit":
        # Before load_settings: reading the log must not need Slack tokens or the master key.
        return _export_audit(load_database_url(args.env_file), args.output)
    if args.command == "generate-master-key":
        return _generate_master_key()
    if args.command == "migrate-secrets":
        # Before load_settings too: moving credentials needs no Slack token.
        return _migrate_secrets(
            load_key_settings(args.env_file), load_store_settings(args.env_file), args.target, args.dry_run
        )
    if args.command == "rotate-master-key":
        # Before load_settings too: an operator rotating the key needs no Slack token.
        # Absolute, so the steps printed at the end name the file wherever they are read.
        new_key_file = args.new_key_file.expanduser().absolute() if args.new_key_file else None
        key_settings = load_key_settings(args.env_file, args.new_key_from_env)
        return _rotate_master_key(key_settings, args.new_key_from_env, new_key_file, assume_yes=args.yes)
    settings = load_settings(args.env_file)
    # Each provider reads its own settings; a malformed one stops start-up the same way.
    build_registry(settings)
    configure_logging(settings.log_level)
    if args.command == "migrate":
        return _migrate(settings)
    return _serve(settings)


def _migrate(settings: Settings) -> int:
    # Alembic announces each of its plugins at INFO when it is first imported (just below):
    # set-up chatter that would bury the one line saying why a start failed.
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    from bot.store import StoreError
    from bot.store.migrate import upgrade_to_head

    try:
        upgrade_to_head(settings.database_url)
    except StoreError as exc:
        print(f"connections-bot: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    logger.info("database is at the latest schema")
    return 0


def _on_database(
    url: str, what: str, work: Callable[[Database], Awaitable[T]], *, after_failure: str = ""
) -> tuple[int, T | None]:
    """Run ``work`` on the database at ``url``, for a command that needs only the database: its
    result, or the exit code and one line on stderr saying why it could not (it could not ``what``
    the database, e.g. "export the audit log from")."""
    from sqlalchemy import make_url
    from sqlalchemy.exc import SQLAlchemyError

    from bot.keys import MasterKeyError, PromotionFailed
    from bot.store import Database, StoreError
    from bot.store.db import is_sqlite, safe_url

    async def run() -> T:
        db = Database.from_url(url)
        try:
            return await work(db)
        finally:
            await db.dispose()

    try:
        # Connecting would create an empty SQLite file; a wrong path should say so instead.
        if is_sqlite(url) and not Path(make_url(url).database or "").is_file():
            print(f"connections-bot: no database at {safe_url(url)}; check DATABASE_URL", file=sys.stderr)
            return EXIT_CONFIG, None
        return 0, asyncio.run(run())
    except PromotionFailed as exc:
        print(f"connections-bot: {exc}", file=sys.stderr)
        return 1, None
    except (MasterKeyError, StoreError) as exc:
        print(f"connections-bot: {exc}", file=sys.stderr)
        return EXIT_CONFIG, None
    except (SQLAlchemyError, OSError) as exc:
        # The type only: driver messages can name hosts and users.
        print(
            f"connections-bot: could not {what} {safe_url(url)} ({type(exc).__name__}); is the database "
            f"reachable and migrated (connections-bot migrate)?{after_failure}",
            file=sys.stderr,
        )
        return 1, None


def _export_audit(database_url: str, output: str | None) -> int:
    """``audit export``: the whole audit log as JSON Lines to ``output`` (or standard output); the
    count goes to stderr, so stdout holds nothing but the log."""
    from bot.services.audit import export_events

    configure_logging("WARNING")
    what = "export the audit log from"
    if output is None:
        code, count = _on_database(database_url, what, partial(export_events, out=sys.stdout))
    else:
        with _new_private_file(output) as out:
            code, count = _on_database(database_url, what, partial(export_events, out=out))
        if count is None:
            Path(output).unlink(missing_ok=True)  # ours, empty or partial: leave no half a log
    if count is None:
        return code
    noun = "event" if count == 1 else "events"
    print(f"connections-bot: exported {count} audit {noun} to {output or 'standard output'}", file=sys.stderr)
    return 0


def _new_private_file(path: str) -> BinaryIO:
    """``path`` as a new file only its owner may read: the audit log names people and connections.
    O_EXCL refuses an existing file and a symbolic link, so nothing is overwritten or redirected."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        raise ConfigError(f"{path} already exists; name a new file (an export never replaces one)") from None
    except OSError as exc:
        raise ConfigError(f"cannot create {path}: {exc.strerror}") from None
    return os.fdopen(fd, "wb")


def _generate_master_key() -> int:
    """``generate-master-key``: the key on stdout (nothing else, so it can be piped into a secret
    manager's client), its id and what to do with it on stderr. Nothing is stored anywhere."""
    from bot.crypto import MasterKey

    key = MasterKey.generate()
    print(key.to_base64().reveal())
    print(
        f"connections-bot: new master key {key.key_id}; it is printed once and stored nowhere: put it "
        'in your secret manager, then see README, "Rotating the master key"',
        file=sys.stderr,
    )
    return 0


def _rotate_master_key(
    settings: KeySettings, new_key_variable: str | None, new_key_file: Path | None, *, assume_yes: bool
) -> int:
    """``rotate-master-key``: progress on stderr (logs), the result and what to do next on stdout."""
    from bot.keys import MasterKeyError
    from bot.keys.rotation import crash_at, key_from_file, key_from_variable, rotate_master_key

    configure_logging("INFO")
    try:
        checkpoint = crash_at(settings.failpoint)
        given: GivenKey | None = None
        if new_key_variable is not None:
            given = key_from_variable(new_key_variable, settings.new_master_key)
        elif new_key_file is not None:
            given = key_from_file(new_key_file)
    except MasterKeyError as exc:
        print(f"connections-bot: {exc}", file=sys.stderr)
        return EXIT_CONFIG

    async def rotate(db: Database) -> RotationOutcome:
        confirm = partial(_confirm_shared_slot, assume_yes=assume_yes)
        return await rotate_master_key(db, settings, given=given, confirm=confirm, checkpoint=checkpoint)

    unless = " Nothing was committed unless the output above says so"
    code, outcome = _on_database(
        settings.database_url, "rotate the master key on", rotate, after_failure=unless
    )
    if outcome is None:
        return code
    print(_rotation_report(outcome))
    return 0


def _confirm_shared_slot(warning: str, *, assume_yes: bool) -> bool:
    """Print ``warning`` before anything changes; go on with ``--yes`` or a typed "yes" at a terminal."""
    print(f"WARNING: {warning}.", file=sys.stderr, flush=True)
    if assume_yes:
        return True
    if not sys.stdin.isatty():
        print("connections-bot: run the command again with --yes to go on", file=sys.stderr)
        return False
    print("Type yes to replace the key: ", end="", file=sys.stderr, flush=True)
    try:
        answer = input()
    except EOFError:
        return False
    return answer.strip().lower() == "yes"


def _rotation_report(outcome: RotationOutcome) -> str:
    from bot.keys.sources import ENV_VAR, PREVIOUS_ENV_VAR

    old, new = outcome.old_key_id, outcome.new_key_id
    if outcome.already_committed:
        lines = [f"Every row was already sealed with master key {new}. Nothing new was rotated."]
    else:
        lines = [
            f"Re-encrypted {outcome.credentials} credential fields and the key canary under the new "
            f"master key {new} (was {old})."
        ]
    keep = (
        f"Keep master key {old} in your secret manager as long as you keep a database backup taken "
        "before this rotation: only that key opens it."
    )
    if outcome.swap_file is not None:
        path = outcome.swap_file
        lines += [
            f"The new key is in {path} (readable only by you). To finish:",
            f"  1. set {ENV_VAR} to the contents of {path} on every instance (e.g. in your secret manager);",
            "  2. restart every instance;",
            f"  3. delete {path}.",
        ]
    elif outcome.kept_in == ENV_VAR:
        lines += [
            f"{PREVIOUS_ENV_VAR} opens nothing in this database any more: remove it from every "
            "instance and restart them.",
            keep,
        ]
    elif outcome.kept_in is not None:
        lines += [
            "To finish, on every instance, one at a time:",
            f"  1. set {ENV_VAR} to the new key (as kept in {outcome.kept_in}) and {PREVIOUS_ENV_VAR} "
            "to the old one;",
            "  2. restart it. Until then it cannot open what is sealed with the new key.",
            f"Then remove {PREVIOUS_ENV_VAR} everywhere. {keep}",
        ]
    else:
        lines += [
            f"The new key replaced the old one in {outcome.key_location}; the old key is gone.",
            "Restart every running bot on this database: it still holds the old key.",
        ]
    return "\n".join(lines)


def _migrate_secrets(keys: KeySettings, settings: StoreSettings, target: str, dry_run: bool) -> int:
    """``migrate-secrets``: a progress bar on stderr while it works (at a terminal), the count and
    every failure on stdout; exit code 1 if any credential could not be moved or a copy was left."""
    from tqdm import tqdm

    from bot.keys import MasterKeyError
    from bot.keys.rotation import crash_at
    from bot.services.secret_moves import FAILPOINTS, MoveReport, SecretMover

    configure_logging(settings.log_level)
    try:
        checkpoint = crash_at(keys.failpoint, FAILPOINTS)
    except MasterKeyError as exc:
        print(f"connections-bot: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    titles: dict[str, str] = {}

    async def move(db: Database) -> MovePlan | MoveReport:
        stores = await _stores_for(db, target, settings.environment)
        titles.update({key: store.title for key, store in stores.items()})
        try:
            if dry_run:
                return await SecretMover(db, None, stores, settings.secret_path).plan(target)
            cipher = await _cipher_if_bound(db, keys)
            mover = SecretMover(db, cipher, stores, settings.secret_path, checkpoint=checkpoint)
            with tqdm(
                file=sys.stderr, disable=not sys.stderr.isatty(), unit="credential", desc=f"to {target}"
            ) as bar:
                return await mover.move_all(
                    target, on_start=lambda total: bar.reset(total=total), on_each=lambda _: bar.update()
                )
        finally:
            for store in stores.values():
                await store.close()

    again = " Run it again once the database answers: it goes on where it stopped"
    code, outcome = _on_database(keys.database_url, "move credentials on", move, after_failure=again)
    if outcome is None:
        return code
    title = titles.get(target, "the bot's database")
    if isinstance(outcome, MoveReport):
        print(_moves_report(outcome, title))
        return 0 if outcome.ok else 1
    print(_plan_report(outcome, title))
    return 0


async def _stores_for(db: Database, target: str, environment: Mapping[str, str]) -> dict[str, SecretStore]:
    """The target store and every store an active connection or a pending cleanup names, each
    built from the environment; raises ``ConfigError`` naming what is missing."""
    from bot.services.secret_moves import LOCAL, stores_in_use
    from bot.stores.registry import STORES

    needed = await stores_in_use(db) | ({target} - {LOCAL})
    stores: dict[str, SecretStore] = {}
    try:
        for key in sorted(needed):
            factory = STORES.get(key)
            if factory is None:
                why = "is the target" if key == target else "holds credentials of active connections"
                raise ConfigError(f"the {key} secret store {why} but is not available in this build")
            stores[key] = factory(environment)
    except BaseException:
        for store in stores.values():
            await store.close()
        raise
    return stores


async def _cipher_if_bound(db: Database, keys: KeySettings) -> Cipher | None:
    """The master key, loaded and proved as ``serve`` does; None while the database holds no sealed
    data at all (no start bound it to a key yet), since this command must not make one."""
    from bot.keys.guard import guard_master_key

    async with db.read() as tx:
        bound = await tx.key_canary.get() is not None or await tx.credentials.any_exists()
    if not bound:
        return None
    _, cipher = await guard_master_key(db, keys)
    return cipher


def _moves_report(report: MoveReport, title: str) -> str:
    target = report.target
    lines = []
    if report.cleaned:
        lines.append(
            f"Deleted {_count(report.cleaned, 'copy', 'copies')} an earlier run left in their old store."
        )
    if not (report.moved or report.changed or report.failed):
        if report.already:
            lines.append(f"Nothing to move: every active credential is already in {title}.")
        else:
            lines.append("Nothing to move: there is no active connection.")
    lines.append(
        f"moved {report.moved}, already in {target} {report.already}, changed meanwhile {report.changed}, "
        f"failed {len(report.failed)}"
    )
    for failure in report.failed:
        lines.append(
            f"  failed: “{failure.name}” ({failure.connection_id}, workspace {failure.team_id}), "
            f"{failure.where}: {failure.reason}"
        )
    if report.changed:
        lines.append(
            f"{_count(report.changed, 'credential', 'credentials')} changed while being moved (rotated, "
            "removed or moved by another run): run the command again to move them."
        )
    for left in report.left:
        if left.kept:
            lines.append(f"  kept: {left.where}: {left.reason}")
        else:
            lines.append(f"  not deleted yet: {left.where}: {left.reason}; the next run deletes it")
    return "\n".join(lines)


def _plan_report(plan: MovePlan, title: str) -> str:
    sources = ", ".join(f"from {source} {count}" for source, count in sorted(plan.to_move.items()))
    lines = [
        f"Dry run, nothing was changed: would move {plan.moving} to {title}"
        + (f" ({sources})" if sources else "")
        + f", already in {plan.target} {plan.already}."
    ]
    if plan.cleanups:
        lines.append(
            f"First, {_count(plan.cleanups, 'copy', 'copies')} an earlier run left would be deleted."
        )
    return "\n".join(lines)


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def _serve(settings: Settings) -> int:
    code = _migrate(settings)
    if code:
        return code
    try:
        return asyncio.run(_run(settings))
    except KeyboardInterrupt:
        return 0


async def _run(settings: Settings) -> int:
    import uvicorn

    from bot.app import BotApp
    from bot.runtime import StartupError

    app = BotApp(settings)
    try:
        # Started here rather than by the server, so a refusal is one line and exit code 2.
        await app.start()
    except StartupError as exc:
        print(f"connections-bot: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    server = uvicorn.Server(
        uvicorn.Config(app, host=settings.host, port=settings.port, log_config=None, proxy_headers=True)
    )
    try:
        await server.serve()
    finally:
        await app.stop()  # a no-op when the server's lifespan already stopped it
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
