"""What every listener uses: the services (put in Bolt's context by :class:`AttachServices`), the
request reduced to what an answer needs (:class:`Click`, :class:`Command`), and :func:`after_ack`,
which runs the slow part after Slack has been answered and tells the user plainly if it breaks.

A button is routed to an answer through :class:`OnClick`: it acks at once, then runs the answer
with the click after the ack, so every answer is a plain ``async def answer(click)`` at module
level that a test can call directly.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

from slack_bolt.async_app import AsyncAck, AsyncBoltContext, AsyncRespond
from slack_sdk.web.async_client import AsyncWebClient

from bot.notify.slack_calls import NOTHING_CHANGED, open_modal, tell_user
from bot.payloads import parse_name, team_of
from bot.runtime import Services

__all__ = [
    "SERVICES_KEY",
    "Asker",
    "AttachServices",
    "Click",
    "Command",
    "OnClick",
    "after_ack",
    "services_of",
]

logger = logging.getLogger(__name__)

SERVICES_KEY = "services"
"""Where :class:`AttachServices` puts the services in Bolt's context."""


@dataclass(frozen=True)
class AttachServices:
    """A Bolt middleware that hands the services to every listener through its context."""

    services: Services

    async def __call__(self, context: AsyncBoltContext, next: Callable[[], Awaitable[None]]) -> None:
        context[SERVICES_KEY] = self.services
        await next()


def services_of(context: AsyncBoltContext) -> Services:
    services = context.get(SERVICES_KEY)
    if services is None:
        raise RuntimeError("the services middleware did not run (see bot.listeners.register_listeners)")
    return cast(Services, services)


@dataclass(frozen=True, kw_only=True)
class Asker:
    """Whoever is answered: the user who clicked or typed, where, and the clients to answer with."""

    services: Services
    client: AsyncWebClient
    respond: AsyncRespond
    team_id: str
    user_id: str
    trigger_id: str = ""

    async def tell(self, reply: dict[str, Any]) -> None:
        """A reply for this user alone (see :func:`tell_user`); never raises."""
        await tell_user(self.client, self.respond, self.user_id, reply)

    async def open_form(self, view: dict[str, Any], *, what: str, again: str) -> bool:
        """Open ``view`` with this request's trigger (see :func:`open_modal`)."""
        return await open_modal(
            self.client,
            self.respond,
            self.user_id,
            trigger_id=self.trigger_id,
            view=view,
            what=what,
            again=again,
        )


@dataclass(frozen=True, kw_only=True)
class Click(Asker):
    """A button click: who clicked what where (all of it untrusted, the button's value above all)."""

    action_id: str
    value: str
    view: Mapping[str, Any] = field(default_factory=dict)
    """The modal the button was in, if it was in one."""

    @classmethod
    def of(
        cls,
        context: AsyncBoltContext,
        body: dict[str, Any],
        action: dict[str, Any],
        client: AsyncWebClient,
        respond: AsyncRespond,
    ) -> Click:
        return cls(
            services=services_of(context),
            client=client,
            respond=respond,
            team_id=team_of(context, body),
            user_id=str(body["user"]["id"]),
            action_id=str(action.get("action_id", "")),
            value=str(action.get("value", "")),
            trigger_id=str(body.get("trigger_id", "")),
            view=body.get("view") or {},
        )

    @property
    def on_home(self) -> bool:
        """A click on App Home: no message to answer through, so replies go by direct message."""
        return not self.respond.response_url


@dataclass(frozen=True, kw_only=True)
class Command(Asker):
    """``/connections <sub-command> <argument>``, as one user typed it."""

    sub: str
    argument: str

    @classmethod
    def of(
        cls, context: AsyncBoltContext, command: dict[str, Any], client: AsyncWebClient, respond: AsyncRespond
    ) -> Command:
        sub, _, argument = (command.get("text") or "").strip().partition(" ")
        return cls(
            services=services_of(context),
            client=client,
            respond=respond,
            team_id=team_of(context, command),
            user_id=str(command.get("user_id", "")),
            sub=sub.lower(),
            argument=argument.strip(),
            trigger_id=str(command.get("trigger_id", "")),
        )

    @property
    def name(self) -> str:
        """The argument as a connection name (see :func:`bot.payloads.parse_name`)."""
        return parse_name(self.argument)

    async def tell(self, reply: dict[str, Any]) -> None:
        """An ephemeral reply through the command's response_url; never raises."""
        try:
            await self.respond(response_type="ephemeral", **reply)
        except Exception as exc:
            logger.warning("could not answer /connections %s: %s", self.sub or "list", type(exc).__name__)


def after_ack(
    asker: Asker, work: Coroutine[Any, Any, object], *, name: str, failed: str = NOTHING_CHANGED
) -> None:
    """Run ``work`` after Slack has been answered; if it breaks, log why and tell the user
    ``failed`` instead of leaving them in silence."""
    asker.services.background.spawn(_answering(asker, work, name, failed), name=name)


async def _answering(asker: Asker, work: Coroutine[Any, Any, object], name: str, failed: str) -> None:
    try:
        await work
    except Exception:
        logger.exception("%s failed", name)
        await asker.tell({"text": failed})


@dataclass(frozen=True)
class OnClick:
    """The Bolt listener of a button: acks at once, then runs ``answer`` after the ack (see
    :func:`after_ack`; ``failed`` is what the user is told if it breaks)."""

    answer: Callable[[Click], Coroutine[Any, Any, object]]
    failed: str = NOTHING_CHANGED

    async def __call__(
        self,
        ack: AsyncAck,
        body: dict[str, Any],
        action: dict[str, Any],
        client: AsyncWebClient,
        respond: AsyncRespond,
        context: AsyncBoltContext,
    ) -> None:
        await ack()
        click = Click.of(context, body, action, client, respond)
        after_ack(click, self.answer(click), name=f"action:{click.action_id}", failed=self.failed)
