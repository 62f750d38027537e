"""The bot as one ASGI application, started the same way wherever it runs: ``connections-bot
serve`` runs it under uvicorn, and the end-to-end tests serve the very same object.

Starting it (:meth:`BotApp.start`, or the server's lifespan) opens the database and proves the
master key, builds the Bolt app, connects Socket Mode when ``SLACK_APP_TOKEN`` is set, tells users
whose verification the last stop interrupted, and starts the periodic jobs. Stopping it stops
taking work (jobs, the socket), drains what Slack was already answered about, then closes.
"""

from __future__ import annotations

import logging
from typing import Any

import aiohttp
from slack_bolt.async_app import AsyncApp
from slack_sdk.errors import SlackApiError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from bot.cached_call import CachedCall
from bot.http_guard import SlackRequestGuard
from bot.installation import Installation, learn_installation, refuse_other_installations
from bot.jobs import recover_interrupted, start_jobs
from bot.listeners import register_listeners
from bot.logs import slack_logger
from bot.runtime import Services, StartupError, start_services
from bot.settings import Settings
from bot.stores.base import SecretStore

__all__ = ["HEALTH_CACHE_SECONDS", "SHUTDOWN_DRAIN_SECONDS", "BotApp", "build_bolt_app"]

logger = logging.getLogger(__name__)

SHUTDOWN_DRAIN_SECONDS = 20.0
HEALTH_CACHE_SECONDS = 5.0
"""How long a /healthz answer is reused: probes cannot turn it into load on the database pool."""


def build_bolt_app(services: Services, installation: Installation) -> AsyncApp:
    """The Bolt app: every listener registered, the services reachable from their context, and
    payloads meant for another installation than the token's refused."""
    app = AsyncApp(
        name="connections-bot",
        client=services.slack,
        logger=slack_logger(),
        # Socket Mode connections are authenticated by the app token; HTTP requests by signature,
        # which SlackRequestGuard checks before Bolt reads the body.
        request_verification_enabled=False,
        before_authorize=refuse_other_installations(installation),
        # Listeners ack and hand slow work to services.background themselves, so Bolt can answer as
        # soon as a listener returns (instead of polling for the ack every 10 ms), and shutdown can
        # drain every piece of after-ack work.
        process_before_response=True,
    )

    async def on_error(error: Exception, body: dict[str, Any]) -> None:
        # The body can hold modal state (secrets included), so only its type is logged.
        logger.error("unhandled error in a %s listener", body.get("type", "command"), exc_info=error)

    app.error(on_error)
    register_listeners(app, services)
    return app


