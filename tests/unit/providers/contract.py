"""The tests every provider plug-in must pass, in the manner of keyring's ``BackendBasicTests``.

A provider's test module subclasses :class:`ProviderContract` (the subclass's name starts with
``Test`` so pytest collects it) and supplies:

* :meth:`~ProviderContract.provider` — a provider instance for the offline checks;
* :meth:`~ProviderContract.valid_values` — raw form values that pass ``clean`` + ``validate``;
* :meth:`~ProviderContract.scenario` — an async context manager that arranges a fake so that
  verifying gives the asked-for :class:`Outcome`, and yields a :class:`Scenario`.

Outcomes a provider's probe can never produce are listed in ``outcomes_not_produced``; only
``INVALID_INPUT`` may be (a provider whose offline checks catch every bad input). Every other
outcome must be reachable, carry hints when it is a failure, and leak no secret anywhere a user
or a log could read it.
"""

from __future__ import annotations

import inspect
import logging
import socket
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass

import httpx
import pytest

from bot.providers.base import FieldValues, Outcome, Provider, Verification
from bot.redaction import Secret

# Slack's limits (Block Kit reference): modal title, input label and hint, placeholder, input length.
MODAL_TITLE_MAX = 24
LABEL_MAX = 2000
HINT_MAX = 2000
PLACEHOLDER_MAX = 150
INPUT_MAX_LENGTH = 3000
HEADER_MAX = 150
ACTION_ID_MAX = 255


@dataclass(frozen=True)
class Scenario:
    """Everything one verification needs: a provider, a client wired to a fake, cleaned values."""

    provider: Provider
    http: httpx.AsyncClient
    values: FieldValues


