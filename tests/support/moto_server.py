"""Moto's standalone server, as the AWS Secrets Manager the tests talk to.

The real boto3 client, wire protocol and SigV4 signatures against ``moto.server`` on loopback, in a
process of its own: one per test worker (the session fixture :func:`aws_server`), shared by every
test, each test writing under paths of its own.

The server enforces IAM as AWS does (moto's ``INITIAL_NO_AUTH_ACTION_COUNT``, switched to 0 once
the identities below exist), so that the tests prove the policy we document is enough:

* ``admin`` may do anything: the tests inspect and arrange the server through it;
* ``bot`` holds exactly ``docs/aws-iam-policy.json``: the identity the store under test uses;
* ``nobody`` holds no policy at all: a store with it is refused everything.

Where the bot depends on what AWS documents and moto does not do, the server process patches moto
to behave as AWS (see :func:`_make_moto_faithful`); ``tests/unit/stores/test_aws.py`` proves each.

Run as ``python -m tests.support.moto_server PORT`` (from the repository's root) to serve.
"""

from __future__ import annotations

import functools
import http.client
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import botocore.loaders
import botocore.session
import pytest

from tests.support.processes import free_port

if TYPE_CHECKING:
    from mypy_boto3_secretsmanager import SecretsManagerClient

__all__ = ["POLICY_FILE", "Identity", "MotoServer", "aws_server", "bot_policy", "running_moto"]

REPOSITORY = Path(__file__).resolve().parents[2]
POLICY_FILE = REPOSITORY / "docs" / "aws-iam-policy.json"
REGION = "us-east-1"
START_SECONDS = 30.0
BIND_ATTEMPTS = 3
ALLOW_EVERYTHING = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
}


def bot_policy() -> dict[str, Any]:
    """The IAM policy the README tells operators to give the bot, as the docs hold it."""
    policy: dict[str, Any] = json.loads(POLICY_FILE.read_text())
    return policy


@dataclass(frozen=True)
class Identity:
    """An IAM user of the server and its access key."""

    name: str
    access_key_id: str
    secret_access_key: str = ""

    def __repr__(self) -> str:
        return f"Identity({self.name!r})"


@dataclass(frozen=True)
class MotoServer:
    url: str
    admin: Identity
    bot: Identity
    """Holds exactly the documented policy."""
    nobody: Identity
    """Holds no policy."""
    region: str = REGION

    def environment(self, identity: Identity, **extra: str) -> dict[str, str]:
        """Settings for a store (or the bot) that signs in as ``identity``."""
        return {
            "AWS_REGION": self.region,
            "AWS_ENDPOINT_URL": self.url,
            "AWS_ACCESS_KEY_ID": identity.access_key_id,
            "AWS_SECRET_ACCESS_KEY": identity.secret_access_key,
            **extra,
        }

    def secrets(self, identity: Identity | None = None) -> SecretsManagerClient:
        """A plain boto3 client (the admin's by default), to look behind a store's back."""
        who = identity or self.admin
        return _client("secretsmanager", self.url, self.region, who.access_key_id, who.secret_access_key)

    def iam(self) -> Any:
        return _client("iam", self.url, self.region, self.admin.access_key_id, self.admin.secret_access_key)

    def create_identity(self, policy: Mapping[str, Any] | None, *, name: str = "") -> Identity:
        """A new IAM user holding ``policy`` (none: no rights) and an access key for it."""
        return _create_identity(self.iam(), name or f"user-{uuid.uuid4().hex[:12]}", policy)


@functools.cache
def _client(service: str, url: str, region: str, key_id: str, secret: str) -> Any:
    # Cached, and sharing one parse of botocore's models: a new client otherwise takes a tenth of
    # a second, and boto3's clients are thread-safe.
    session = botocore.session.Session()
    session.register_component("data_loader", _models())
    return session.create_client(
        service,
        endpoint_url=url,
        region_name=region,
        aws_access_key_id=key_id,
        aws_secret_access_key=secret,
    )


@functools.cache
def _models() -> botocore.loaders.Loader:
    return botocore.loaders.create_loader()


def _create_identity(iam: Any, name: str, policy: Mapping[str, Any] | None) -> Identity:
    iam.create_user(UserName=name)
    if policy is not None:
        iam.put_user_policy(UserName=name, PolicyName="connections-bot", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return Identity(name, key["AccessKeyId"], key["SecretAccessKey"])


@contextmanager
def running_moto() -> Iterator[MotoServer]:
    """A moto server enforcing IAM, with the identities in the module docstring, until the block ends."""
    for attempt in range(1, BIND_ATTEMPTS + 1):
        try:
            with _running(retry_bind=attempt < BIND_ATTEMPTS) as server:
                yield server
            return
        except _PortTaken:
            continue


class _PortTaken(Exception):
    """Another process bound the free port between our pick and the server's bind."""


@contextmanager
def _running(*, retry_bind: bool) -> Iterator[MotoServer]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MOTO_"))}
    with tempfile.TemporaryFile("w+") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.support.moto_server", str(port)],
            cwd=REPOSITORY,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            _wait_until_answering(url, process, output, retry_bind=retry_bind)
            yield _provision(url)
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_until_answering(url: str, process: subprocess.Popen[str], output: Any, *, retry_bind: bool) -> None:
    deadline = time.monotonic() + START_SECONDS
    while True:
        if process.poll() is not None:
            output.seek(0)
            text = output.read()
            if retry_bind and "address already in use" in text.lower():
                raise _PortTaken(url)
            raise AssertionError(f"moto's server exited with {process.returncode}: {text[-2000:]}")
        if _answers(url):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"moto's server did not answer within {START_SECONDS} s")
        time.sleep(0.05)


