"""Re-testing from Slack: ``/connections test <name>``, ``/connections test all``, the Re-test
button, and ``/connections status <name>``.

Everything is answered after the ack: the command's listener has already acked when these run,
and a click is acked before the re-test starts. Results go back through the response_url of the
command or the clicked message (a direct message for a click on App Home), and any health change
is announced in the alert channel like the schedule's.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncBoltContext, AsyncRespond
from slack_sdk.web.async_client import AsyncWebClient

from blocks.retests import (
    refusal_message,
    retest_one_started,
    retest_report_message,
    retest_result_message,
    retest_started,
    status_message,
)
from bot import ids
from bot.listeners.events import publish_home
from bot.listeners.health import announcer
from bot.listeners.replies import tell_user
from bot.listeners.state import team_of
from bot.runtime import Services
from bot.services.permissions import Refused

__all__ = ["register", "retest_command", "status_command"]

logger = logging.getLogger(__name__)

SAY_WHICH = "Say which connection to re-test: `/connections test &lt;name&gt;`, or `/connections test all`."
SAY_WHICH_STATUS = "Say which connection: `/connections status &lt;name&gt;`."
FAILED = "Something went wrong on our side while re-testing. Please try again in a minute."


def register(app: AsyncApp, services: Services) -> None:
    async def retest_clicked(
        ack: AsyncAck,
        action: dict[str, Any],
        body: dict[str, Any],
        client: AsyncWebClient,
        respond: AsyncRespond,
        context: AsyncBoltContext,
    ) -> None:
        await ack()
        team_id, actor = team_of(context, body), str(body["user"]["id"])
        connection_id = str(action.get("value", ""))

        async def retest() -> None:
            try:
                result = await services.retests.retest_one(
                    team_id, actor, connection_id=connection_id, on_result=announcer(services, client)
                )
            except Exception:
                logger.exception("re-testing connection %s failed", connection_id)
                await tell_user(client, respond, actor, {"text": FAILED})
                return
            if isinstance(result, Refused):
                await tell_user(client, respond, actor, refusal_message(result.message))
                return
            provider = services.providers.find(result.connection.provider_key)
            await tell_user(client, respond, actor, retest_result_message(result, provider))
            if not respond.response_url:
                # Clicked on App Home: show the new health there too.
                await publish_home(services, client, team_id, actor)

        services.background.spawn(retest(), name="action:retest")

    app.action(ids.ACTION_RETEST)(retest_clicked)


async def retest_command(
    services: Services,
    client: AsyncWebClient,
    respond: AsyncRespond,
    team_id: str,
    user_id: str,
    argument: str,
) -> None:
    """``/connections test <name>`` or ``test all``: say what is being re-tested at once, then
    report the results."""
    if not argument:
        await respond(response_type="ephemeral", text=SAY_WHICH)
        return
    try:
        if argument.lower() == "all":
            await _retest_all(services, client, respond, team_id, user_id)
        else:
            await _retest_one(services, client, respond, team_id, user_id, argument)
    except Exception:
        logger.exception("re-testing from /connections failed")
        await respond(response_type="ephemeral", text=FAILED)


async def _retest_all(
    services: Services, client: AsyncWebClient, respond: AsyncRespond, team_id: str, user_id: str
) -> None:
    refused = await services.retests.may_retest(user_id)
    if refused is not None:
        await respond(response_type="ephemeral", **refusal_message(refused.message))
        return
    count = await services.retests.count_active(team_id)
    await respond(response_type="ephemeral", **retest_started(count))
    if count == 0:
        return
    report = await services.retests.retest_all(team_id, user_id, on_result=announcer(services, client))
    if isinstance(report, Refused):
        await respond(response_type="ephemeral", **refusal_message(report.message))
        return
    await respond(response_type="ephemeral", **retest_report_message(report, services.providers.by_key()))


async def _retest_one(
    services: Services,
    client: AsyncWebClient,
    respond: AsyncRespond,
    team_id: str,
    user_id: str,
    name: str,
) -> None:
    # Refuse before saying "Re-testing…": someone who may not re-test is promised nothing.
    refused = await services.retests.may_retest(user_id)
    if refused is not None:
        await respond(response_type="ephemeral", **refusal_message(refused.message))
        return
    await respond(response_type="ephemeral", **retest_one_started(name))
    result = await services.retests.retest_one(
        team_id, user_id, name=name, on_result=announcer(services, client)
    )
    if isinstance(result, Refused):
        await respond(response_type="ephemeral", **refusal_message(result.message))
        return
    provider = services.providers.find(result.connection.provider_key)
    await respond(response_type="ephemeral", **retest_result_message(result, provider))


async def status_command(services: Services, respond: AsyncRespond, team_id: str, name: str) -> None:
    """``/connections status <name>``: the connection, its last results, what can be done."""
    if not name:
        await respond(response_type="ephemeral", text=SAY_WHICH_STATUS)
        return
    report = await services.status.status(team_id, name)
    if isinstance(report, Refused):
        await respond(response_type="ephemeral", **refusal_message(report.message))
        return
    provider = services.providers.find(report.connection.provider_key)
    await respond(
        response_type="ephemeral",
        **status_message(
            report, provider, now=datetime.now(UTC), rotation_days=services.settings.rotation_days
        ),
    )
