"""Slack user groups as the :class:`~bot.services.admins.GroupDirectory` behind the admin policy.

Needs the ``usergroups:read`` scope. Every failure becomes
:class:`~bot.services.admins.DirectoryUnavailable` with a short, safe reason, which the policy turns
into a refusal: Slack's error code (``missing_scope``, ``no_such_subteam``, ``ratelimited``),
``timeout`` or ``unreachable``. The whole lookup, retries included, is bounded by one deadline so a
click never hangs on it.
"""

from __future__ import annotations

import asyncio
import re

import aiohttp
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web.async_client import AsyncWebClient

from bot.services.admins import DirectoryUnavailable

__all__ = ["LOOKUP_TIMEOUT_SECONDS", "SlackGroupDirectory"]

LOOKUP_TIMEOUT_SECONDS = 5.0

# Slack's error codes are short snake_case words; anything else from the wire is not repeated.
_ERROR_CODE = re.compile(r"[a-z0-9_.]{1,64}")


class SlackGroupDirectory:
    """Members of a Slack user group, from ``usergroups.users.list`` (disabled groups excluded)."""

    def __init__(self, client: AsyncWebClient, *, timeout_seconds: float = LOOKUP_TIMEOUT_SECONDS) -> None:
        if timeout_seconds <= 0:
            raise ValueError("timeout_seconds must be positive")
        self._client = client
        self._timeout = timeout_seconds

    async def members(self, group_id: str) -> frozenset[str]:
        """The user ids in ``group_id``; raises :class:`DirectoryUnavailable`."""
        try:
            async with asyncio.timeout(self._timeout):
                response = await self._client.usergroups_users_list(
                    usergroup=group_id, include_disabled=False
                )
        # The causes are dropped on purpose: a SlackApiError carries the request, token included.
        except SlackApiError as exc:
            raise DirectoryUnavailable(_error_code(exc)) from None
        except TimeoutError:
            # Before aiohttp.ClientError: aiohttp's own timeouts are both.
            raise DirectoryUnavailable("timeout") from None
        except (aiohttp.ClientError, OSError):
            raise DirectoryUnavailable("unreachable") from None
        except SlackClientError:
            raise DirectoryUnavailable("unexpected_response") from None
        users = response.get("users")
        if not isinstance(users, list) or not all(isinstance(user, str) for user in users):
            raise DirectoryUnavailable("unexpected_response")
        return frozenset(users)


def _error_code(exc: SlackApiError) -> str:
    response = exc.response
    # A body that is not JSON leaves the raw HTTP response here instead of a SlackResponse.
    code = response.get("error") if hasattr(response, "get") else None
    if isinstance(code, str) and _ERROR_CODE.fullmatch(code):
        return code
    return "unexpected_response"
