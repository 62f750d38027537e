"""The provider base class: how it wraps a probe, and its form-value helpers."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from types import SimpleNamespace

import httpx
import pytest

from bot.providers.base import (
    Check,
    FieldValues,
    FormField,
    FormSection,
    Outcome,
    Probe,
    Provider,
)
from bot.redaction import Secret

SECRET_TEXT = "s3cr3t-value-that-must-not-leak"


class Toy(Provider):
    """A provider whose probe makes one GET through whatever transport the test wires in."""

    key = "toy"
    title = "Toy"
    description = "A provider for tests."
    unreachable_hints = ("Check the toy's URL.",)
    sections = (
        FormSection(
            title="Account",
            fields=(
                FormField(name="user", label="User", hint="Your user name."),
                FormField(name="token", label="Token", hint="Your token.", secret=True),
                FormField(name="region", label="Region", hint="Optional region.", optional=True),
            ),
        ),
    )

    def validate(self, values: FieldValues) -> dict[str, str]:
        return {}

    async def probe(self, values: FieldValues, http: httpx.AsyncClient) -> Probe:
        response = await http.get("http://toy.test/ping")
        return Probe(
            Outcome.OK,
            f"HTTP {response.status_code}",
            checks=(Check("ping", True),),
            request_id=response.headers.get("x-request-id"),
        )


def client(handler: Callable[[httpx.Request], httpx.Response]) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.MockTransport(handler))


def raising(exc: Exception) -> Callable[[httpx.Request], httpx.Response]:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    return handler


VALUES: dict[str, str | Secret] = {"user": "alice", "token": Secret(SECRET_TEXT), "region": ""}


# --- verify() ------------------------------------------------------------------------------------------


async def test_a_probe_result_is_wrapped_with_its_latency(monkeypatch: pytest.MonkeyPatch) -> None:
    clock: Iterator[float] = iter([100.0, 101.5])
    # Replace the module's clock only (patching time.perf_counter would also move asyncio's).
    monkeypatch.setattr("bot.providers.base.time", SimpleNamespace(perf_counter=lambda: next(clock)))
    async with client(lambda request: httpx.Response(200, headers={"X-Request-Id": "r-1"})) as http:
        verification = await Toy().verify(VALUES, http)
    assert verification.ok and verification.outcome is Outcome.OK
    assert verification.summary == "HTTP 200"
    assert verification.checks == (Check("ping", True),)
    assert verification.latency_ms == 1500
    assert verification.request_id == "r-1"


@pytest.mark.parametrize(
    "exc", [httpx.ConnectTimeout("timed out"), httpx.ReadTimeout("timed out"), httpx.PoolTimeout("pool")]
)
async def test_a_timeout_is_unreachable(exc: httpx.TimeoutException) -> None:
    async with client(raising(exc)) as http:
        verification = await Toy().verify(VALUES, http)
    assert verification.outcome is Outcome.UNREACHABLE
    assert verification.summary == "Toy did not answer in time."
    assert verification.hints == Toy.unreachable_hints
    assert not verification.ok


@pytest.mark.parametrize(
    ("exc", "says"),
    [
        (httpx.ConnectError("[Errno 111] Connection refused"), "the connection was refused"),
        (httpx.ConnectError("[Errno -2] Name or service not known"), "the host name does not resolve"),
        (
            httpx.ConnectError("[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed"),
            "the TLS handshake failed",
        ),
        (httpx.RemoteProtocolError("Server disconnected"), "a network error"),
    ],
)
async def test_a_network_failure_is_unreachable_with_the_providers_hints(
    exc: httpx.TransportError, says: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with client(raising(exc)) as http:
        verification = await Toy().verify(VALUES, http)
    assert verification.outcome is Outcome.UNREACHABLE
    assert verification.summary == f"We couldn't reach Toy ({says})."
    assert verification.hints == ("Check the toy's URL.",)
    assert verification.checks == ()
    assert str(exc) not in verification.summary  # exception text never reaches the user


async def test_exception_text_is_neither_shown_nor_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with client(raising(httpx.ConnectError(f"refused while sending {SECRET_TEXT}"))) as http:
        verification = await Toy().verify(VALUES, http)
    assert verification.outcome is Outcome.UNREACHABLE
    assert SECRET_TEXT not in repr(verification)
    assert SECRET_TEXT not in caplog.text
    assert "ConnectError" in caplog.text


async def test_a_real_refused_connection_is_unreachable() -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]

    class Closed(Toy):
        async def probe(self, values: FieldValues, http: httpx.AsyncClient) -> Probe:
            await http.get(f"http://127.0.0.1:{port}/")
            raise AssertionError("the request should have failed")

    async with httpx.AsyncClient(timeout=5) as http:
        verification = await Closed().verify(VALUES, http)
    assert verification.outcome is Outcome.UNREACHABLE
    assert "refused" in verification.summary


async def test_a_bug_in_a_probe_is_not_disguised_as_unreachable() -> None:
    class Broken(Toy):
        async def probe(self, values: FieldValues, http: httpx.AsyncClient) -> Probe:
            raise KeyError("token")

    async with client(lambda request: httpx.Response(200)) as http:
        with pytest.raises(KeyError):
            await Broken().verify(VALUES, http)


def test_users_to_fix_outcomes() -> None:
    mine = {o for o in Outcome if o.is_users_to_fix}
    assert mine == {Outcome.UNAUTHORIZED, Outcome.FORBIDDEN, Outcome.INVALID_INPUT}


# --- form values -----------------------------------------------------------------------------------------


def test_fields_and_secret_fields() -> None:
    toy = Toy()
    assert [f.name for f in toy.fields] == ["user", "token", "region"]
    assert toy.secret_fields == ("token",)


def test_clean_strips_whitespace_and_keeps_secrets_wrapped() -> None:
    cleaned = Toy().clean({"user": "  alice \n", "token": Secret(f"\t{SECRET_TEXT}  ")})
    assert cleaned["user"] == "alice"
    assert isinstance(cleaned["token"], Secret)
    assert cleaned["token"].reveal() == SECRET_TEXT
    assert cleaned["region"] == ""  # a missing optional field becomes the empty string


def test_config_of_keeps_only_filled_non_secret_fields() -> None:
    toy = Toy()
    assert toy.config_of(VALUES) == {"user": "alice"}
    assert toy.config_of({**VALUES, "region": "eu"}) == {"user": "alice", "region": "eu"}


def test_secrets_of_keeps_only_present_secrets() -> None:
    toy = Toy()
    found = toy.secrets_of(VALUES)
    assert list(found) == ["token"] and found["token"].reveal() == SECRET_TEXT
    assert toy.secrets_of({**VALUES, "token": Secret("")}) == {}
    assert toy.secrets_of({"user": "alice"}) == {}


async def test_a_verification_past_its_deadline_is_unreachable_not_stuck() -> None:
    class Slow(Toy):
        deadline_seconds = 0.05

        async def probe(self, values: FieldValues, http: httpx.AsyncClient) -> Probe:
            await asyncio.sleep(5)
            raise AssertionError("the deadline did not stop the probe")

    result = await Slow().verify(
        {"user": "u", "token": Secret(SECRET_TEXT)}, client(lambda r: httpx.Response(200))
    )
    assert result.outcome is Outcome.UNREACHABLE
    assert "did not finish answering" in result.summary
    assert result.hints == Toy.unreachable_hints


async def test_an_address_httpx_cannot_use_is_invalid_input() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.InvalidURL("Invalid URL")

    result = await Toy().verify({"user": "u", "token": Secret(SECRET_TEXT)}, client(refuse))
    assert result.outcome is Outcome.INVALID_INPUT


def test_the_credential_hint_is_the_masked_hint_field_by_default() -> None:
    class Hinted(Toy):
        hint_field = "token"

    values = Hinted().clean({"user": "u", "token": Secret("tok-ABCDEFGHIJKL")})
    assert Hinted().credential_hint(values) == Secret("tok-ABCDEFGHIJKL").masked()
    assert Hinted().credential_hint({"user": "u"}) is None
    assert Toy().credential_hint(values) is None


def test_a_provider_needs_no_settings_by_default() -> None:
    assert isinstance(Toy.from_environment({"ANYTHING": "x"}), Toy)
