"""The secret stores the end-to-end tests run the bot against, and how a test looks behind its back.

* AWS Secrets Manager: moto's server (one per test worker, IAM enforced: see
  :mod:`tests.support.moto_server`), the bot signing in as the identity that holds exactly
  ``docs/aws-iam-policy.json``; the test reads and changes secrets as the admin identity.
* Vault: OpenBao's own dev server (one per test worker, :mod:`tests.support.openbao_server`; a
  private one for the test that seals it), the bot's token holding exactly ``docs/vault-policy.hcl``;
  the test reads and changes secrets with the root token, over the HTTP API as the Vault CLI does.

Each store also gives a bot an identity the store refuses until it is granted the documented
rights (:meth:`refusing`), and a way to take the store down and bring it back (:meth:`outage`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from botocore.exceptions import ClientError

from tests.support.moto_server import MotoServer, bot_policy
from tests.support.openbao_server import OpenBao, running_openbao

__all__ = [
    "BOT_VAULT_POLICY",
    "AwsUnderTest",
    "Outage",
    "Refusing",
    "Relay",
    "StoreUnderTest",
    "VaultUnderTest",
    "credentials_in",
    "open_store",
    "unique_name",
]

REPOSITORY = Path(__file__).resolve().parents[2]
BOT_VAULT_POLICY = (REPOSITORY / "docs" / "vault-policy.hcl").read_text()
MOUNT = "secret"


@dataclass(frozen=True)
class Refusing:
    """Settings for a bot whose identity the store refuses, and how an operator then grants it
    the documented rights."""

    env: dict[str, str]
    grant: Callable[[], None]


class Outage(Protocol):
    """A store that can stop answering and come back, for a bot started with :attr:`env`."""

    env: dict[str, str]
    store: StoreUnderTest
    """The store as the bot behind the outage sees it, to look at what it holds."""

    def down(self) -> None: ...

    def up(self) -> None: ...


class StoreUnderTest(Protocol):
    key: str
    """``CONNECTIONS_SECRET_STORE``."""
    title: str
    """How the bot names the store in Slack."""

    def env(self) -> dict[str, str]:
        """The store's settings for a bot with the documented least-privilege identity."""
        ...

    def held(self, path: str) -> dict[str, str] | None:
        """The current value at ``path`` as one JSON object, as an admin reads it (None: none)."""
        ...

    def metadata(self, path: str) -> dict[str, str]:
        """The secret's non-secret metadata (AWS tags, Vault custom_metadata)."""
        ...

    def current_version(self, path: str) -> str | None: ...

    def write_outside(self, path: str, value: Mapping[str, str]) -> str:
        """Someone changes the secret without the bot (``aws secretsmanager put-secret-value``,
        ``vault kv put``); the version they made."""
        ...

    def read_as_pipeline(self, path: str) -> dict[str, str]:
        """Read ``path`` as a pipeline does with its own identity, allowed that one secret only."""
        ...

    def refusing(self) -> Refusing: ...

    def outage(self) -> contextlib.AbstractContextManager[Outage]: ...


# --- AWS Secrets Manager ------------------------------------------------------------------------------


