"""AWS Secrets Manager as a secret store (``CONNECTIONS_SECRET_STORE=aws``).

One secret per connection, named by ``CONNECTIONS_SECRET_PATH``, its value one JSON object of the
provider's fields, its metadata as tags. Settings, read from the environment (and ``.env``):

* ``AWS_REGION`` (or ``AWS_DEFAULT_REGION``): required.
* ``AWS_ENDPOINT_URL_SECRETS_MANAGER`` or ``AWS_ENDPOINT_URL``: another endpoint (a VPC endpoint,
  a test server); passed to the SDK explicitly, since a value from ``.env`` is not in its environment.
* Credentials: ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` (/ ``AWS_SESSION_TOKEN``) or
  ``AWS_PROFILE`` when set; otherwise the SDK's own chain (environment, shared files, container or
  instance role).
* ``CONNECTIONS_AWS_RECOVERY_DAYS``: how long a removed connection's secret stays recoverable,
  7 to 30 days (default 7), or 0 to delete it at once.

How each write maps to the API (``token`` is the ClientRequestToken, so the VersionId is the token):

* first write: CreateSecret with the tags. If the name exists, DescribeSecret tells a retry (its
  AWSCURRENT version is the token) from someone else's secret (a conflict); a name scheduled for
  deletion (a connection removed and registered again) is restored, then written with
  PutSecretValue and tagged.
* rotation: DescribeSecret, then PutSecretValue only if AWSCURRENT is still the version the bot
  wrote (the label moves, the old version becomes AWSPREVIOUS), then TagResource. AWS has no
  check-and-set: a change landing between the two calls is overwritten, and stays as AWSPREVIOUS.

The AWS SDK (botocore, under boto3) is synchronous: its calls run in the store's own threads, with
short timeouts and few retries. Errors become :class:`StoreError` built from AWS's error code and
the path, never from a message or a body (botocore's texts can quote what was sent), and are raised
with no botocore exception attached.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Self, TypeVar, cast

import botocore.loaders
import botocore.session
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    CredentialRetrievalError,
    HTTPClientError,
    NoAuthTokenError,
    NoCredentialsError,
    PartialCredentialsError,
    ProfileNotFound,
    SSOError,
    TokenRetrievalError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

from bot.redaction import Secret
from bot.settings import ConfigError
from bot.stores.base import SecretStore, StoreCheck, StoredSecret, StoreError, StoreFailure, Written
from bot.stores.paths import DEFAULT_SECRET_PATH, PathTemplate

if TYPE_CHECKING:
    from mypy_boto3_secretsmanager import SecretsManagerClient
    from mypy_boto3_secretsmanager.type_defs import TagTypeDef

__all__ = ["AwsSecretsManager"]

logger = logging.getLogger(__name__)

THREADS: Final = 16
CONNECT_TIMEOUT: Final = 3.0
READ_TIMEOUT: Final = 5.0
ATTEMPTS: Final = 3
"""Tries per call, the first included (the SDK's standard retry mode retries throttling, 5xx and
network errors, with backoff)."""
DEFAULT_RECOVERY_DAYS: Final = 7
RECOVERY_DAYS: Final = range(7, 31)
PROBE_NAME: Final = ".bot-health-check"
"""Looked up under the path template's static prefix by :meth:`AwsSecretsManager.check`."""
DESCRIPTION: Final = "Written by connections-bot: rotate and remove it through the bot."
CURRENT: Final = "AWSCURRENT"

_NOT_FOUND: Final = "ResourceNotFoundException"
_EXISTS: Final = "ResourceExistsException"
_INVALID_REQUEST: Final = "InvalidRequestException"
_ACCESS_DENIED: Final = frozenset({"AccessDeniedException", "AccessDenied", "NotAuthorized", "401", "403"})
_NOT_AUTHENTICATED: Final = frozenset(
    {
        "UnrecognizedClientException",
        "InvalidClientTokenId",
        "InvalidSignatureException",
        "SignatureDoesNotMatch",
        "IncompleteSignature",
        "MissingAuthenticationToken",
        "ExpiredTokenException",
        "ExpiredToken",
        "RequestExpired",
        "OptInRequired",
    }
)
_UNAVAILABLE: Final = frozenset(
    {
        "InternalServiceError",
        "InternalFailure",
        "InternalServiceFailure",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "RequestTimeout",
        "RequestTimeoutException",
    }
)
_CREDENTIAL_ERRORS: Final = (
    NoCredentialsError,
    PartialCredentialsError,
    CredentialRetrievalError,
    TokenRetrievalError,
    NoAuthTokenError,
    SSOError,
)
_SAFE_CODE_CHARACTERS: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-")

_R = TypeVar("_R")