class BotApp:
    """``POST /slack/events`` (commands, interactivity, events; not in Socket Mode) and
    ``GET /healthz``, behind a lifespan that starts and stops everything else."""

    def __init__(
        self,
        settings: Settings,
        *,
        drain_seconds: float = SHUTDOWN_DRAIN_SECONDS,
        health_cache_seconds: float = HEALTH_CACHE_SECONDS,
        store: SecretStore | None = None,
    ) -> None:
        self.settings = settings
        self._store = store
        """A secret store (tests) standing in for the one the settings name."""
        self.services: Services | None = None
        self._drain_seconds = drain_seconds
        self._health_cache_seconds = health_cache_seconds
        self._routes: Starlette | None = None

    async def start(self) -> Services:
        """Start serving's every part, once; raises :class:`StartupError` (a one-line message) when
        the bot must not start. Migrations must already be applied."""
        if self.services is not None:
            return self.services
        if self._store is None:
            services = await start_services(self.settings)
        else:
            services = await start_services(self.settings, store=self._store)
        try:
            bolt = build_bolt_app(services, await _learn_installation(services))
            if self.settings.slack_app_token is not None:
                await _connect_socket_mode(bolt, services, self.settings.slack_app_token.reveal())
        except BaseException:
            await services.close(0)
            raise
        # Before the first request: users left on "Verifying…" by the last stop are told.
        await recover_interrupted(services, services.slack)
        start_jobs(services, services.slack)
        self._routes = _routes(bolt, services, self._health_cache_seconds)
        self.services = services
        where = f"{self.settings.host}:{self.settings.port}"
        if self.settings.socket_mode:
            logger.info("connected to Slack in Socket Mode; /healthz on %s", where)
        else:
            logger.info("serving POST /slack/events and GET /healthz on %s", where)
        return services

    async def stop(self) -> None:
        """Stop taking work, finish (or, past the drain time, cancel) after-ack work, then close."""
        services, self.services = self.services, None
        if services is None:
            return
        logger.info("shutting down; finishing %d task(s) in flight", services.background.pending)
        await services.close(self._drain_seconds)
        logger.info("stopped")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if self._routes is None:
            raise RuntimeError("the app was called before it started")
        await self._routes(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        await receive()  # lifespan.startup
        try:
            await self.start()
        except StartupError as exc:
            await send({"type": "lifespan.startup.failed", "message": str(exc)})
            return
        except Exception as exc:
            # Unanswered, the server would take lifespan for unsupported and serve a dead app. A
            # driver's message can name hosts and users: the type only, the rest to the log.
            logger.exception("could not start")
            await send(
                {"type": "lifespan.startup.failed", "message": f"could not start ({type(exc).__name__})"}
            )
            return
        await send({"type": "lifespan.startup.complete"})
        await receive()  # lifespan.shutdown
        await self.stop()
        await send({"type": "lifespan.shutdown.complete"})


def _routes(bolt: AsyncApp, services: Services, health_cache_seconds: float) -> Starlette:
    settings = services.settings
    # Looked up on each refresh (not bound once), so a test can watch the calls.
    health = CachedCall(lambda: services.healthy(), ttl=health_cache_seconds)

    async def healthz(_: Request) -> Response:
        checks = await health()
        # A word (the previous key's state) informs; only a check (a bool) can fail.
        healthy = all(v for v in checks.values() if isinstance(v, bool))
        body = {
            "status": "ok" if healthy else "unavailable",
            **{k: v if isinstance(v, str) else "ok" if v else "failing" for k, v in checks.items()},
        }
        return JSONResponse(body, status_code=200 if healthy else 503)

    routes = [Route("/healthz", healthz, methods=["GET"])]
    if not settings.socket_mode and settings.slack_signing_secret is not None:
        guard = SlackRequestGuard(
            bolt.async_dispatch,
            signing_secret=settings.slack_signing_secret.reveal(),
            max_body_bytes=settings.max_body_bytes,
        )
        routes.append(Route("/slack/events", guard, methods=["POST"]))
    return Starlette(routes=routes)


async def _learn_installation(services: Services) -> Installation:
    try:
        installation = await learn_installation(services.slack)
    except SlackApiError as exc:
        error = exc.response.get("error") if exc.response is not None else "unknown error"
        raise StartupError(f"Slack refused SLACK_BOT_TOKEN ({error})") from None
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise StartupError(
            "could not reach Slack at SLACK_API_URL to learn where the bot is installed "
            f"({type(exc).__name__})"
        ) from None
    where = f"organisation {installation.enterprise_id}" if installation.org_wide else installation.team_id
    logger.info("bot token installed in %s (app %s)", where, installation.app_id or "unknown")
    return installation


async def _connect_socket_mode(app: AsyncApp, services: Services, app_token: str) -> None:
    """Open the Socket Mode connection; a token Slack refuses stops start-up (the SDK would retry
    every 10 seconds forever)."""
    from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

    try:
        opened = await app.client.apps_connections_open(app_token=app_token)
    except SlackApiError as exc:
        error = exc.response.get("error") if exc.response is not None else "unknown error"
        raise StartupError(f"Slack refused SLACK_APP_TOKEN ({error})") from None
    handler = AsyncSocketModeHandler(app, app_token)
    handler.client.wss_uri = opened["url"]
    await handler.connect_async()  # type: ignore[no-untyped-call]
    # Stop receiving envelopes before draining the work in flight, or that new work would be lost.
    services.stoppers.append(handler.close_async)
    services.extra_health["slack_socket"] = handler.client.is_connected
