"""The provider plug-in contract.

A provider declares who it is (key, title, description), the form a user fills in (sections of
fields), offline validation of that form, and ``probe()``: the live check against the provider's
API. The base class wraps ``probe()`` the same way for every provider, in the manner of Airbyte's
``check``: it times the call, turns network failures into an ``unreachable`` outcome with the
provider's hints, and never lets an exception text (which could carry input) reach the user.

To add a provider: subclass :class:`Provider`, fill in the class attributes, implement
``validate()`` and ``probe()``, and list the instance in :mod:`bot.providers.registry`.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Self

import httpx

from bot.redaction import Secret

__all__ = ["Check", "FieldValues", "FormField", "FormSection", "Outcome", "Probe", "Provider", "Verification"]

logger = logging.getLogger(__name__)

FieldValues = Mapping[str, "str | Secret"]
"""Submitted form values by field name: secret fields as :class:`Secret`, the others as ``str``.
An empty optional field is the empty string."""


class Outcome(enum.StrEnum):
    """The result of a verification. The first group is the user's to fix; the second is transient
    or the provider's."""

    OK = "ok"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    INVALID_INPUT = "invalid_input"
    UNREACHABLE = "unreachable"
    RATE_LIMITED = "rate_limited"
    PROVIDER_ERROR = "provider_error"

    @property
    def is_users_to_fix(self) -> bool:
        return self in (Outcome.UNAUTHORIZED, Outcome.FORBIDDEN, Outcome.INVALID_INPUT)


@dataclass(frozen=True)
class Check:
    """One probe that ran: what it checked, whether it passed, and what it found."""

    name: str
    passed: bool
    detail: str = ""


@dataclass(frozen=True)
class Probe:
    """What a provider's ``probe()`` returns; the base class adds the latency."""

    outcome: Outcome
    summary: str
    checks: tuple[Check, ...] = ()
    hints: tuple[str, ...] = ()
    """The provider's own mrkdwn (code spans and links work; it is only escaped when shown):
    each value a user or a server chose goes into one through :func:`bot.markup.inert`. The
    summary and the checks are shown literally instead."""
    request_id: str | None = None
    retry_after: float | None = None
    """For ``rate_limited``: the seconds the provider asked us to wait, when it said."""


@dataclass(frozen=True)
class Verification:
    """The outcome of verifying credentials, as the user and the history see it."""

    outcome: Outcome
    summary: str
    checks: tuple[Check, ...]
    hints: tuple[str, ...]
    latency_ms: int
    request_id: str | None = None
    retry_after: float | None = None
    """For ``rate_limited``: the seconds the provider asked us to wait, when it said. Bulk
    re-tests hold back every worker that long, not only the one that was told."""
    inconclusive: bool = False
    """The credential was never tried (its secret store refused the bot or did not answer): the
    result says nothing about the credential, so a re-test leaves its health as it was."""

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.OK

    @property
    def conclusive(self) -> bool:
        """Whether the result says something about the credential: not when the provider only
        rate-limited us, nor when the credential was never tried."""
        return self.outcome is not Outcome.RATE_LIMITED and not self.inconclusive


@dataclass(frozen=True)
class FormField:
    """One input of a provider's form.

    ``secret`` fields are wrapped in :class:`Secret` as soon as they are read, encrypted at rest,
    masked in logs, and never put back into a form. Non-secret fields are stored in the
    connection's configuration and are kept when the user tries again.
    """

    name: str
    label: str
    hint: str
    placeholder: str = ""
    secret: bool = False
    optional: bool = False
    max_length: int | None = None
    multiline: bool = False


@dataclass(frozen=True)
class FormSection:
    title: str
    fields: tuple[FormField, ...]
    description: str | None = None


