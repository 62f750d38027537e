"""The Bolt app and the ASGI application that serves it."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from slack_bolt.adapter.starlette.async_handler import AsyncSlackRequestHandler
from slack_bolt.async_app import AsyncApp
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from bot.listeners import register_listeners
from bot.listeners.expiry import recover_interrupted, start_expiry
from bot.listeners.health import start_health_checks
from bot.logs import slack_logger
from bot.runtime import Services, start_services
from bot.settings import Settings

__all__ = ["ServicesApp", "build_app", "build_asgi"]

logger = logging.getLogger(__name__)

SHUTDOWN_DRAIN_SECONDS = 20.0


def build_app(services: Services) -> AsyncApp:
    settings = services.settings
    bolt_logger = slack_logger()
    app = AsyncApp(
        name="connections-bot",
        client=services.slack,
        signing_secret=settings.slack_signing_secret.reveal() if settings.slack_signing_secret else None,
        logger=bolt_logger,
        # Socket Mode connections are authenticated by the app token; HTTP requests by signature.
        request_verification_enabled=not settings.socket_mode,
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


def build_asgi(app: AsyncApp, services: Services, *, own_services: bool = True) -> Starlette:
    """``POST /slack/events`` (commands, interactivity, events) and ``GET /healthz``."""
    handler = AsyncSlackRequestHandler(app)

    async def slack_events(request: Request) -> Response:
        return await handler.handle(request)

    async def healthz(_: Request) -> Response:
        checks = await services.healthy()
        healthy = all(checks.values())
        body = {
            "status": "ok" if healthy else "unavailable",
            **{k: "ok" if v else "failing" for k, v in checks.items()},
        }
        return JSONResponse(body, status_code=200 if healthy else 503)

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        if own_services:
            # Before the first request: users left on "Verifying…" by the last stop are told.
            await recover_interrupted(services, app.client)
            # Periodic jobs run only while serving; Services.close() stops them first.
            start_expiry(services, app.client)
            start_health_checks(services, app.client)
        yield
        if own_services:
            logger.info("shutting down; finishing %d task(s) in flight", services.background.pending)
            await services.close(SHUTDOWN_DRAIN_SECONDS)
            logger.info("stopped")

    routes = [Route("/healthz", healthz, methods=["GET"])]
    if not services.settings.socket_mode:
        routes.append(Route("/slack/events", slack_events, methods=["POST"]))
    return Starlette(routes=routes, lifespan=lifespan)


class ServicesApp:
    """An ASGI app that starts its services during the server's lifespan startup (and so on the
    server's event loop), for servers that import an app rather than run ``connections-bot serve``.
    Migrations must already be applied; a start-up refusal fails the server's start."""

    def __init__(self, settings: Settings, *, drain_seconds: float = SHUTDOWN_DRAIN_SECONDS) -> None:
        self._settings = settings
        self._drain_seconds = drain_seconds
        self._inner: Starlette | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if self._inner is None:
            raise RuntimeError("the app was called before its lifespan started it")
        await self._inner(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        await receive()  # lifespan.startup
        try:
            services = await start_services(self._settings)
        except Exception as exc:
            await send({"type": "lifespan.startup.failed", "message": str(exc)})
            return
        self._inner = build_asgi(build_app(services), services, own_services=False)
        await recover_interrupted(services, services.slack)
        start_expiry(services, services.slack)
        start_health_checks(services, services.slack)
        await send({"type": "lifespan.startup.complete"})
        await receive()  # lifespan.shutdown
        await services.close(self._drain_seconds)
        await send({"type": "lifespan.shutdown.complete"})
