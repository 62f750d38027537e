"""Wiring: from settings to the running services, and the start-up checks that guard the data."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta

import aiohttp
import httpx
from slack_sdk.http_retry.async_handler import AsyncRetryHandler
from slack_sdk.http_retry.builtin_async_handlers import AsyncConnectionErrorRetryHandler
from slack_sdk.http_retry.request import HttpRequest
from slack_sdk.http_retry.response import HttpResponse
from slack_sdk.http_retry.state import RetryState
from slack_sdk.web.async_client import AsyncWebClient

from bot.background import Background
from bot.crypto import Cipher
from bot.keys import MasterKeyError
from bot.keys.guard import guard_master_key, key_opens_database
from bot.keys.previous import log_previous_key, previous_key_state
from bot.keys.sources import LoadedKey
from bot.pools import provider_client
from bot.providers.registry import ProviderRegistry, build_registry
from bot.services.admins import AdminPolicy
from bot.services.approvals import ApprovalService
from bot.services.audit import AuditService
from bot.services.interrupted import InterruptedVerifications, ProcessOwner
from bot.services.limits import Action, UserLimits
from bot.services.permissions import RetestPolicy
from bot.services.queries import Queries
from bot.services.reminders import RotationReminders
from bot.services.removal import RemovalService
from bot.services.retests import RetestService
from bot.services.submissions import Submissions
from bot.settings import ConfigError, Settings
from bot.slack_directory import SlackGroupDirectory
from bot.store.uow import Database
from bot.stores.base import SecretStore
from bot.stores.registry import build_store

__all__ = [
    "PROVIDER_TIMEOUT_SECONDS",
    "Services",
    "SlackRateLimitWait",
    "StartupError",
    "slack_retry_handlers",
    "start_services",
]

logger = logging.getLogger(__name__)

PROVIDER_TIMEOUT_SECONDS = 10.0
SLACK_TIMEOUT_SECONDS = 10.0
GROUP_LOOKUP_SECONDS = 2.0
DB_HEADROOM = 4
INTERACTIVE_CONNECTIONS = 32
"""The pool of provider connections for verifications a person waits for (creations, rotations,
one re-test), apart from the bulk re-tests' pool."""
PER_HOST_REQUESTS = 8
"""Of the interactive pool, the most one host may use at once (forms can name any host)."""
SLACK_RATE_LIMIT_MAX_WAIT_SECONDS = 30.0
"""The longest ``Retry-After`` the bot waits out before trying a Web API call again."""
SLACK_RATE_LIMIT_RETRIES = 2
SLACK_DEADLINE_METHODS = frozenset({"views.open", "views.push", "usergroups.users.list"})
"""Web API methods called against Slack's 3 seconds (a trigger_id's life, an admin check inside
an ack): waiting out a rate limit would outlast what the call is for, so they fail at once."""


class StartupError(Exception):
    """The bot must not start; the message is one line, safe to print, and says what to do."""


