"""What re-tests tell Slack: alerts, reminders and recoveries in the alert channel, and rotation
reminders by direct message. Slack failures are logged, never raised: the health is recorded
either way, and an alert that did not go out is raised again by the next re-test."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from functools import partial
from typing import TYPE_CHECKING, Any

from slack_sdk.web.async_client import AsyncWebClient

from blocks.alerts import (
    health_alert,
    recovery_reply,
    resolved_alert,
    rotation_reminder_dm,
    still_failing_reminder,
)
from bot.domain import ChangeKind, HealthChange, RetestResult
from bot.notify.slack_calls import SLACK_ERRORS, channel_failure, slack_failure

if TYPE_CHECKING:
    from bot.runtime import Services

__all__ = ["announce_change", "announcer", "send_rotation_reminders"]

logger = logging.getLogger(__name__)


async def announce_change(services: Services, client: AsyncWebClient, result: RetestResult) -> None:
    """Post what changed to the alert channel: an alert for a connection that started failing
    (remembered, so reminders and the recovery reply in its thread), a reminder in that thread
    for one still failing a day later, a follow-up when it works again. Slack failures are
    logged, never raised: the health is recorded either way."""
    channel, change = services.settings.alert_channel, result.change
    if change is None:
        return
    if not channel:
        logger.warning(
            "connection %s is %s but no alert channel is set (CONNECTIONS_ALERT_CHANNEL or "
            "CONNECTIONS_ADMIN_CHANNEL)",
            result.connection.id,
            change.kind.value,
        )
        return
    provider = services.providers.find(result.connection.provider_key)
    # Follow-ups go in the alert's thread when there is one.
    where: dict[str, Any] = {"channel": channel}
    if change.alert_channel and change.alert_ts:
        where = {"channel": change.alert_channel, "thread_ts": change.alert_ts}
    try:
        if change.kind is ChangeKind.RECOVERED:
            await client.chat_postMessage(**where, **recovery_reply(result))
            if change.alert_channel and change.alert_ts:
                # The alert's buttons would invite action on something already fixed.
                await client.chat_update(
                    channel=change.alert_channel, ts=change.alert_ts, **resolved_alert(result)
                )
        elif change.kind is ChangeKind.STILL_FAILING and change.alert_ts:
            await client.chat_postMessage(**where, **still_failing_reminder(result, provider))
        else:
            # A new failure, or one whose alert never made it to Slack: a fresh alert.
            posted = await client.chat_postMessage(channel=channel, **health_alert(result, provider))
            await services.retests.record_alert(
                result.team_id, result.connection.id, str(posted["channel"]), str(posted["ts"])
            )
    except SLACK_ERRORS as exc:
        await _not_announced(services, result, change, channel, exc)
    except Exception:
        logger.exception("could not announce the health of connection %s", result.connection.id)


async def _not_announced(
    services: Services, result: RetestResult, change: HealthChange, channel: str, exc: BaseException
) -> None:
    """Log why a notice did not reach the channel, naming the setting to fix; an alert or a
    reminder that did not go out is raised again by the next re-test that finds the connection
    still failing, rather than counted as sent."""
    setting = services.settings.alert_channel_setting
    failing = change.kind is not ChangeKind.RECOVERED
    logger.warning(
        "could not post the %s notice about connection %s to %s %s: %s%s",
        change.kind.value,
        result.connection.id,
        setting,
        channel,
        channel_failure(exc, setting),
        "; the next re-test that finds it still failing posts it again" if failing else "",
    )
    if failing:
        try:
            await services.retests.alert_not_posted(result.team_id, result.connection.id)
        except Exception:
            logger.exception(
                "could not mark the alert about connection %s as not posted", result.connection.id
            )


def announcer(services: Services, client: AsyncWebClient) -> Callable[[RetestResult], Awaitable[None]]:
    """Announces each re-test's change as soon as it is recorded (rather than after a whole
    run, which a shutdown could cut short, or after the reply to the user, which can fail)."""
    return partial(announce_change, services, client)


async def send_rotation_reminders(services: Services, client: AsyncWebClient) -> int:
    """DM the owners of credentials past the rotation period (each at most weekly); how many."""
    sent = 0
    for reminder in await services.reminders.due():
        connection = reminder.connection
        try:
            await client.chat_postMessage(
                channel=connection.created_by,
                **rotation_reminder_dm(
                    connection, age_days=reminder.age_days, rotation_days=services.reminders.rotation_days
                ),
            )
            sent += 1
        except Exception as exc:
            # Claimed already: the next reminder comes a week later rather than in a loop.
            logger.warning(
                "could not remind %s to rotate %s: %s",
                connection.created_by,
                connection.id,
                slack_failure(exc),
            )
    return sent