@dataclass(frozen=True)
class _State:
    """What DescribeSecret says about a secret, without its value."""

    current: str | None
    deleted: bool


class AwsSecretsManager(SecretStore):
    key = "aws"
    title = "AWS Secrets Manager"

    def __init__(
        self,
        client: SecretsManagerClient,
        *,
        region: str,
        recovery_days: int = DEFAULT_RECOVERY_DAYS,
        paths: PathTemplate | None = None,
        held: tuple[Secret, ...] = (),
    ) -> None:
        if recovery_days != 0 and recovery_days not in RECOVERY_DAYS:
            raise ValueError("recovery_days must be 0 or between 7 and 30")
        self._client = client
        self.region = region
        self.recovery_days = recovery_days
        self.probe_name = (paths or PathTemplate()).prefix + PROBE_NAME
        self._threads = ThreadPoolExecutor(max_workers=THREADS, thread_name_prefix="aws-secrets")
        # Alive as long as the store, so the log filter masks the bot's own AWS secret key.
        self._held = held

    @classmethod
    def from_environment(cls, env: Mapping[str, str]) -> Self:
        """The settings in the module docstring; a bad one raises ConfigError naming it."""

        def get(name: str) -> str:
            return (env.get(name) or "").strip()

        region = get("AWS_REGION") or get("AWS_DEFAULT_REGION")
        if not region:
            raise ConfigError(
                "AWS_REGION is required for CONNECTIONS_SECRET_STORE=aws (or AWS_DEFAULT_REGION): "
                "the region of the secrets, e.g. eu-west-1"
            )
        endpoint = get("AWS_ENDPOINT_URL_SECRETS_MANAGER") or get("AWS_ENDPOINT_URL")
        if endpoint and not endpoint.startswith(("https://", "http://")):
            raise ConfigError("AWS_ENDPOINT_URL must be a URL starting with https:// (or http://)")
        recovery_days = _recovery_days(get("CONNECTIONS_AWS_RECOVERY_DAYS"))
        try:
            paths = PathTemplate(get("CONNECTIONS_SECRET_PATH") or DEFAULT_SECRET_PATH)
        except ValueError as exc:
            raise ConfigError(f"CONNECTIONS_SECRET_PATH {exc}") from None
        key_id, secret_key, token = (
            get("AWS_ACCESS_KEY_ID"),
            get("AWS_SECRET_ACCESS_KEY"),
            get("AWS_SESSION_TOKEN"),
        )
        if bool(key_id) != bool(secret_key):
            raise ConfigError("AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY must be set together")
        profile = get("AWS_PROFILE") or None
        session = botocore.session.Session(profile=profile)
        session.register_component("data_loader", _models())
        try:
            client = session.create_client(
                "secretsmanager",
                region_name=region,
                endpoint_url=endpoint or None,
                aws_access_key_id=key_id or None,
                aws_secret_access_key=secret_key or None,
                aws_session_token=token or None,
                config=Config(
                    connect_timeout=CONNECT_TIMEOUT,
                    read_timeout=READ_TIMEOUT,
                    retries={"mode": "standard", "total_max_attempts": ATTEMPTS},
                    max_pool_connections=THREADS,
                ),
            )
        except ProfileNotFound:
            raise ConfigError(f"AWS_PROFILE={profile} is not a profile in the AWS config files") from None
        held = tuple(Secret(value) for value in (secret_key, token) if value)
        return cls(
            cast("SecretsManagerClient", client),
            region=region,
            recovery_days=recovery_days,
            paths=paths,
            held=held,
        )

    def __repr__(self) -> str:
        return f"AwsSecretsManager(region={self.region!r}, recovery_days={self.recovery_days})"

    def where(self, path: str) -> str:
        return f"{self.title} `{path}` in {self.region}"

    # --- the store's calls --------------------------------------------------------------------

    async def write(
        self,
        path: str,
        fields: Mapping[str, str | Secret],
        *,
        token: str,
        replaces: str | None,
        metadata: Mapping[str, str],
    ) -> Written:
        value = _encode(fields)
        tags: list[TagTypeDef] = [{"Key": key, "Value": text} for key, text in metadata.items()]
        if replaces is None:
            return await self._create(path, value, token, tags)
        return await self._rotate(path, value, token, replaces, tags)

    async def read(self, path: str) -> StoredSecret:
        try:
            answer = await self._call(
                "read", path, functools.partial(self._client.get_secret_value, SecretId=path)
            )
        except StoreError as exc:
            if exc.code != _INVALID_REQUEST:
                raise
            # GetSecretValue's answer for a secret scheduled for deletion.
            raise StoreError(
                StoreFailure.NOT_FOUND, f"`{path}` is scheduled for deletion", code=exc.code
            ) from None
        fields = _decode(answer.get("SecretString"))
        if fields is None:
            raise StoreError(
                StoreFailure.REFUSED,
                f"`{path}` does not hold a JSON object of strings, as the bot writes: it was changed "
                "outside the bot",
                code="NotAJsonObject",
            )
        return StoredSecret(version=answer["VersionId"], fields=fields)

    async def delete(self, path: str) -> None:
        if self.recovery_days == 0:
            call = functools.partial(
                self._client.delete_secret, SecretId=path, ForceDeleteWithoutRecovery=True
            )
        else:
            call = functools.partial(
                self._client.delete_secret, SecretId=path, RecoveryWindowInDays=self.recovery_days
            )
        try:
            await self._call("delete", path, call)
        except StoreError as exc:
            if exc.code == _NOT_FOUND:
                return
            if exc.code != _INVALID_REQUEST or not (await self._describe("delete", path)).deleted:
                raise
            # Already scheduled for deletion: removed as far as the bot is concerned.

    async def check(self) -> StoreCheck:
        probe = self.probe_name
        try:
            await self._call("check", probe, functools.partial(self._client.describe_secret, SecretId=probe))
        except StoreError as exc:
            if exc.code == _NOT_FOUND:
                return StoreCheck(reachable=True, authenticated=True)
            if exc.failure is StoreFailure.UNREACHABLE:
                return StoreCheck(reachable=False, authenticated=False, detail=str(exc))
            return StoreCheck(reachable=True, authenticated=False, detail=str(exc))
        # Someone made a secret of the probe's name: the bot may still look it up.
        return StoreCheck(reachable=True, authenticated=True)

    async def close(self) -> None:
        self._threads.shutdown(wait=False, cancel_futures=True)
        self._client.close()

    # --- steps --------------------------------------------------------------------------------

    async def _create(self, path: str, value: str, token: str, tags: list[TagTypeDef]) -> Written:
        create = functools.partial(
            self._client.create_secret,
            Name=path,
            SecretString=value,
            ClientRequestToken=token,
            Tags=tags,
            Description=DESCRIPTION,
        )
        try:
            await self._call("write", path, create)
            # The token becomes the VersionId; a retry of the same write is answered the same way.
            return Written(version=token)
        except StoreError as exc:
            if exc.code not in (_EXISTS, _INVALID_REQUEST):
                raise
            code = exc.code
        state = await self._describe("write", path)
        if state.deleted:
            # A connection removed and registered again: its name is reused, its history kept.
            await self._call("write", path, functools.partial(self._client.restore_secret, SecretId=path))
            logger.info("Restored %s, scheduled for deletion, to write its new version", path)
            return await self._put(path, value, token, tags)
        if state.current == token:
            # A retry of a write that landed; tag again in case it stopped before its tags.
            await self._tag(path, tags)
            return Written(version=token)
        raise StoreError(
            StoreFailure.CONFLICT,
            f"`{path}` holds a secret the bot did not write for this connection",
            code=code,
        )

    async def _rotate(
        self, path: str, value: str, token: str, replaces: str, tags: list[TagTypeDef]
    ) -> Written:
        try:
            state = await self._describe("write", path)
        except StoreError as exc:
            if exc.failure is not StoreFailure.NOT_FOUND:
                raise
            raise StoreError(
                StoreFailure.CONFLICT, f"`{path}` changed outside the bot: it no longer exists", code=exc.code
            ) from None
        if state.current == token and not state.deleted:
            await self._tag(path, tags)
            return Written(version=token)
        if state.deleted:
            raise StoreError(
                StoreFailure.CONFLICT,
                f"`{path}` changed outside the bot: it is scheduled for deletion",
                code="ScheduledForDeletion",
            )
        if state.current != replaces:
            raise StoreError(
                StoreFailure.CONFLICT,
                f"`{path}` changed outside the bot: its current version is not the one the bot wrote",
                code="VersionMismatch",
            )
        return await self._put(path, value, token, tags)

    async def _put(self, path: str, value: str, token: str, tags: list[TagTypeDef]) -> Written:
        put = functools.partial(
            self._client.put_secret_value, SecretId=path, SecretString=value, ClientRequestToken=token
        )
        try:
            await self._call("write", path, put)
        except StoreError as exc:
            if exc.code != _EXISTS:
                raise
            # The token named another value already: this write's version exists and differs.
            raise StoreError(
                StoreFailure.CONFLICT,
                f"`{path}` changed outside the bot: the version this write names holds another value",
                code=exc.code,
            ) from None
        await self._tag(path, tags)
        return Written(version=token)

    async def _tag(self, path: str, tags: list[TagTypeDef]) -> None:
        if tags:
            await self._call(
                "write", path, functools.partial(self._client.tag_resource, SecretId=path, Tags=tags)
            )

    async def _describe(self, verb: str, path: str) -> _State:
        answer = await self._call(verb, path, functools.partial(self._client.describe_secret, SecretId=path))
        stages = answer.get("VersionIdsToStages") or {}
        current = next((version for version, labels in stages.items() if CURRENT in labels), None)
        return _State(current=current, deleted=answer.get("DeletedDate") is not None)

    async def _call(self, verb: str, path: str, call: Callable[[], _R]) -> _R:
        """``call`` in the store's threads; any failure as a StoreError with nothing attached."""
        loop = asyncio.get_running_loop()
        failure: StoreError
        try:
            return await loop.run_in_executor(self._threads, call)
        except ClientError as exc:
            failure = _from_client_error(exc, verb, path)
        except BotoCoreError as exc:
            failure = _from_botocore_error(exc, verb, path)
        # Raised outside the handler, so that neither __cause__ nor __context__ holds botocore's
        # exception (its text and its parameters can carry what was sent).
        raise failure


