"""Which installation the bot token belongs to, and the refusal of payloads meant for another.

One bot token belongs to one workspace, or to one Enterprise Grid organisation when the app is
installed org-wide. Slack signs every request of the app with the same secret, whichever workspace
it comes from, so a signature alone does not say the payload is for this token's installation: an
app also installed elsewhere (or org deploy turned on in the manifest) would hand the bot another
workspace's clicks. A payload whose workspace, organisation or app is not the token's is refused
before Bolt authorises it: not acknowledged, one WARNING, nothing done.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from slack_bolt.context.async_context import AsyncBoltContext
from slack_bolt.response import BoltResponse
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

__all__ = ["Installation", "learn_installation", "refuse_other_installations"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Installation:
    """What ``auth.test`` (and ``bots.info``, for the app id) says of the bot token."""

    team_id: str
    enterprise_id: str | None
    org_wide: bool
    """Installed on the whole organisation: every workspace of ``enterprise_id`` is served."""
    app_id: str | None
    """None when ``bots.info`` could not be asked; the workspace is checked all the same."""

    def refusal(self, team_id: str | None, enterprise_id: str | None, app_id: str | None) -> str | None:
        """Why a payload naming these ids is not for this installation, or None when it is."""
        if self.app_id and app_id and app_id != self.app_id:
            return f"it is for app {app_id}, not this bot's app {self.app_id}"
        if not self.org_wide and team_id != self.team_id:
            return f"it comes from workspace {team_id}, not {self.team_id} where the bot is installed"
        if enterprise_id != self.enterprise_id:
            return f"it comes from organisation {enterprise_id}, not {self.enterprise_id}"
        return None


async def learn_installation(client: AsyncWebClient) -> Installation:
    """Ask Slack once, at start, where the bot token is installed; raises ``SlackApiError`` when
    Slack refuses the token."""
    auth = await client.auth_test()
    app_id: str | None = None
    try:
        # auth.test does not name the app; the bot's record does (users:read, in the manifest).
        bot = await client.bots_info(bot=auth["bot_id"])
        app_id = bot["bot"]["app_id"]
    except SlackApiError as exc:
        error = exc.response.get("error") if exc.response is not None else "unknown error"
        logger.warning(
            "could not learn this bot's app id (bots.info: %s); payloads are checked by workspace only. "
            "Give the bot the users:read scope to check the app too",
            error,
        )
    enterprise_id = auth.get("enterprise_id") or None
    return Installation(
        team_id=auth.get("team_id") or "",
        enterprise_id=enterprise_id,
        # Without the organisation's id, nothing could match: fall back to the workspace check.
        org_wide=bool(auth.get("is_enterprise_install")) and enterprise_id is not None,
        app_id=app_id,
    )


def refuse_other_installations(
    installation: Installation,
) -> Callable[..., Awaitable[BoltResponse | None]]:
    """A Bolt middleware (run before authorisation, so no Slack call is made for a refused
    payload) that answers 403 to a payload meant for another installation."""

    async def only_ours(
        context: AsyncBoltContext, body: Mapping[str, Any], next: Callable[[], Awaitable[None]]
    ) -> BoltResponse | None:
        # Slack's check of the Request URL names no workspace; Bolt answers it.
        if body.get("type") == "url_verification":
            await next()
            return None
        app_id = body.get("api_app_id")
        why = installation.refusal(
            context.team_id or None,
            context.enterprise_id or None,
            app_id if isinstance(app_id, str) else None,
        )
        if why is None:
            await next()
            return None
        logger.warning(
            "refused a signed %s payload: %s. Nothing was done; is the app installed in another "
            "workspace, or org deploy turned on?",
            str(body.get("type") or "slash command")[:40],
            why,
        )
        return BoltResponse(status=403, body="")

    return only_ours
