"""Confluent Cloud: a Cloud API key, or a Kafka cluster key with its REST endpoint and cluster ID.

The probe follows the verification plan of specs/confluent/README.md §8: ask the Cloud API for one
environment; when a cluster is given (or the Cloud API turned the key down and a cluster is
known) ask the cluster's Kafka REST API to describe itself and list its topics, then dry-run a
topic creation (``validate_only``) to learn whether the key may create topics. Rate limits and
server errors are retried a little; everything else is answered at once with hints.

The REST endpoint is user input, so it goes through the outbound policy (:mod:`bot.outbound`): a
Confluent Cloud host (``*.confluent.cloud``, or ``CONFLUENT_REST_ALLOWED_HOSTS``), resolved and
checked before anything at all is sent (the Cloud API included), and called at the checked address.
``CONFLUENT_CLOUD_API_URL`` is the operator's and is called as it is.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Self
from urllib.parse import quote, urlsplit

import httpx

from bot import outbound
from bot.providers import _confluent_errors as errs
from bot.providers import _shared as shared
from bot.providers._confluent_errors import secret_checksum_ok
from bot.providers.base import Check, FieldValues, FormField, FormSection, Outcome, Probe, Provider
from bot.redaction import Secret
from bot.settings import ConfigError

__all__ = [
    "DEFAULT_API_URL",
    "DEFAULT_REST_HOSTS",
    "REST_HOSTS_VARIABLE",
    "ConfluentCloud",
    "RetryPolicy",
    "secret_checksum_ok",
]

DEFAULT_API_URL = "https://api.confluent.cloud"
DEFAULT_REST_HOSTS = outbound.HostPatterns(("*.confluent.cloud",))
REST_HOSTS_VARIABLE = "CONFLUENT_REST_ALLOWED_HOSTS"

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetryPolicy(shared.RetryPolicy):
    """Confluent's: two tries after a 429 and one after a 5xx (or Kafka 50003), backing off 1, 2,
    then 4 seconds when the response does not say (Kafka REST never does)."""

    rate_limit_retries: int = 2
    backoff: tuple[float, ...] = (1.0, 2.0, 4.0)


class ConfluentCloud(Provider):
    key = "confluent_cloud"
    title = "Confluent Cloud"
    description = "Managed Apache Kafka. Connect with a Cloud API key and secret."
    name_examples = ("Production Confluent Cloud", "Analytics Cluster Credentials")
    hint_field = "api_key"
    unreachable_hints = errs.UNREACHABLE_HINTS
    sections = (
        FormSection(
            title="Confluent Account",
            fields=(
                FormField(
                    name="api_key",
                    label="API Key",
                    hint="In the Confluent Cloud console open API keys (under Cloud resource management, "
                    "or your cluster's API keys) and copy the key.",
                    placeholder="16 capital letters and digits",
                    secret=True,
                    max_length=100,
                ),
                FormField(
                    name="api_secret",
                    label="API Secret",
                    hint="Shown exactly once, when the key is created: copy it then. Confluent cannot "
                    "show it again; if it is lost, create a new key.",
                    placeholder="64 characters; newer secrets start with cflt",
                    secret=True,
                    max_length=200,
                ),
            ),
        ),
        FormSection(
            title="Kafka cluster (optional)",
            description="Needed for a cluster-scoped (Kafka cluster) key, and to check topic "
            "permissions on that cluster.",
            fields=(
                FormField(
                    name="rest_endpoint",
                    label="REST endpoint",
                    hint="On the cluster's Settings page, or RestEndpoint in the output of "
                    "confluent kafka cluster describe.",
                    placeholder="https://pkc-abcde.us-west4.gcp.confluent.cloud:443",
                    optional=True,
                    max_length=255,
                ),
                FormField(
                    name="cluster_id",
                    label="Cluster ID",
                    hint="Starts with lkc-; shown next to the REST endpoint on the cluster's Settings page.",
                    placeholder="lkc-abc123",
                    optional=True,
                    max_length=64,
                ),
            ),
        ),
    )

    def __init__(
        self,
        api_url: str = DEFAULT_API_URL,
        *,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        policy: outbound.Policy | None = None,
    ) -> None:
        self.api_url = api_url.rstrip("/")
        self.retry = retry or RetryPolicy()
        self._sleep = sleep
        self.policy = policy or outbound.Policy(DEFAULT_REST_HOSTS)
        """Where a REST endpoint may point."""

    @classmethod
    def from_environment(cls, env: Mapping[str, str]) -> Self:
        """``CONFLUENT_CLOUD_API_URL`` (default ``https://api.confluent.cloud``): where the Cloud
        API is reached; tests point it at a fake. ``CONFLUENT_REST_ALLOWED_HOSTS`` and
        ``CONNECTIONS_ALLOW_PRIVATE_ADDRESSES``: where a REST endpoint may point (private networking)."""
        url = (env.get("CONFLUENT_CLOUD_API_URL") or "").strip() or DEFAULT_API_URL
        if not url.startswith(("https://", "http://")):
            raise ConfigError("CONFLUENT_CLOUD_API_URL must be an http(s) URL")
        policy = outbound.Policy.from_environment(
            env, default=DEFAULT_REST_HOSTS, patterns_variable=REST_HOSTS_VARIABLE
        )
        return cls(api_url=url, policy=policy)

    def clean(self, values: FieldValues) -> dict[str, str | Secret]:
        """Trim whitespace and paste debris: quotes around key and secret, a trailing ``/``."""
        cleaned = super().clean(values)
        for name in ("api_key", "api_secret"):
            value = cleaned[name]
            if isinstance(value, Secret):
                cleaned[name] = Secret(shared.unquote(value.reveal()))
        cleaned["rest_endpoint"] = str(cleaned["rest_endpoint"]).rstrip("/")
        return cleaned

    def validate(self, values: FieldValues) -> dict[str, str]:
        key, secret = shared.plain(values, "api_key"), shared.plain(values, "api_secret")
        problems: dict[str, str] = {}
        if errs.looks_swapped(key, secret):
            problems["api_key"] = "This looks like the API secret, not the key: the two fields look swapped."
            problems["api_secret"] = "Check this field too: the key and the secret look swapped."
        else:
            if key_problem := errs.key_problem(key):
                problems["api_key"] = key_problem
            if secret_problem := errs.secret_problem(secret):
                problems["api_secret"] = secret_problem
        endpoint, cluster = shared.plain(values, "rest_endpoint"), shared.plain(values, "cluster_id")
        if endpoint and (endpoint_problem := errs.endpoint_problem(endpoint)):
            problems["rest_endpoint"] = endpoint_problem
        elif endpoint and (host_problem := self.policy.problem(_host(endpoint))):
            problems["rest_endpoint"] = errs.rest_host_problem(host_problem)
        elif cluster and not endpoint:
            problems["rest_endpoint"] = (
                "Add the cluster's REST endpoint too: the cluster ID alone isn't enough."
            )
        if cluster and (cluster_problem := errs.cluster_problem(cluster)):
            problems["cluster_id"] = cluster_problem
        elif endpoint and not cluster:
            problems["cluster_id"] = "Add the cluster ID (lkc-…) too: the REST endpoint alone isn't enough."
        return problems

    async def probe(self, values: FieldValues, http: httpx.AsyncClient) -> Probe:
        """Ask the Cloud API, then the cluster when one is given; see the module docstring."""
        key, secret = shared.plain(values, "api_key"), shared.plain(values, "api_secret")
        run = _Run(self, http, (key, secret))
        endpoint, cluster = shared.plain(values, "rest_endpoint"), shared.plain(values, "cluster_id")
        has_cluster = bool(endpoint and cluster)
        rest: outbound.Route = outbound.DIRECT
        if has_cluster:  # checked before anything is sent, so a refused endpoint learns of no key
            host = _host(endpoint)
            route = await self.policy.route(host, urlsplit(endpoint).port or 443)
            if isinstance(route, outbound.Blocked):
                logger.info("confluent: not calling the REST endpoint (%s)", route.value)
                return shared.blocked_probe(
                    host,
                    route,
                    not_found_hint=errs.REST_NOT_FOUND_HINT,
                    private_hint=errs.REST_PRIVATE_HINT,
                    later_hints=errs.UNREACHABLE_HINTS,
                )
            rest = route

        cloud = await run.send("GET", f"{self.api_url}/org/v2/environments", params={"page_size": "1"})
        if cloud.status_code == 200 and not _is_environment_list(cloud):
            # A proxy, a captive portal or a changed API, not Confluent saying the key works.
            summary = (
                "Confluent Cloud gave an unexpected answer (HTTP 200): not the list of environments "
                "it sends for a valid key."
            )
            hints = (
                "Something answered for the Cloud API that is not it: check CONFLUENT_CLOUD_API_URL "
                "and any proxy between the bot and api.confluent.cloud.",
                "If it persists, Confluent may have changed the API: tell whoever runs this bot.",
            )
            return run.probe(Outcome.PROVIDER_ERROR, summary, hints, cloud.headers.get("x-request-id"))
        if cloud.status_code == 200:
            run.record_environments(cloud)
            if not has_cluster:
                return run.ok("Confluent Cloud accepted the Cloud API key")
            return await self._probe_cluster(run, rest, endpoint, cluster, cloud_ok=True)
        error = errs.parse_error(cloud)
        if not _rejects_key(error):
            return run.failure(error, "Confluent Cloud", forbidden_hints=errs.CLOUD_FORBIDDEN_HINTS)
        run.checks.append(Check("Cloud API key", False, "The Cloud API did not accept it."))
        if not has_cluster:
            # It may be a cluster key: ask for the cluster rather than call the key bad outright.
            what = (
                "The Cloud API did not accept the key/secret; if it is a Kafka cluster key, "
                "add the cluster's REST endpoint and cluster ID"
            )
            return run.fail(Outcome.UNAUTHORIZED, what, error, errs.CLOUD_UNAUTHORIZED_HINTS)
        return await self._probe_cluster(run, rest, endpoint, cluster, cloud_ok=False)

    async def _probe_cluster(
        self, run: _Run, rest: outbound.Route, endpoint: str, cluster: str, *, cloud_ok: bool
    ) -> Probe:
        base = f"{endpoint}/kafka/v3/clusters/{quote(cluster, safe='')}"
        where = f"cluster {cluster}"
        unauthorized: tuple[str, ...] = errs.KAFKA_UNAUTHORIZED_HINTS
        if not cloud_ok:  # the Cloud API turned it down too, so either kind of mistake is possible
            unauthorized = tuple(dict.fromkeys(errs.CLOUD_UNAUTHORIZED_HINTS + unauthorized))

        described = await run.send("GET", base, rest)
        if described.status_code != 200:
            return run.failure(errs.parse_error(described), where, unauthorized, on_cluster=True)
        detail = "" if cloud_ok else "It is a Kafka cluster key."
        run.checks.append(Check(f"Key accepted by {cluster}", True, detail))

        listed = await run.send("GET", f"{base}/topics", rest)
        if listed.status_code != 200:
            return run.failure(errs.parse_error(listed), where, unauthorized, on_cluster=True)
        topics = len(_data(listed))
        detail = "" if topics else "The list shows only topics the key's owner may describe."
        run.visible(topics, "topic", True, detail)

        dry_run = {"topic_name": f"connections-bot-probe-{uuid.uuid4().hex}", "validate_only": True}
        created = await run.send("POST", f"{base}/topics", rest, json=dry_run)
        if created.status_code == 200:
            run.checks.append(Check(f"can create topics on {cluster}", True))
        else:  # the key is valid either way; this only tells what it may do
            error = errs.parse_error(created)
            if error.status == 403:
                run.checks.append(Check(f"cannot create topics on {cluster}", False, run.said(error)))
                run.hints.append(errs.CREATE_TOPICS_HINT)
            else:
                detail = f"Couldn't tell: Confluent said {run.said(error)}"
                run.checks.append(Check(f"create topics on {cluster}", False, detail))
        kind = "Cloud API key" if cloud_ok else "Kafka cluster key"
        return run.ok(f"Confluent accepted the {kind} on {cluster}")


class _Run(shared.Run):
    def __init__(self, provider: ConfluentCloud, http: httpx.AsyncClient, auth: tuple[str, str]) -> None:
        super().__init__(provider.retry, provider._sleep)
        self._http, self._auth = http, auth
        self.first_request_id: str | None = None

    def is_server_error(self, response: httpx.Response) -> bool:
        # Kafka REST marks retriable errors with 50003, whatever the status line says.
        status = response.status_code
        return status >= 500 or (status >= 400 and errs.parse_error(response).kafka_code == 50003)

    async def send(
        self, method: str, url: str, route: outbound.Route = outbound.DIRECT, **kwargs: Any
    ) -> httpx.Response:
        """Send with HTTP Basic auth by ``route``, retrying 429 and 5xx as the policy allows."""

        async def attempt() -> httpx.Response:
            response = await route.request(self._http, method, url, auth=self._auth, **kwargs)
            logger.info("confluent %s %s -> %d", method, url, response.status_code)
            self.first_request_id = self.first_request_id or response.headers.get("x-request-id")
            return response

        return await self.retrying(attempt, f"confluent {method} {url}")

    def said(self, error: errs.ApiError) -> str:
        return shared.scrub(error.text, self._auth)

    def record_environments(self, response: httpx.Response) -> None:
        body = shared.json_of(response)
        meta = body.get("metadata") if isinstance(body, dict) else None
        total = meta.get("total_size") if isinstance(meta, dict) else None
        count = total if isinstance(total, int) else len(_data(response))
        self.checks.append(Check("Cloud API key accepted", True))
        detail = "" if count else "Its owner probably has no role on any environment (a guess)."
        self.visible(count, "environment", bool(count), detail)
        if not count:
            self.hints.append(errs.NO_ENVIRONMENTS_HINT)

    def visible(self, n: int, noun: str, passed: bool, detail: str) -> None:
        seen = f"{n} {noun}" if n == 1 else f"{n} {noun}s"
        self.checks.append(Check(f"{seen} visible", passed, detail))
        self.facts.append(f"{seen} visible")

    def ok(self, what: str) -> Probe:
        return self.probe(Outcome.OK, self.summary(what), tuple(self.hints), self.first_request_id)

    def fail(self, outcome: Outcome, what: str, error: errs.ApiError, hints: tuple[str, ...]) -> Probe:
        summary = shared.with_said(what, self.said(error), "Confluent")
        return self.probe(outcome, summary, hints, error.request_id)

    def failure(
        self,
        error: errs.ApiError,
        where: str,
        unauthorized_hints: tuple[str, ...] = (),
        forbidden_hints: tuple[str, ...] = errs.KAFKA_FORBIDDEN_HINTS,
        *,
        on_cluster: bool = False,
    ) -> Probe:
        """Map a failed required call to an outcome, per the facts sheet's table."""
        status, subject = error.status, where[0].upper() + where[1:]
        if status == 429:
            hints = errs.rate_limited_hints(self.asked_to_wait)
            return self.fail(Outcome.RATE_LIMITED, f"{subject} is rate-limiting us", error, hints)
        if status >= 500 or error.kafka_code == 50003:
            hints = errs.provider_error_hints(error.request_id)
            return self.fail(Outcome.PROVIDER_ERROR, f"{subject} had a server error", error, hints)
        if _rejects_key(error):
            what = f"{subject} rejected the key/secret"
            return self.fail(Outcome.UNAUTHORIZED, what, error, unauthorized_hints)
        if status == 403:
            what = f"{subject} accepted the key, but its owner lacks permission"
            return self.fail(Outcome.FORBIDDEN, what, error, forbidden_hints)
        if status == 404 and on_cluster:
            what = f"The REST endpoint does not know {where}"
            return self.fail(Outcome.INVALID_INPUT, what, error, errs.KAFKA_NOT_FOUND_HINTS)
        what = f"{subject} gave an unexpected answer (HTTP {status})"
        return self.fail(Outcome.PROVIDER_ERROR, what, error, errs.provider_error_hints(error.request_id))


def _host(endpoint: str) -> str:
    """The REST endpoint's host, as the outbound policy judges it."""
    return (urlsplit(endpoint).hostname or "").rstrip(".")


def _rejects_key(error: errs.ApiError) -> bool:
    """A 401, or a 403 that says the key is invalid (treated as a 401, as Terraform does)."""
    return error.status == 401 or (error.status == 403 and error.says_invalid_api_key)


def _is_environment_list(response: httpx.Response) -> bool:
    """Whether a 200 is the Cloud API's list: ``{"api_version", "kind", "metadata", "data": [...]}``."""
    body = shared.json_of(response)
    return isinstance(body, dict) and isinstance(body.get("data"), list)


def _data(response: httpx.Response) -> list[Any]:
    body = shared.json_of(response)
    data = body.get("data") if isinstance(body, dict) else None
    return data if isinstance(data, list) else []