class Provider(ABC):
    """Base class of every provider plug-in."""

    key: str
    """Stable identifier, stored with each connection (``acme_stream``)."""
    title: str
    """Human name ("Acme Stream"); the modal is titled "Create <title>"."""
    description: str
    """One line for the provider card."""
    name_examples: tuple[str, ...] = ()
    """Example connection names for the Name field's hint."""
    sections: tuple[FormSection, ...] = ()
    """The provider's own form sections; the Metadata section (Name) is common to all."""
    hint_field: str | None = None
    """The secret field whose masked form (first and last 4 characters) identifies a credential."""
    unreachable_hints: tuple[str, ...] = ()
    """Hints for a network failure (DNS, refused connection, TLS, timeout)."""
    deadline_seconds: float = 60.0
    """The most a whole verification (every probe, retry and back-off) may take."""

    @classmethod
    def from_environment(cls, env: Mapping[str, str]) -> Self:
        """The provider configured from environment variables of its own (API base URLs, TLS
        settings for tests); raise ``bot.settings.ConfigError`` naming a malformed one. By
        default a provider needs none."""
        return cls()

    @property
    def fields(self) -> tuple[FormField, ...]:
        return tuple(f for section in self.sections for f in section.fields)

    @property
    def secret_fields(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields if f.secret)

    def clean(self, values: FieldValues) -> dict[str, str | Secret]:
        """Normalise pasted values (surrounding whitespace by default). Override for more."""
        cleaned: dict[str, str | Secret] = {}
        for f in self.fields:
            value = values.get(f.name, "")
            if isinstance(value, Secret):
                cleaned[f.name] = Secret(value.reveal().strip())
            else:
                cleaned[f.name] = (value or "").strip()
        return cleaned

    @abstractmethod
    def validate(self, values: FieldValues) -> dict[str, str]:
        """Offline checks on cleaned values: field name -> a message saying what is wrong.

        Runs before the modal is acknowledged, so it must not do I/O. An empty dict means the
        values are worth a network call."""

    @abstractmethod
    async def probe(self, values: FieldValues, http: httpx.AsyncClient) -> Probe:
        """Check the credentials against the provider's API. Network failures may propagate as
        ``httpx.TransportError``; the base class turns them into ``unreachable``."""

    async def verify(self, values: FieldValues, http: httpx.AsyncClient) -> Verification:
        """Run :meth:`probe` and wrap its result; never raises for a provider-side failure."""
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.deadline_seconds):
                result = await self.probe(values, http)
        except TimeoutError:
            seconds = f"{self.deadline_seconds:.0f} seconds"
            result = self._failed(f"{self.title} did not finish answering within {seconds}.")
        except httpx.TimeoutException:
            result = self._failed(f"{self.title} did not answer in time.")
        except httpx.InvalidURL:
            what = f"That address can't be used to reach {self.title}; check the URL."
            result = self._failed(what, Outcome.INVALID_INPUT)
        except httpx.TransportError as exc:
            # The exception text can name hosts but never credentials (they travel in headers).
            logger.info("%s unreachable: %s", self.key, type(exc).__name__)
            result = self._failed(f"We couldn't reach {self.title} ({_describe_transport_error(exc)}).")
        return Verification(**vars(result), latency_ms=round((time.perf_counter() - started) * 1000))

    def _failed(self, summary: str, outcome: Outcome = Outcome.UNREACHABLE) -> Probe:
        return Probe(outcome, summary, hints=self.unreachable_hints)

    def config_of(self, values: FieldValues) -> dict[str, str]:
        """The non-secret values, as stored in the connection's configuration."""
        return {
            f.name: str(values.get(f.name, "")) for f in self.fields if not f.secret and values.get(f.name)
        }

    def credential_hint(self, values: FieldValues) -> str | None:
        """What identifies this credential in lists and messages without revealing it: by default
        the masked ``hint_field`` (first and last 4 characters). A provider whose secret says
        nothing masked (a private key) returns something public instead (its fingerprint)."""
        if self.hint_field is None:
            return None
        value = values.get(self.hint_field)
        return value.masked() if isinstance(value, Secret) and value else None

    def forget(self, hint: str | None) -> None:
        """Drop whatever this provider keeps in memory of the credential that ``hint`` (its
        :meth:`credential_hint`, as stored) identifies: called when that credential is destroyed
        (rejected, expired, rotated out, removed). A provider that keeps something must be able to
        find it by its hint; by default nothing is kept."""
        return None

    def secrets_of(self, values: FieldValues) -> dict[str, Secret]:
        """The secret values that are present, to be encrypted."""
        found: dict[str, Secret] = {}
        for name in self.secret_fields:
            value = values.get(name)
            if isinstance(value, Secret) and value:
                found[name] = value
        return found


def _describe_transport_error(exc: httpx.TransportError) -> str:
    text = str(exc).lower()
    if "temporary failure in name resolution" in text or ("try again" in text and "name" in text):
        return "the host name could not be resolved just now"
    if "name or service not known" in text or "nodename" in text or "getaddrinfo" in text:
        return "the host name does not resolve"
    if "certificate" in text or "ssl" in text or "tls" in text:
        return "the TLS handshake failed"
    if isinstance(exc, httpx.ConnectError):
        return "the connection was refused"
    return "a network error"
