"""Re-testing from Slack: ``/connections test <name>``, ``/connections test all``, the Re-test
button, and ``/connections status <name>``.

Answered after the ack; a health change is announced in the alert channel like the schedule's.
Each start counts against the user's re-test limit (:mod:`bot.services.limits`), before anything
else is done.
"""

from __future__ import annotations

from datetime import UTC, datetime

from slack_bolt.async_app import AsyncApp

from blocks.parts import refusal_message
from blocks.retests import (
    retest_all_running,
    retest_one_started,
    retest_report_message,
    retest_result_message,
    retest_started,
    status_message,
)
from bot import ids
from bot.domain import Refused
from bot.listeners.kit import Asker, Click, Command, OnClick
from bot.notify.connections import publish_home
from bot.notify.health import announcer
from bot.services.limits import Action
from bot.services.retests import BulkRunning

__all__ = ["RETEST_FAILED", "register", "retest", "retest_clicked", "status"]

SAY_WHICH = "Say which connection to re-test: `/connections test &lt;name&gt;`, or `/connections test all`."
SAY_WHICH_STATUS = "Say which connection: `/connections status &lt;name&gt;`."
RETEST_FAILED = "Something went wrong on our side while re-testing. Please try again in a minute."


def register(app: AsyncApp) -> None:
    app.action(ids.ACTION_RETEST)(OnClick(retest_clicked, failed=RETEST_FAILED))


async def _over_limit(asker: Asker) -> bool:
    """Count a re-test by the user; past their limit, tell them so (and do nothing)."""
    refused = await asker.services.limits.take(Action.RETEST, asker.team_id, asker.user_id)
    if refused is not None:
        await asker.tell(refusal_message(refused.message))
    return refused is not None


async def retest_clicked(click: Click) -> None:
    """Re-test on a connection (a list, a status reply, App Home, an alert)."""
    if await _over_limit(click):
        return
    services = click.services
    result = await services.retests.retest_one(
        click.team_id, click.user_id, connection_id=click.value, on_result=announcer(services, click.client)
    )
    if isinstance(result, Refused):
        await click.tell(refusal_message(result.message))
        return
    await click.tell(retest_result_message(result, services.providers.find(result.connection.provider_key)))
    if click.on_home:
        # Clicked on App Home: show the new health there too.
        await publish_home(services, click.client, click.team_id, click.user_id)


async def retest(command: Command) -> None:
    """``/connections test <name>`` or ``test all``: say what is being re-tested at once (to those
    who may: nobody else is promised anything), then report the results."""
    name, retests = command.name, command.services.retests
    if not name:
        await command.tell({"text": SAY_WHICH})
        return
    if await _over_limit(command):
        return
    refused = await retests.may_retest(command.user_id)
    if refused is not None:
        await command.tell(refusal_message(refused.message))
        return
    on_result = announcer(command.services, command.client)
    if name.lower() == "all":
        counted: list[int] = []

        async def started(count: int) -> None:
            counted.append(count)
            await command.tell(retest_started(count))

        report = await retests.retest_all(
            command.team_id, command.user_id, on_start=started, on_result=on_result
        )
        if isinstance(report, Refused):
            await command.tell(refusal_message(report.message))
        elif isinstance(report, BulkRunning):
            now = datetime.now(UTC)
            await command.tell(
                retest_all_running(report.started_by, report.started_at, report.total, report.done, now)
            )
        elif counted and counted[0]:  # with nothing to re-test, "there is none" was all to say
            await command.tell(retest_report_message(report, command.services.providers.by_key()))
        return
    await command.tell(retest_one_started(name))
    result = await retests.retest_one(command.team_id, command.user_id, name=name, on_result=on_result)
    if isinstance(result, Refused):
        await command.tell(refusal_message(result.message))
        return
    await command.tell(
        retest_result_message(result, command.services.providers.find(result.connection.provider_key))
    )


async def status(command: Command) -> None:
    """``/connections status <name>``: the connection, its last results, what can be done."""
    if not command.name:
        await command.tell({"text": SAY_WHICH_STATUS})
        return
    report = await command.services.queries.status(command.team_id, command.name)
    if isinstance(report, Refused):
        await command.tell(refusal_message(report.message))
        return
    provider = command.services.providers.find(report.connection.provider_key)
    await command.tell(
        status_message(
            report, provider, now=datetime.now(UTC), rotation_days=command.services.settings.rotation_days
        )
    )