@functools.cache
def _models() -> botocore.loaders.Loader:
    """botocore's service models, parsed once per process (a tenth of a second per client
    otherwise): every store the process builds shares them."""
    return botocore.loaders.create_loader()


def _recovery_days(text: str) -> int:
    if not text:
        return DEFAULT_RECOVERY_DAYS
    try:
        days = int(text)
    except ValueError:
        days = -1
    if days != 0 and days not in RECOVERY_DAYS:
        raise ConfigError(
            "CONNECTIONS_AWS_RECOVERY_DAYS must be 0 (delete at once) or a whole number of days "
            f"from 7 to 30, not {text!r}"
        )
    return days


def _encode(fields: Mapping[str, str | Secret]) -> str:
    """One JSON object of strings, empty fields left out, keys sorted: the same fields always give
    the same text, which AWS compares when a token is used again."""
    values = {name: value.reveal() if isinstance(value, Secret) else value for name, value in fields.items()}
    return json.dumps({name: value for name, value in sorted(values.items()) if value})


def _decode(text: str | None) -> dict[str, Secret] | None:
    """The fields of a secret the bot wrote, or None for anything else (never quoted anywhere)."""
    if text is None:
        return None
    try:
        value: Any = json.loads(text)
    except ValueError:
        return None
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        return None
    return {name: Secret(field) for name, field in value.items()}