class AwsUnderTest:
    key = "aws"
    title = "AWS Secrets Manager"

    def __init__(self, server: MotoServer) -> None:
        self.server = server
        self.admin = server.secrets()

    def env(self, *, endpoint: str | None = None) -> dict[str, str]:
        return self.server.environment(
            self.server.bot, **({"AWS_ENDPOINT_URL": endpoint} if endpoint else {})
        )

    def held(self, path: str) -> dict[str, str] | None:
        try:
            answer = self.admin.get_secret_value(SecretId=path)
        except ClientError as exc:
            if exc.response["Error"]["Code"] in ("ResourceNotFoundException", "InvalidRequestException"):
                return None
            raise
        value: dict[str, str] = json.loads(answer["SecretString"])
        return value

    def metadata(self, path: str) -> dict[str, str]:
        tags = self.admin.describe_secret(SecretId=path).get("Tags") or []
        return {tag["Key"]: tag["Value"] for tag in tags}

    def current_version(self, path: str) -> str | None:
        stages = self.stages(path)
        return next((v for v, labels in stages.items() if "AWSCURRENT" in labels), None)

    def stages(self, path: str) -> dict[str, list[str]]:
        """Every version of the secret and its staging labels."""
        answer = self.admin.list_secret_version_ids(SecretId=path, IncludeDeprecated=True)
        return {v["VersionId"]: list(v.get("VersionStages") or []) for v in answer["Versions"]}

    def deleted_date(self, path: str) -> datetime | None:
        """When the secret is scheduled for deletion, as ListSecrets with IncludePlannedDeletion
        says (the secret must be listed there); None when it is not."""
        listed = self.admin.list_secrets(
            IncludePlannedDeletion=True, Filters=[{"Key": "name", "Values": [path]}]
        )["SecretList"]
        [found] = [s for s in listed if s["Name"] == path]
        deleted: datetime | None = found.get("DeletedDate")
        return deleted

    def listed(self, path: str) -> bool:
        """Whether ListSecrets (without planned deletions) names the secret."""
        listed = self.admin.list_secrets(Filters=[{"Key": "name", "Values": [path]}])["SecretList"]
        return any(s["Name"] == path for s in listed)

    def write_outside(self, path: str, value: Mapping[str, str]) -> str:
        answer = self.admin.put_secret_value(SecretId=path, SecretString=json.dumps(dict(value)))
        return str(answer["VersionId"])

    def read_as_pipeline(self, path: str) -> dict[str, str]:
        # The README's policy for a pipeline: GetSecretValue on its one secret. AWS adds "-" and
        # six random characters to a secret's ARN; AWS would take `-??????` for them, but moto's
        # policy matcher reads `?` as a regular expression and fails, so `-*`.
        policy = {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Action": "secretsmanager:GetSecretValue",
                    "Resource": f"arn:aws:secretsmanager:*:*:secret:{path}-*",
                }
            ],
        }
        pipeline = self.server.secrets(self.server.create_identity(policy))
        value: dict[str, str] = json.loads(pipeline.get_secret_value(SecretId=path)["SecretString"])
        return value

    def refusing(self) -> Refusing:
        identity = self.server.create_identity(None)

        def grant() -> None:
            self.server.iam().put_user_policy(
                UserName=identity.name, PolicyName="connections-bot", PolicyDocument=json.dumps(bot_policy())
            )

        return Refusing(self.server.environment(identity), grant)

    @contextmanager
    def outage(self) -> Iterator[Outage]:
        parts = urlsplit(self.server.url)
        assert parts.hostname is not None and parts.port is not None
        with Relay(parts.hostname, parts.port) as relay:
            yield _AwsOutage(self.env(endpoint=relay.url), self, relay)


@dataclass
class _AwsOutage:
    env: dict[str, str]
    store: StoreUnderTest
    relay: Relay

    def down(self) -> None:
        self.relay.down()

    def up(self) -> None:
        self.relay.up()