def _request(url: str, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
    # http.client, not httpx: no TLS context to build (a fifth of a second each) for a loopback call.
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        connection.request(method, path, body=body)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def _answers(url: str) -> bool:
    try:
        _request(url, "GET", "/moto-api/")
    except OSError:
        return False
    return True


def _provision(url: str) -> MotoServer:
    # Before enforcement any key is accepted: make the identities, then switch IAM on.
    iam = _client("iam", url, REGION, "bootstrap", "bootstrap")
    admin = _create_identity(iam, "admin", ALLOW_EVERYTHING)
    bot = _create_identity(iam, "connections-bot", bot_policy())
    nobody = _create_identity(iam, "nobody", None)
    status, _ = _request(url, "POST", "/moto-api/reset-auth", b"0")
    if status != 200:
        raise AssertionError(f"moto's server did not switch IAM on: {status}")
    return MotoServer(url=url, admin=admin, bot=bot, nobody=nobody)


@pytest.fixture(scope="session")
def aws_server() -> Iterator[MotoServer]:
    """One IAM-enforcing moto server per test worker."""
    with running_moto() as server:
        yield server


# --- the server process ------------------------------------------------------------------------


def _make_moto_faithful() -> None:
    """Patch moto (in the server process only) where it departs from what AWS documents and the
    bot relies on:

    * IAM policies are evaluated against the secret's ARN (moto checks every Secrets Manager call
      against ``*``, so a policy scoped to ``secret:connections/*`` would refuse everything);
    * authentication and authorisation failures come in the JSON protocol Secrets Manager speaks,
      as ``AccessDeniedException``, ``UnrecognizedClientException`` and
      ``InvalidSignatureException`` (moto answers with query-protocol XML that boto3 reads as a
      bare ``403``);
    * CreateSecret of a name scheduled for deletion and PutSecretValue to such a secret fail with
      ``InvalidRequestException`` (moto answers the first with ResourceExistsException and
      accepts the second).
    """
    from moto.core.exceptions import (
        AccessDeniedError,
        InvalidClientTokenIdError,
        JsonRESTError,
        SignatureDoesNotMatchError,
    )
    from moto.secretsmanager.exceptions import InvalidRequestException
    from moto.secretsmanager.models import SecretsManagerBackend
    from moto.secretsmanager.responses import SecretsManagerResponse

    def determine_resource(self: SecretsManagerResponse) -> str:
        name = self._get_param("SecretId") or self._get_param("Name")
        if not isinstance(name, str) or not name:
            return "*"
        if name.startswith("arn:"):
            return name
        secret = self.backend.secrets.get(name)
        if secret is not None:
            return str(secret.arn)
        return f"arn:aws:secretsmanager:{self.region}:{self.current_account}:secret:{name}"

    authorize = SecretsManagerResponse._authenticate_and_authorize_normal_action

    def authorize_in_json(self: SecretsManagerResponse, resource: str = "*") -> None:
        try:
            authorize(self, resource)
        except AccessDeniedError as exc:
            raise _json_error("AccessDeniedException", exc.message, 400) from None
        except InvalidClientTokenIdError as exc:
            raise _json_error("UnrecognizedClientException", exc.message, 403) from None
        except SignatureDoesNotMatchError as exc:
            raise _json_error("InvalidSignatureException", exc.message, 403) from None

    def _json_error(code: str, message: str, status: int) -> JsonRESTError:
        error = JsonRESTError(code, message)
        error.code = status
        return error

    create_secret = SecretsManagerBackend.create_secret
    put_secret_value = SecretsManagerBackend.put_secret_value

    def refuse_if_deleted(backend: SecretsManagerBackend, name: str, message: str) -> None:
        secret = backend.secrets.get(name)
        if secret is not None and secret.is_deleted():
            raise InvalidRequestException(message)

    def create_unless_deleted(self: SecretsManagerBackend, name: str, *args: Any, **kwargs: Any) -> str:
        refuse_if_deleted(
            self,
            name,
            "You can't create this secret because a secret with this name is already scheduled for deletion.",
        )
        return create_secret(self, name, *args, **kwargs)

    def put_unless_deleted(self: SecretsManagerBackend, secret_id: str, *args: Any, **kwargs: Any) -> str:
        refuse_if_deleted(
            self,
            secret_id,
            "You can't perform this operation on the secret because it was marked for deletion.",
        )
        return put_secret_value(self, secret_id, *args, **kwargs)

    SecretsManagerResponse._determine_resource = determine_resource
    SecretsManagerResponse._authenticate_and_authorize_normal_action = authorize_in_json
    SecretsManagerBackend.create_secret = create_unless_deleted
    SecretsManagerBackend.put_secret_value = put_unless_deleted


def _serve(port: str) -> None:
    _make_moto_faithful()
    from moto.server import main

    main(["-H", "127.0.0.1", "-p", port])


if __name__ == "__main__":
    _serve(sys.argv[1])
