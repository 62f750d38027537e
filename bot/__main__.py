"""The ``connections-bot`` command: ``serve`` runs the bot, ``migrate`` applies schema migrations."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence

from bot.logs import configure_logging
from bot.settings import ConfigError, Settings, load_settings

__all__ = ["main"]

logger = logging.getLogger("connections_bot")

EXIT_CONFIG = 2


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="connections-bot", description=__doc__)
    parser.add_argument("--env-file", default=".env", help="read settings from this file too (default: .env)")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve", help="apply pending migrations, then run the Slack app")
    commands.add_parser("migrate", help="apply pending database migrations and exit")
    args = parser.parse_args(argv)

    try:
        settings = load_settings(args.env_file)
    except ConfigError as exc:
        print(f"connections-bot: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    configure_logging(settings.log_level)
    if args.command == "migrate":
        return _migrate(settings)
    return _serve(settings)


def _migrate(settings: Settings) -> int:
    from bot.store import StoreError
    from bot.store.migrate import upgrade_to_head

    try:
        upgrade_to_head(settings.database_url)
    except StoreError as exc:
        print(f"connections-bot: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    logger.info("database is at the latest schema")
    return 0


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

    from bot.app import build_app, build_asgi
    from bot.runtime import StartupError, start_services

    try:
        services = await start_services(settings)
    except StartupError as exc:
        print(f"connections-bot: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    app = build_app(services)
    asgi = build_asgi(app, services)
    server = uvicorn.Server(
        uvicorn.Config(asgi, host=settings.host, port=settings.port, log_config=None, proxy_headers=True)
    )
    socket_mode = None
    if settings.socket_mode and settings.slack_app_token is not None:
        from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

        socket_mode = AsyncSocketModeHandler(app, settings.slack_app_token.reveal())
        await socket_mode.connect_async()  # type: ignore[no-untyped-call]
        logger.info("connected to Slack in Socket Mode; /healthz on %s:%s", settings.host, settings.port)
    else:
        logger.info("serving POST /slack/events and GET /healthz on %s:%s", settings.host, settings.port)
    try:
        await server.serve()
    finally:
        if socket_mode is not None:
            await socket_mode.close_async()  # type: ignore[no-untyped-call]
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