class ProviderContract(ABC):
    """Shared tests for a provider plug-in; see the module docstring for what to supply."""

    outcomes_not_produced: frozenset[Outcome] = frozenset()

    @abstractmethod
    def provider(self) -> Provider:
        """A provider instance."""

    @abstractmethod
    def valid_values(self) -> dict[str, str | Secret]:
        """Raw form values (secrets as :class:`Secret`) that pass the offline checks."""

    @abstractmethod
    def scenario(self, outcome: Outcome) -> AbstractAsyncContextManager[Scenario]:
        """Arrange a fake so that verifying the yielded values gives ``outcome``."""

    # --- identity and form ----------------------------------------------------------------------

    def test_identity_is_declared(self) -> None:
        provider = self.provider()
        assert provider.key and provider.key == provider.key.strip().lower()
        assert provider.key.replace("_", "").isalnum()
        assert provider.title.strip()
        assert provider.description.strip() and "\n" not in provider.description
        assert len(provider.description) <= HEADER_MAX

    def test_modal_title_fits_slack(self) -> None:
        assert len(f"Create {self.provider().title}") <= MODAL_TITLE_MAX

    def test_form_is_declared_within_slack_limits(self) -> None:
        provider = self.provider()
        assert provider.sections, "a provider declares at least one form section"
        names = [f.name for f in provider.fields]
        assert len(names) == len(set(names)), "field names are unique"
        for section in provider.sections:
            assert section.fields and section.title.strip()
            assert len(section.title) <= HEADER_MAX
        for f in provider.fields:
            assert f.name and len(f.name) <= ACTION_ID_MAX
            assert f.label.strip() and len(f.label) <= LABEL_MAX
            assert f.hint.strip() and len(f.hint) <= HINT_MAX
            assert len(f.placeholder) <= PLACEHOLDER_MAX
            if f.max_length is not None:
                assert 1 <= f.max_length <= INPUT_MAX_LENGTH

    def test_hint_field_is_a_secret_field(self) -> None:
        provider = self.provider()
        if provider.hint_field is not None:
            assert provider.hint_field in provider.secret_fields

    def test_unreachable_hints_are_declared(self) -> None:
        assert self.provider().unreachable_hints

    # --- offline --------------------------------------------------------------------------------

    def test_valid_values_pass_offline_checks(self) -> None:
        provider = self.provider()
        cleaned = provider.clean(self.valid_values())
        assert provider.validate(cleaned) == {}

    def test_clean_keeps_secrets_wrapped(self) -> None:
        provider = self.provider()
        cleaned = provider.clean(self.valid_values())
        for name in provider.secret_fields:
            assert isinstance(cleaned[name], Secret), name
        for name, value in provider.config_of(cleaned).items():
            assert name not in provider.secret_fields
            assert isinstance(value, str)
        assert set(provider.secrets_of(cleaned)) <= set(provider.secret_fields)

    def test_validate_does_no_io(self, monkeypatch: pytest.MonkeyPatch) -> None:
        attempts: list[str] = []

        def refuse(name: str):  # type: ignore[no-untyped-def]
            def blocked(*args: object, **kwargs: object) -> None:
                attempts.append(name)
                raise AssertionError(f"validate() tried I/O: {name}")

            return blocked

        monkeypatch.setattr(socket.socket, "connect", refuse("socket.connect"))
        monkeypatch.setattr(socket, "getaddrinfo", refuse("getaddrinfo"))
        monkeypatch.setattr(socket, "create_connection", refuse("create_connection"))
        monkeypatch.setattr(httpx.AsyncClient, "send", refuse("httpx.AsyncClient.send"))
        monkeypatch.setattr(httpx.Client, "send", refuse("httpx.Client.send"))
        provider = self.provider()
        assert not inspect.iscoroutinefunction(provider.validate)
        for values in (self.valid_values(), {name: "" for name in (f.name for f in provider.fields)}):
            result = provider.validate(provider.clean(values))
            assert isinstance(result, dict)
        assert attempts == []

    def test_validate_names_only_known_fields(self) -> None:
        provider = self.provider()
        empty = provider.clean({})
        problems = provider.validate(empty)
        assert set(problems) <= {f.name for f in provider.fields}
        required = {f.name for f in provider.fields if not f.optional}
        assert required <= set(problems), "empty required fields get a message"
        assert all(message.strip() for message in problems.values())

    # --- verification ---------------------------------------------------------------------------

    @pytest.mark.parametrize("outcome", list(Outcome), ids=lambda o: o.value)
    async def test_every_outcome_is_reachable(self, outcome: Outcome) -> None:
        assert self.outcomes_not_produced <= {Outcome.INVALID_INPUT}
        if outcome in self.outcomes_not_produced:
            pytest.skip(f"{type(self).__name__} declares that its probe never gives {outcome.value}")
        verification = await self._verify(outcome)
        assert verification.outcome is outcome
        assert verification.summary.strip()
        assert verification.latency_ms >= 0

    @pytest.mark.parametrize("outcome", [o for o in Outcome if o is not Outcome.OK], ids=lambda o: o.value)
    async def test_every_failure_has_hints(self, outcome: Outcome) -> None:
        if outcome in self.outcomes_not_produced:
            pytest.skip("not produced")
        verification = await self._verify(outcome)
        assert verification.hints, f"{outcome.value} needs at least one hint"
        assert all(hint.strip() and len(hint) <= HINT_MAX for hint in verification.hints)

    @pytest.mark.parametrize("outcome", list(Outcome), ids=lambda o: o.value)
    async def test_secrets_never_leak(self, outcome: Outcome, caplog: pytest.LogCaptureFixture) -> None:
        if outcome in self.outcomes_not_produced:
            pytest.skip("not produced")
        caplog.set_level(logging.DEBUG)
        async with self.scenario(outcome) as scenario:
            verification = await scenario.provider.verify(scenario.values, scenario.http)
            secrets = [
                value.reveal()
                for name in scenario.provider.secret_fields
                if isinstance(value := scenario.values.get(name), Secret) and value
            ]
        assert secrets, "the scenario's values hold secrets to look for"
        for secret in secrets:
            for where, text in _readable_texts(verification, caplog):
                assert secret not in text, f"a secret value appears in {where}"

    async def _verify(self, outcome: Outcome) -> Verification:
        async with self.scenario(outcome) as scenario:
            return await scenario.provider.verify(scenario.values, scenario.http)


def _readable_texts(
    verification: Verification, caplog: pytest.LogCaptureFixture
) -> Iterator[tuple[str, str]]:
    yield "repr(verification)", repr(verification)
    yield "the summary", verification.summary
    for check in verification.checks:
        yield "a check", f"{check.name} {check.detail}"
    for hint in verification.hints:
        yield "a hint", hint
    yield "the request id", verification.request_id or ""
    yield "the logs", caplog.text
    for record in caplog.records:
        yield "a log record", record.getMessage()
        if record.exc_info:
            yield "a logged traceback", logging.Formatter().formatException(record.exc_info)