def _code(text: object) -> str:
    code = str(text or "")
    if not code or len(code) > 64 or not set(code) <= _SAFE_CODE_CHARACTERS:
        return "UnknownError"
    return code


def _from_client_error(exc: ClientError, verb: str, path: str) -> StoreError:
    code = _code(exc.response.get("Error", {}).get("Code"))
    if code in _ACCESS_DENIED:
        return StoreError(StoreFailure.DENIED, f"the bot may not {verb} `{path}`: {code}", code=code)
    if code in _NOT_AUTHENTICATED:
        return StoreError(
            StoreFailure.DENIED,
            f"AWS Secrets Manager does not accept the bot's credentials (to {verb} `{path}`): {code}",
            code=code,
        )
    if code == _NOT_FOUND:
        return StoreError(StoreFailure.NOT_FOUND, f"no secret at `{path}`: {code}", code=code)
    if code == _EXISTS:
        return StoreError(StoreFailure.CONFLICT, f"`{path}` already exists: {code}", code=code)
    if code in _UNAVAILABLE or code.startswith("5"):
        return StoreError(
            StoreFailure.UNREACHABLE,
            f"AWS Secrets Manager could not {verb} `{path}` just now: {code}",
            code=code,
        )
    return StoreError(
        StoreFailure.REFUSED, f"AWS Secrets Manager refused to {verb} `{path}`: {code}", code=code
    )


def _from_botocore_error(exc: BotoCoreError, verb: str, path: str) -> StoreError:
    code = type(exc).__name__
    if isinstance(exc, BotoConnectionError | HTTPClientError):
        return StoreError(
            StoreFailure.UNREACHABLE,
            f"AWS Secrets Manager did not answer when the bot tried to {verb} `{path}`: {code}",
            code=code,
        )
    if isinstance(exc, _CREDENTIAL_ERRORS):
        return StoreError(
            StoreFailure.DENIED,
            f"the bot has no usable AWS credentials (environment, profile or role) to {verb} "
            f"`{path}`: {code}",
            code=code,
        )
    return StoreError(
        StoreFailure.REFUSED, f"AWS Secrets Manager refused to {verb} `{path}`: {code}", code=code
    )
