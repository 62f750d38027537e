"""What the plug-ins share: reading and wording form values and answers, retrying a provider's
"not now" (429) and failures (5xx), and gathering a probe's findings.

Each HTTP provider subclasses :class:`RetryPolicy` with its own defaults (how many tries its API's
documentation recommends); the arithmetic of a jittered back-off and the reading of
``Retry-After`` are the same for all.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import httpx

from bot import outbound
from bot.providers.base import Check, FieldValues, Outcome, Probe
from bot.redaction import MASK, Secret, redact

logger = logging.getLogger(__name__)


def plain(values: FieldValues, name: str) -> str:
    """A form value as text, a secret revealed."""
    value = values.get(name, "")
    return value.reveal() if isinstance(value, Secret) else str(value or "")


_QUOTES = {'"': '"', "'": "'", "`": "`", "“": "”", "‘": "’"}


def unquote(text: str) -> str:
    """Strip whitespace and matching quotes around a pasted value (also typographic ones)."""
    text = text.strip()
    while len(text) >= 2 and _QUOTES.get(text[0]) == text[-1]:
        text = text[1:-1].strip()
    return text


SAID_MAX = 300
"""The most of a provider's own words shown to a user."""
KEPT_MAX = 4000
"""What is kept of a provider's message until :func:`scrub` has run: cut first, a message could
keep part of a secret it echoed."""


def shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def scrub(text: str, values: Iterable[str]) -> str:
    """What a provider said, without the credential values given or any secret the process holds
    (:mod:`bot.redaction`), in case it echoes them; then cut to :data:`SAID_MAX`."""
    for value in values:
        if len(value) >= 4:
            text = text.replace(value, MASK)
    return shorten(redact(text), SAID_MAX)


def with_said(what: str, said: str, who: str = "It", ends: tuple[str, ...] = (".", "!", "?")) -> str:
    """``what``, then what the server said, ending as a sentence."""
    if not said:
        return f"{what}."
    return f"{what}. {who} said: {said}" + ("" if said.endswith(ends) else ".")


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try when a provider says "not now" (429), fails (5xx) or doesn't answer."""

    rate_limit_retries: int = 1
    server_error_retries: int = 1
    timeout_retries: int = 0
    backoff: tuple[float, ...] = (1.0, 2.0)
    """Seconds to wait before retry n, when the response does not say."""
    jitter: float = 0.25
    """Up to this fraction is added to each backoff step, so callers that failed together spread out."""
    max_retry_after: float = 30.0
    """The longest ``Retry-After`` worth waiting for; past it we give up at once, as rate_limited."""
    rng: Callable[[], float] = field(default=random.random, repr=False)

    def backoff_delay(self, retry: int) -> float:
        step = self.backoff[min(retry, len(self.backoff) - 1)]
        return step * (1 + self.jitter * self.rng())


def retry_after(response: httpx.Response) -> float | None:
    """The seconds a response's ``Retry-After`` asks for (a number; HTTP dates are not used by
    these APIs), or None when it says nothing usable."""
    try:
        return max(0.0, float(response.headers.get("retry-after", "")))
    except ValueError:
        return None


def try_again(wait_seconds: float | None) -> str:
    """When to try again after a 429: "in about 30 seconds", or "in a minute" when it didn't say."""
    if not wait_seconds:
        return "in a minute"
    if wait_seconds < 90:
        return f"in about {round(wait_seconds)} seconds"
    return f"in about {round(wait_seconds / 60)} minutes"


def json_of(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


class Run:
    """One probe's requests, retries, and the checks, hints and facts gathered on the way."""

    def __init__(self, retry: RetryPolicy, sleep: Callable[[float], Awaitable[None]]) -> None:
        self._retry, self._sleep = retry, sleep
        self.checks: list[Check] = []
        self.hints: list[str] = []
        self.facts: list[str] = []
        self.asked_to_wait: float | None = None
        """The seconds the last 429 asked us to wait, when it said."""

    def fits(self, wait: float) -> bool:
        """Whether waiting ``wait`` seconds still leaves a request worth sending."""
        return True

    def is_server_error(self, response: httpx.Response) -> bool:
        return response.status_code >= 500

    async def retrying(self, attempt: Callable[[], Awaitable[httpx.Response]], what: str) -> httpx.Response:
        """``attempt()`` again after a 429, a 5xx or a timeout, as the policy and the time allow."""
        rate_limited = server_errors = timeouts = 0
        while True:
            try:
                response = await attempt()
            except httpx.TimeoutException:
                if timeouts >= self._retry.timeout_retries:
                    raise
                delay = self._retry.backoff_delay(timeouts)
                if not self.fits(delay):
                    logger.info("%s timed out; no time left to retry", what)
                    raise
                timeouts += 1
                logger.info("%s timed out; retrying in %.1f s", what, delay)
                await self._sleep(delay)
                continue
            if response.status_code == 429:
                self.asked_to_wait = asked = retry_after(response)
                if rate_limited >= self._retry.rate_limit_retries or (
                    asked is not None and asked > self._retry.max_retry_after
                ):
                    return response
                delay = self._retry.backoff_delay(rate_limited) if asked is None else asked
                rate_limited += 1
            elif self.is_server_error(response) and server_errors < self._retry.server_error_retries:
                delay = self._retry.backoff_delay(server_errors)
                server_errors += 1
            else:
                return response
            if not self.fits(delay):
                logger.info("%s answered %d; no time left to retry", what, response.status_code)
                return response
            logger.info("%s answered %d; retrying in %.1f s", what, response.status_code, delay)
            await self._sleep(delay)

    def summary(self, what: str) -> str:
        return f"{what} ({'; '.join(self.facts)})." if self.facts else f"{what}."

    def probe(self, outcome: Outcome, summary: str, hints: tuple[str, ...], request_id: str | None) -> Probe:
        """The probe's result with the checks so far; a rate limit carries the wait it asked for."""
        wait = self.asked_to_wait if outcome is Outcome.RATE_LIMITED else None
        return Probe(outcome, summary, tuple(self.checks), hints, request_id, retry_after=wait)


DNS_LATER_HINT = "The bot's DNS lookup failed for now; try again in a minute."


def blocked_probe(
    host: str,
    blocked: outbound.Blocked,
    *,
    not_found_hint: str,
    private_hint: str,
    later_hints: tuple[str, ...] = (),
) -> Probe:
    """Why nothing was sent to a typed ``host`` (:meth:`bot.outbound.Policy.route`). The address
    it resolved to is never shown: it could map a private network."""
    if blocked is outbound.Blocked.DNS_UNAVAILABLE:
        summary = f"We couldn't look up {host} right now (a temporary DNS failure)."
        return Probe(Outcome.UNREACHABLE, summary, hints=(DNS_LATER_HINT, *later_hints))
    if blocked is outbound.Blocked.NOT_FOUND:
        return Probe(Outcome.INVALID_INPUT, f"The host {host} does not exist.", hints=(not_found_hint,))
    if blocked is outbound.Blocked.REFUSED_NAME:
        summary = f"The bot does not connect to {host}: it is not a public host name the bot may call."
    else:
        summary = (
            f"{host} resolves to an address the bot does not connect to (a private, local or "
            "reserved network address), so nothing was sent to it."
        )
    return Probe(Outcome.INVALID_INPUT, summary, hints=(private_hint,))