class SlackRateLimitWait(AsyncRetryHandler):
    """Waits out a ``ratelimited`` answer (HTTP 429) for as long as Slack's ``Retry-After`` asks,
    then tries the call again, ``max_retry_count`` times at most. Work done after the ack (a
    verification result, an approval request, an alert, a Home tab) then arrives late instead of
    never. A call in :data:`SLACK_DEADLINE_METHODS`, or one asked to wait longer than
    ``max_wait_seconds``, fails at once with Slack's error for its caller to report."""

    def __init__(
        self,
        *,
        max_retry_count: int = SLACK_RATE_LIMIT_RETRIES,
        max_wait_seconds: float = SLACK_RATE_LIMIT_MAX_WAIT_SECONDS,
    ) -> None:
        super().__init__(max_retry_count=max_retry_count)
        self.max_wait_seconds = max_wait_seconds

    async def _can_retry_async(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> bool:
        if response is None or response.status_code != 429:
            return False
        if _method_of(request) in SLACK_DEADLINE_METHODS:
            return False
        return 0 <= _retry_after(response) <= self.max_wait_seconds

    async def prepare_for_next_attempt_async(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> None:
        wait = _retry_after(response) if response is not None else 1.0
        logger.warning("Slack rate-limited %s; trying again in %.0f s", _method_of(request), wait)
        state.next_attempt_requested = True
        # A little spread, so replicas limited together do not all come back at the same instant.
        await asyncio.sleep(wait + random.uniform(0, 0.25))
        state.increment_current_attempt()


def _method_of(request: HttpRequest) -> str:
    return request.url.rstrip("/").rsplit("/", 1)[-1]


def _retry_after(response: HttpResponse) -> float:
    """Slack's ``Retry-After`` in seconds (1 when it is missing or unreadable, as Slack's SDKs do)."""
    for name, values in response.headers.items():
        if name.lower() == "retry-after" and values:
            try:
                return float(values[0])
            except ValueError:
                break
    return 1.0


def slack_retry_handlers() -> list[AsyncRetryHandler]:
    """What the Web API client retries: a dropped connection once (the SDK's default), and a rate
    limit after the wait Slack asks for."""
    return [AsyncConnectionErrorRetryHandler(), SlackRateLimitWait()]


@dataclass
class Services:
    """Everything a listener or a job needs: the settings, the shared clients, and the use cases."""

    settings: Settings
    db: Database
    cipher: Cipher
    key: LoadedKey
    providers: ProviderRegistry
    http: httpx.AsyncClient
    """Provider calls a person waits for (see :mod:`bot.pools`)."""
    bulk_http: httpx.AsyncClient
    """Provider calls of bulk and scheduled re-tests."""
    slack: AsyncWebClient
    background: Background
    queries: Queries
    submissions: Submissions
    approvals: ApprovalService
    retests: RetestService
    removal: RemovalService
    reminders: RotationReminders
    audit: AuditService
    interrupted: InterruptedVerifications
    """Verifications that a stopped process or a missed deadline left unfinished."""
    limits: UserLimits
    """How often one person may submit, re-test and rotate."""
    stoppers: list[Callable[[], Awaitable[object]]] = field(default_factory=list)
    """Run first at shutdown, to stop taking new work (close the Socket Mode connection)."""
    closers: list[Callable[[], Awaitable[object]]] = field(default_factory=list)
    """Run after the drain, to release what the work used."""
    extra_health: dict[str, Callable[[], Awaitable[bool]]] = field(default_factory=dict)
    """Further /healthz checks by name (the Socket Mode connection)."""
    store: SecretStore | None = None
    """Where approved credentials live (``CONNECTIONS_SECRET_STORE``); None for ``local``."""

    async def healthy(self) -> dict[str, bool | str]:
        """What /healthz reports: the database answers, and the master key opens its canary; with
        a previous master key, whether any row still needs it (a word, never a failure); with a
        secret store, that it answers and accepts the bot."""
        database = await self.db.ping()
        checks: dict[str, bool | str] = {
            "database": database,
            "master_key": database and await key_opens_database(self.db, self.cipher),
        }
        if (previous := await previous_key_state(self.db, self.cipher)) is not None:
            checks["previous_master_key"] = previous
        if self.store is not None:
            checks["secret_store"] = await _store_healthy(self.store)
        for name, check in self.extra_health.items():
            checks[name] = await check()
        return checks

    async def close(self, drain_seconds: float = 10.0) -> None:
        """Stop taking work, finish (or, past ``drain_seconds``, cancel) after-ack work, then
        release connections."""
        for stop in self.stoppers:
            await stop()
        await self.background.drain(drain_seconds)
        for close in reversed(self.closers):
            await close()
        await self.http.aclose()
        await self.bulk_http.aclose()
        if self.store is not None:
            await self.store.close()
        await self.db.dispose()


async def _store_healthy(store: SecretStore) -> bool:
    """Whether the store answers and accepts the bot (why not goes to the log, never to /healthz)."""
    try:
        check = await store.check()
    except Exception as exc:  # a store must not raise here; if one does, it is not healthy
        logger.warning("the secret store %s could not be checked: %s", store.title, type(exc).__name__)
        return False
    if not check.ok:
        logger.warning("the secret store %s is not usable: %s", store.title, check.detail)
    return check.ok


async def _warn_about_unmigrated(db: Database, store: SecretStore | None) -> None:
    """Log a warning for the active connections whose credential is not where the bot is now set
    to keep credentials: another store (the bot cannot reach it), or its own database while a
    store is configured (an active credential should then live in the store only)."""
    async with db.read() as tx:
        counts = await tx.connections.active_by_store()
    configured = None if store is None else store.key
    to = "local" if store is None else store.key
    others = sum(count for held_by, count in counts.items() if held_by is not None and held_by != configured)
    if others:
        logger.warning(
            "%d active connection(s) have their credential in another secret store than the one "
            "configured (CONNECTIONS_SECRET_STORE=%s): the bot cannot re-test, rotate or remove them; "
            "move them with `connections-bot migrate-secrets --to %s`",
            others,
            to,
            to,
        )
    if store is not None and counts.get(None, 0):
        logger.warning(
            "%d active connection(s) still have their credential sealed in the bot's database, not in "
            "%s: move them with `connections-bot migrate-secrets --to %s`",
            counts[None],
            store.title,
            to,
        )


async def start_services(
    settings: Settings, *, http: httpx.AsyncClient | None = None, store: SecretStore | None = None
) -> Services:
    """Open the database, load the master key (refusing one that does not open stored data) and
    build the services. Migrations must already be applied. ``store`` (tests) stands in for the
    secret store the settings name."""
    try:
        store = store if store is not None else build_store(settings)
    except ConfigError as exc:
        raise StartupError(str(exc)) from None
    # Room for every re-test recording at once, plus the requests Slack sends meanwhile.
    db = Database.from_url(settings.database_url, pool_size=settings.retest_concurrency + DB_HEADROOM)
    try:
        loaded, cipher = await guard_master_key(db, settings)
        await _warn_about_unmigrated(db, store)
    except MasterKeyError as exc:
        await db.dispose()
        if store is not None:
            await store.close()
        raise StartupError(str(exc)) from None
    except BaseException:
        await db.dispose()
        if store is not None:
            await store.close()
        raise
    if loaded.warning:
        logger.warning("%s", loaded.warning)
    logger.info("master key %s loaded from %s", loaded.key.key_id, loaded.location)
    await log_previous_key(db, cipher)
    if store is not None:
        logger.info("approved credentials go to %s at %s", store.title, settings.secret_path.template)
    client = http or provider_client(
        INTERACTIVE_CONNECTIONS, timeout=PROVIDER_TIMEOUT_SECONDS, per_host=PER_HOST_REQUESTS
    )
    # A given client (tests) serves both; closing it twice is harmless.
    bulk = http or provider_client(settings.retest_concurrency, timeout=PROVIDER_TIMEOUT_SECONDS)
    # One session for every Web API call: keep-alive saves a TLS handshake with Slack per call.
    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=SLACK_TIMEOUT_SECONDS))
    slack = AsyncWebClient(
        token=settings.slack_bot_token.reveal(),
        base_url=settings.slack_api_url,
        session=session,
        timeout=int(SLACK_TIMEOUT_SECONDS),
        logger=logging.getLogger("connections_bot.slack.web"),
        retry_handlers=slack_retry_handlers(),
    )
    providers = build_registry(settings)
    # A rejection is decided before its modal is answered, inside Slack's 3 seconds.
    directory = SlackGroupDirectory(slack, timeout_seconds=GROUP_LOOKUP_SECONDS)
    admins = AdminPolicy(settings.admins, settings.admin_group, directory)
    oncall = AdminPolicy(frozenset(), settings.oncall_group, directory) if settings.oncall_group else None
    # Marks the verifications this process runs, so a later start can tell which ones it abandoned.
    owner = ProcessOwner.current()
    services = Services(
        settings=settings,
        db=db,
        cipher=cipher,
        key=loaded,
        providers=providers,
        http=client,
        bulk_http=bulk,
        slack=slack,
        background=Background(),
        queries=Queries(db, providers, admins, allow_self_approval=settings.allow_self_approval),
        submissions=Submissions(db, cipher, providers, client, admins, owner=owner),
        approvals=ApprovalService(
            db,
            providers,
            admins,
            ttl=timedelta(hours=settings.approval_ttl_hours),
            allow_self_approval=settings.allow_self_approval,
            store=store,
            cipher=cipher,
            paths=settings.secret_path,
        ),
        retests=RetestService(
            db,
            cipher,
            providers,
            bulk,
            RetestPolicy(oncall, admins),
            interval=timedelta(minutes=settings.retest_interval_minutes),
            concurrency=settings.retest_concurrency,
            interactive_http=client,
            store=store,
        ),
        removal=RemovalService(db, providers, admins, store=store),
        reminders=RotationReminders(db, providers, rotation_days=settings.rotation_days),
        audit=AuditService(db, providers, admins),
        interrupted=InterruptedVerifications(db, owner),
        limits=UserLimits(
            {
                Action.SUBMISSION: settings.limit_submissions_per_minute,
                Action.RETEST: settings.limit_retests_per_minute,
                Action.ROTATION: settings.limit_rotations_per_minute,
            }
        ),
        store=store,
    )
    services.closers.append(session.close)
    if not settings.admin_channel:
        logger.warning(
            "CONNECTIONS_ADMIN_CHANNEL is not set: new connections will wait for approval with no "
            "request posted; set it to the id of the channel where admins decide"
        )
    return services