class Relay:
    """A TCP relay on a loopback port to ``host:port``: :meth:`down` closes the port and cuts every
    connection through it, as an endpoint that goes away does (connections are refused, not left
    hanging); :meth:`up` opens the same port again."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="store-relay", daemon=True)
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Relay:
        self._thread.start()
        self.up()
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()
        self._run(self._settle())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()

    def up(self) -> None:
        self._run(self._listen())

    def down(self) -> None:
        self._run(self._close())

    def _run(self, work: Any) -> None:
        asyncio.run_coroutine_threadsafe(work, self._loop).result(timeout=5)

    async def _listen(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port, reuse_address=True)
            self.port = int(self._server.sockets[0].getsockname()[1])

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._open):
            writer.transport.abort()
        self._open.clear()

    async def _settle(self) -> None:
        """Cancel what is left of the relayed connections (their sockets are cut already), so that
        no task is pending when the loop closes."""
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        pair = {writer, upstream_writer}
        self._open |= pair
        try:
            await asyncio.gather(_copy(reader, upstream_writer), _copy(upstream_reader, writer))
        finally:
            self._open -= pair


async def _copy(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    try:
        while data := await source.read(65536):
            sink.write(data)
            await sink.drain()
    except OSError:
        pass
    finally:
        sink.close()


# --- Vault ----------------------------------------------------------------------------------------------


class VaultUnderTest:
    """Vault as OpenBao's own dev server (the worker's, or a private one when a test seals it),
    the bot holding a token with exactly ``docs/vault-policy.hcl``."""

    key = "vault"
    title = "Vault"

    def __init__(self, server: OpenBao) -> None:
        self.server = server
        self.bot_token = server.bot_token

    def env(self, *, token: str | None = None) -> dict[str, str]:
        return self.server.environment(token or self.bot_token)

    def held(self, path: str) -> dict[str, str] | None:
        return self.server.stored(path, mount=MOUNT)

    def key_metadata(self, path: str) -> dict[str, Any] | None:
        """``vault kv metadata get``: the key's versions and custom metadata (None: no key)."""
        return self.server.metadata(path, mount=MOUNT)

    def version(self, path: str, number: int) -> dict[str, str] | None:
        """``vault kv get -version=N``: that version's data (None when there is none to read)."""
        status, answer = self.server.call("GET", f"{MOUNT}/data/{path}?version={number}")
        if status == 404:
            return None
        assert status == 200, answer
        data: dict[str, str] | None = answer["data"]["data"]
        return data

    def metadata(self, path: str) -> dict[str, str]:
        found = self.key_metadata(path)
        return dict((found or {}).get("custom_metadata") or {})

    def current_version(self, path: str) -> str | None:
        found = self.key_metadata(path)
        return None if found is None else str(found["current_version"])

    def write_outside(self, path: str, value: Mapping[str, str]) -> str:
        answer = self.server.ok("POST", f"{MOUNT}/data/{path}", {"data": dict(value)})
        return str(answer["data"]["version"])

    def read_as_pipeline(self, path: str) -> dict[str, str]:
        # The README's policy for a pipeline, then `vault kv get -mount=secret <path>`.
        policy = f"pipeline-{uuid.uuid4().hex[:12]}"
        self.server.write_policy(policy, f'path "{MOUNT}/data/{path}" {{ capabilities = ["read"] }}')
        pipeline = self.server.create_token(policy)
        status, answer = self.server.call("GET", f"{MOUNT}/data/{path}", token=pipeline)
        assert status == 200, answer
        data: dict[str, str] = answer["data"]["data"]
        return data

    def refusing(self) -> Refusing:
        # A token named after a policy that does not exist yet: it may do nothing until the policy
        # is written, which takes effect at once for every token that holds it.
        policy = f"granted-later-{uuid.uuid4().hex[:12]}"
        token = self.server.create_token(policy)
        return Refusing(self.env(token=token), lambda: self.server.write_policy(policy, BOT_VAULT_POLICY))

    @contextmanager
    def outage(self) -> Iterator[Outage]:
        # Sealing is for a server of the test's own: the worker's is shared.
        with running_openbao() as private:
            sealed = VaultUnderTest(private)
            yield _Sealing(sealed.env(), sealed, private)


@dataclass
class _Sealing:
    """Vault sealed, then unsealed: every request answers 503 meanwhile."""

    env: dict[str, str]
    store: StoreUnderTest
    server: OpenBao

    def down(self) -> None:
        self.server.seal()

    def up(self) -> None:
        self.server.unseal()


@contextmanager
def open_store(
    key: str, aws_server: Callable[[], MotoServer], openbao_server: Callable[[], OpenBao]
) -> Iterator[StoreUnderTest]:
    """The store ``key`` (``aws`` on the worker's moto server, ``vault`` on its OpenBao server)."""
    if key == "aws":
        yield AwsUnderTest(aws_server())
    elif key == "vault":
        yield VaultUnderTest(openbao_server())
    else:
        raise AssertionError(f"no store under test named {key!r}")


def credentials_in(env: Mapping[str, str]) -> dict[str, str]:
    """The bot's own credentials for its store in ``env``, by label: searched for like any secret."""
    names = {
        "AWS_SECRET_ACCESS_KEY": "the bot's AWS secret access key",
        "VAULT_TOKEN": "the bot's Vault token",
    }
    return {label: env[name] for name, label in names.items() if env.get(name)}


def unique_name() -> str:
    """A connection name no other test on the worker uses: the shared moto server keeps every
    secret the worker's tests write, and the path comes from the name."""
    return f"Prod Kafka {uuid.uuid4().hex[:8]}"
