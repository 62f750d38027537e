"""AWS Secrets Manager as a secret store, against moto's server enforcing the documented IAM policy.

The store under test signs in as an IAM user holding exactly ``docs/aws-iam-policy.json``, so the
contract suite and every test here also prove that policy is enough; the tests look behind the
store's back with a plain boto3 client as an administrator.
"""

from __future__ import annotations

import io
import json
import logging
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from bot.logs import configure_logging
from bot.redaction import Secret
from bot.settings import ConfigError, Settings
from bot.stores.aws import AwsSecretsManager
from bot.stores.base import SecretStore, StoreError, StoreFailure
from bot.stores.registry import STORES, build_store
from tests.support.moto_server import Identity, MotoServer, bot_policy
from tests.support.processes import refused_port
from tests.unit.stores.contract import METADATA, StoreContract, fields, plain, token

"""One moto server per test worker (a session fixture; move it to a conftest to share it wider)."""
ACTIONS = tuple(bot_policy()["Statement"][0]["Action"])


@pytest.fixture(autouse=True)
def _wire_loggers_put_back() -> Iterator[None]:
    """The contract turns the store clients' loggers to DEBUG; put them back, or every later test
    of the worker pays for formatting botocore's debug lines."""
    names = ("botocore", "boto3", "urllib3", "hvac", "requests")
    levels = {name: logging.getLogger(name).level for name in names}
    yield
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


class TestAwsSecretsManager(StoreContract):
    @pytest.fixture(autouse=True)
    def _server(self, aws_server: MotoServer) -> None:
        self.server = aws_server

    @asynccontextmanager
    async def working(self) -> AsyncIterator[SecretStore]:
        async with _store(self.server.environment(self.server.bot)) as store:
            yield store

    @asynccontextmanager
    async def denied(self) -> AsyncIterator[SecretStore]:
        async with _store(self.server.environment(self.server.nobody)) as store:
            yield store

    @asynccontextmanager
    async def unreachable(self) -> AsyncIterator[SecretStore]:
        with refused_port() as port:
            env = self.server.environment(self.server.bot, AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}")
            async with _store(env) as store:
                yield store


@asynccontextmanager
async def _store(env: dict[str, str]) -> AsyncIterator[AwsSecretsManager]:
    store = AwsSecretsManager.from_environment(env)
    try:
        yield store
    finally:
        await store.close()


def _path(prefix: str = "connections") -> str:
    return f"{prefix}/T0TEST/confluent_cloud/db-{uuid.uuid4().hex[:12]}"


def _secret() -> str:
    return "s3cr3t-" + uuid.uuid4().hex


def _working(server: MotoServer, **settings: str) -> AbstractAsyncContextManager[AwsSecretsManager]:
    return _store(server.environment(server.bot, **settings))


def _stages(server: MotoServer, path: str) -> dict[str, list[str]]:
    return dict(server.secrets().describe_secret(SecretId=path)["VersionIdsToStages"])


def _tags(server: MotoServer, path: str) -> dict[str, str]:
    tags = server.secrets().describe_secret(SecretId=path).get("Tags", [])
    return {tag["Key"]: tag["Value"] for tag in tags}


def _error_code(call: Any) -> str:
    with pytest.raises(ClientError) as raised:
        call()
    return str(raised.value.response["Error"]["Code"])


# --- versions, labels and tags --------------------------------------------------------------------


async def test_a_rotation_makes_the_new_version_current_and_the_old_one_previous(
    aws_server: MotoServer,
) -> None:
    async with _working(aws_server) as store:
        path, old, new = _path(), fields(_secret()), fields(_secret())
        first = await store.write(path, old, token=token(), replaces=None, metadata=METADATA)
        once = token()
        second = await store.write(path, new, token=once, replaces=first.version, metadata=METADATA)
    assert second.version == once  # the ClientRequestToken is the VersionId
    assert _stages(aws_server, path) == {first.version: ["AWSPREVIOUS"], second.version: ["AWSCURRENT"]}
    admin = aws_server.secrets()
    previous = admin.get_secret_value(SecretId=path, VersionStage="AWSPREVIOUS")
    assert json.loads(previous["SecretString"]) == plain(old)
    assert json.loads(admin.get_secret_value(SecretId=path)["SecretString"]) == plain(new)


async def test_the_secret_is_one_json_object_of_strings_without_empty_fields(
    aws_server: MotoServer,
) -> None:
    # What a pipeline reads with `aws secretsmanager get-secret-value --query SecretString`.
    values: dict[str, str | Secret] = {
        "api_key": Secret("AKEYAKEYAKEY"),
        "api_secret": Secret(_secret()),
        "rest_endpoint": "",
        "cluster_id": "lkc-1",
    }
    async with _working(aws_server) as store:
        path = _path()
        await store.write(path, values, token=token(), replaces=None, metadata=METADATA)
    text = aws_server.secrets().get_secret_value(SecretId=path)["SecretString"]
    assert json.loads(text) == {k: v for k, v in plain(values).items() if v}


async def test_tags_carry_the_metadata_and_follow_a_rotation(aws_server: MotoServer) -> None:
    async with _working(aws_server) as store:
        path = _path()
        first = await store.write(path, fields(_secret()), token=token(), replaces=None, metadata=METADATA)
        assert _tags(aws_server, path) == METADATA
        later = {**METADATA, "approved-by": "U0ADMIN02", "approved-at": "2026-12-09T08:00:00+00:00"}
        await store.write(path, fields(_secret()), token=token(), replaces=first.version, metadata=later)
    assert _tags(aws_server, path) == later


async def test_a_change_made_with_the_aws_cli_is_reported_not_overwritten(
    aws_server: MotoServer,
) -> None:
    async with _working(aws_server) as store:
        path = _path()
        first = await store.write(path, fields(_secret()), token=token(), replaces=None, metadata=METADATA)
        theirs = json.dumps({"api_key": "OTHER", "api_secret": _secret()})
        aws_server.secrets().put_secret_value(SecretId=path, SecretString=theirs)
        with pytest.raises(StoreError) as raised:
            await store.write(
                path, fields(_secret()), token=token(), replaces=first.version, metadata=METADATA
            )
        assert raised.value.failure is StoreFailure.CONFLICT
        assert "changed outside the bot" in str(raised.value) and path in str(raised.value)
        stored = await store.read(path)
    assert stored.version != first.version
    assert {k: v.reveal() for k, v in stored.fields.items()} == json.loads(theirs)


@pytest.mark.parametrize("gone", ["deleted for good", "scheduled for deletion"])
async def test_a_rotation_of_a_secret_removed_outside_the_bot_is_a_conflict(
    aws_server: MotoServer,
    gone: str,
) -> None:
    async with _working(aws_server) as store:
        path = _path()
        first = await store.write(path, fields(_secret()), token=token(), replaces=None, metadata=METADATA)
        if gone == "deleted for good":
            aws_server.secrets().delete_secret(SecretId=path, ForceDeleteWithoutRecovery=True)
        else:
            aws_server.secrets().delete_secret(SecretId=path, RecoveryWindowInDays=7)
        with pytest.raises(StoreError) as raised:
            await store.write(
                path, fields(_secret()), token=token(), replaces=first.version, metadata=METADATA
            )
    assert raised.value.failure is StoreFailure.CONFLICT
    assert "changed outside the bot" in str(raised.value)


# --- deletion -------------------------------------------------------------------------------------


async def test_a_delete_keeps_the_secret_recoverable_for_the_configured_days(
    aws_server: MotoServer,
) -> None:
    async with _working(aws_server, CONNECTIONS_AWS_RECOVERY_DAYS="10") as store:
        path = _path()
        await store.write(path, fields(_secret()), token=token(), replaces=None, metadata=METADATA)
        await store.delete(path)
        deleted = datetime.now(UTC)
    described = aws_server.secrets().describe_secret(SecretId=path)
    assert abs(described["DeletedDate"] - (deleted + timedelta(days=10))) < timedelta(hours=1)
    # Still there to restore, for whoever has the right to.
    aws_server.secrets().restore_secret(SecretId=path)


async def test_a_recovery_window_of_zero_deletes_for_good(aws_server: MotoServer) -> None:
    async with _working(aws_server, CONNECTIONS_AWS_RECOVERY_DAYS="0") as store:
        path = _path()
        await store.write(path, fields(_secret()), token=token(), replaces=None, metadata=METADATA)
        await store.delete(path)
        assert _error_code(lambda: aws_server.secrets().describe_secret(SecretId=path)) == (
            "ResourceNotFoundException"
        )
        again = await store.write(path, fields(_secret()), token=token(), replaces=None, metadata=METADATA)
    assert _stages(aws_server, path) == {again.version: ["AWSCURRENT"]}  # a new secret, no history


async def test_writing_again_after_a_delete_restores_the_name_and_writes_a_new_version(
    aws_server: MotoServer,
) -> None:
    # A connection removed and registered again under its name.
    async with _working(aws_server) as store:
        path = _path()
        old = await store.write(path, fields(_secret()), token=token(), replaces=None, metadata=METADATA)
        arn = aws_server.secrets().describe_secret(SecretId=path)["ARN"]
        await store.delete(path)
        metadata = {**METADATA, "connection-id": str(uuid.uuid4())}
        values, once = fields(_secret()), token()
        new = await store.write(path, values, token=once, replaces=None, metadata=metadata)
        retried = await store.write(path, values, token=once, replaces=None, metadata=metadata)
        stored = await store.read(path)
    described = aws_server.secrets().describe_secret(SecretId=path)
    assert described["ARN"] == arn and "DeletedDate" not in described
    assert new.version == retried.version == stored.version == once
    assert _stages(aws_server, path) == {old.version: ["AWSPREVIOUS"], new.version: ["AWSCURRENT"]}
    assert _tags(aws_server, path) == metadata
    assert {k: v.reveal() for k, v in stored.fields.items()} == plain(values)


# --- what the store reads -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "stored",
    ["plain text {secret}", '["{secret}"]', '{{"api_secret": "{secret}", "port": 5439}}', "binary"],
)
async def test_a_value_the_bot_did_not_write_is_refused_without_quoting_it(
    aws_server: MotoServer,
    stored: str,
) -> None:
    path, secret = _path(), _secret()
    if stored == "binary":
        aws_server.secrets().create_secret(Name=path, SecretBinary=secret.encode())
    else:
        aws_server.secrets().create_secret(Name=path, SecretString=stored.format(secret=secret))
    async with _working(aws_server) as store:
        with pytest.raises(StoreError) as raised:
            await store.read(path)
    assert raised.value.failure is StoreFailure.REFUSED
    assert path in str(raised.value) and "JSON object of strings" in str(raised.value)
    assert secret not in str(raised.value) and secret not in repr(raised.value)
    assert raised.value.__cause__ is None and raised.value.__context__ is None


async def test_reading_a_secret_scheduled_for_deletion_is_not_found(
    aws_server: MotoServer,
) -> None:
    async with _working(aws_server) as store:
        path = _path()
        await store.write(path, fields(_secret()), token=token(), replaces=None, metadata=METADATA)
        aws_server.secrets().delete_secret(SecretId=path, RecoveryWindowInDays=7)
        with pytest.raises(StoreError) as raised:
            await store.read(path)
    assert raised.value.failure is StoreFailure.NOT_FOUND
    assert path in str(raised.value)


# --- the documented policy ------------------------------------------------------------------------


async def _journey(store: SecretStore) -> None:
    """Every call the bot makes: health, create (and its retry), rotate, read, delete, re-create."""
    check = await store.check()
    if not check.ok:
        raise StoreError(StoreFailure.DENIED, check.detail)
    path, values, once = _path(), fields(_secret()), token()
    first = await store.write(path, values, token=once, replaces=None, metadata=METADATA)
    await store.write(path, values, token=once, replaces=None, metadata=METADATA)
    await store.write(path, fields(_secret()), token=token(), replaces=first.version, metadata=METADATA)
    await store.read(path)
    await store.delete(path)
    await store.write(path, fields(_secret()), token=token(), replaces=None, metadata=METADATA)
    await store.delete(path)


async def test_the_documented_policy_allows_every_call_the_store_makes(
    aws_server: MotoServer,
) -> None:
    identity = aws_server.create_identity(bot_policy())
    async with _store(aws_server.environment(identity)) as store:
        await _journey(store)


@pytest.mark.parametrize("action", ACTIONS)
async def test_every_action_of_the_documented_policy_is_needed(
    aws_server: MotoServer,
    action: str,
) -> None:
    policy = bot_policy()
    policy["Statement"][0]["Action"] = [a for a in ACTIONS if a != action]
    identity = aws_server.create_identity(policy)
    async with _store(aws_server.environment(identity)) as store:
        with pytest.raises(StoreError) as raised:
            await _journey(store)
    assert raised.value.failure is StoreFailure.DENIED
    assert "AccessDeniedException" in str(raised.value)


async def test_the_policy_refuses_paths_outside_its_prefix(aws_server: MotoServer) -> None:
    path = _path(prefix="elsewhere")
    async with _working(aws_server) as store:
        for verb, call in (
            ("write", store.write(path, fields(_secret()), token=token(), replaces=None, metadata=METADATA)),
            ("read", store.read(path)),
            ("delete", store.delete(path)),
        ):
            with pytest.raises(StoreError) as raised:
                await call
            assert raised.value.failure is StoreFailure.DENIED
            assert str(raised.value) == f"the bot may not {verb} `{path}`: AccessDeniedException"
    assert _error_code(lambda: aws_server.secrets().describe_secret(SecretId=path)) == (
        "ResourceNotFoundException"
    )


async def test_the_health_probe_looks_under_the_path_templates_prefix(
    aws_server: MotoServer,
) -> None:
    # The documented policy covers connections/*: a template elsewhere needs a policy of its own.
    async with _working(aws_server, CONNECTIONS_SECRET_PATH="platform/{team}/{provider}/{name}") as store:
        check = await store.check()
        assert store.probe_name == "platform/.bot-health-check"
    assert check.reachable and not check.authenticated
    assert "platform/.bot-health-check" in check.detail and "AccessDeniedException" in check.detail
    async with _working(aws_server) as store:
        assert store.probe_name == "connections/.bot-health-check"
        assert (await store.check()).ok


async def test_unknown_credentials_are_not_authenticated_and_nothing_is_chained(
    aws_server: MotoServer,
) -> None:
    unknown = aws_server.environment(aws_server.bot, AWS_ACCESS_KEY_ID="AKIAUNKNOWNUNKNOWN00")
    wrong = aws_server.environment(aws_server.bot, AWS_SECRET_ACCESS_KEY="not-the-key")
    for env, code in ((unknown, "UnrecognizedClientException"), (wrong, "InvalidSignatureException")):
        async with _store(env) as store:
            check = await store.check()
            assert check.reachable and not check.authenticated and code in check.detail
            path, secret = _path(), _secret()
            with pytest.raises(StoreError) as raised:
                await store.write(path, fields(secret), token=token(), replaces=None, metadata=METADATA)
        assert raised.value.failure is StoreFailure.DENIED and raised.value.code == code
        assert path in str(raised.value) and secret not in str(raised.value)
        assert raised.value.__cause__ is None and raised.value.__context__ is None


# --- logs -----------------------------------------------------------------------------------------


@contextmanager
def _bot_logging(stream: io.StringIO) -> Iterator[list[str]]:
    """The bot's own logging at DEBUG into ``stream``; yields what botocore emitted, unfiltered."""
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    emitted: list[str] = []

    class Everything(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            emitted.append(record.getMessage())

    everything = Everything(logging.DEBUG)
    botocore = logging.getLogger("botocore")
    handler = configure_logging("DEBUG", stream)
    botocore.addHandler(everything)
    try:
        yield emitted
    finally:
        botocore.removeHandler(everything)
        root.removeHandler(handler)
        for old in saved_handlers:
            root.addHandler(old)
        root.setLevel(saved_level)


async def test_botocore_debug_lines_with_the_secret_never_reach_the_bots_log(
    aws_server: MotoServer,
) -> None:
    secret, stream = _secret(), io.StringIO()
    with _bot_logging(stream) as emitted:
        async with _working(aws_server) as store:
            path = _path()
            await store.write(path, fields(secret), token=token(), replaces=None, metadata=METADATA)
            await store.read(path)
            await store.delete(path)
            await store.write(path, fields(secret), token=token(), replaces=None, metadata=METADATA)
    # botocore did print the request and response bodies, secret and all...
    assert any(secret in line for line in emitted)
    # ...and none of it left through the bot's handler, which did pass the store's own lines.
    assert f"Restored {path}" in stream.getvalue()
    assert secret not in stream.getvalue()


# --- settings -------------------------------------------------------------------------------------


BASE = {"AWS_REGION": "eu-west-1", "AWS_ACCESS_KEY_ID": "AKIAEXAMPLE", "AWS_SECRET_ACCESS_KEY": "k"}


@pytest.fixture
def no_aws_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No AWS settings or files of the machine the tests run on."""
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))


@pytest.mark.usefixtures("no_aws_files")
@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({**BASE, "AWS_REGION": ""}, "AWS_REGION"),
        ({**BASE, "CONNECTIONS_AWS_RECOVERY_DAYS": "3"}, "CONNECTIONS_AWS_RECOVERY_DAYS"),
        ({**BASE, "CONNECTIONS_AWS_RECOVERY_DAYS": "31"}, "CONNECTIONS_AWS_RECOVERY_DAYS"),
        ({**BASE, "CONNECTIONS_AWS_RECOVERY_DAYS": "a week"}, "CONNECTIONS_AWS_RECOVERY_DAYS"),
        ({**BASE, "CONNECTIONS_AWS_RECOVERY_DAYS": "-7"}, "CONNECTIONS_AWS_RECOVERY_DAYS"),
        ({**BASE, "AWS_SECRET_ACCESS_KEY": ""}, "AWS_SECRET_ACCESS_KEY"),
        ({**BASE, "AWS_PROFILE": "nowhere"}, "AWS_PROFILE"),
        ({**BASE, "AWS_ENDPOINT_URL": "localhost:4566"}, "AWS_ENDPOINT_URL"),
        ({**BASE, "CONNECTIONS_SECRET_PATH": "connections/{name}"}, "CONNECTIONS_SECRET_PATH"),
    ],
)
def test_a_bad_setting_is_a_config_error_naming_it(env: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError) as raised:
        AwsSecretsManager.from_environment(env)
    assert variable in str(raised.value)
    assert BASE["AWS_SECRET_ACCESS_KEY"] + "\n" not in str(raised.value)


@pytest.mark.usefixtures("no_aws_files")
@pytest.mark.parametrize(("text", "days"), [("", 7), ("0", 0), ("7", 7), ("30", 30), (" 14 ", 14)])
def test_the_recovery_window_takes_0_or_7_to_30_days(text: str, days: int) -> None:
    store = AwsSecretsManager.from_environment({**BASE, "CONNECTIONS_AWS_RECOVERY_DAYS": text})
    assert store.recovery_days == days


@pytest.mark.usefixtures("no_aws_files")
def test_the_region_may_come_from_aws_default_region() -> None:
    env = {**BASE, "AWS_REGION": "", "AWS_DEFAULT_REGION": "ap-southeast-2"}
    store = AwsSecretsManager.from_environment(env)
    assert store.region == "ap-southeast-2"
    assert store.where("connections/x") == "AWS Secrets Manager `connections/x` in ap-southeast-2"


@pytest.mark.usefixtures("no_aws_files")
def test_the_store_is_registered_and_built_from_the_settings() -> None:
    settings = Settings.from_mapping(
        {
            "SLACK_BOT_TOKEN": "xoxb-1",
            "SLACK_APP_TOKEN": "xapp-1-abc",
            "CONNECTIONS_SECRET_STORE": "aws",
            **BASE,
        }
    )
    assert STORES["aws"] == AwsSecretsManager.from_environment
    store = build_store(settings)
    assert isinstance(store, AwsSecretsManager) and store.key == "aws"
    assert "AKIAEXAMPLE" not in repr(store)


# --- the server the tests use is as strict as AWS -------------------------------------------------


def test_the_server_refuses_an_identity_without_a_policy_as_aws_does(aws_server: MotoServer) -> None:
    nobody = aws_server.secrets(aws_server.nobody)
    assert _error_code(lambda: nobody.describe_secret(SecretId=_path())) == "AccessDeniedException"


def test_the_server_checks_the_policys_resource_against_the_secrets_arn(aws_server: MotoServer) -> None:
    bot = aws_server.secrets(aws_server.bot)
    inside, outside = _path(), _path(prefix="elsewhere")
    bot.create_secret(Name=inside, SecretString="{}")
    aws_server.secrets().create_secret(Name=outside, SecretString="{}")
    assert bot.describe_secret(SecretId=inside)["Name"] == inside
    for name in (outside, aws_server.secrets().describe_secret(SecretId=outside)["ARN"]):
        assert _error_code(lambda name=name: bot.describe_secret(SecretId=name)) == "AccessDeniedException"


def test_the_server_refuses_unknown_keys_and_bad_signatures_as_aws_does(aws_server: MotoServer) -> None:
    unknown = aws_server.secrets(Identity("unknown", "AKIAUNKNOWNUNKNOWN00", "x"))
    forged = aws_server.secrets(Identity("forged", aws_server.bot.access_key_id, "not-the-key"))
    assert _error_code(lambda: unknown.list_secrets()) == "UnrecognizedClientException"
    assert _error_code(lambda: forged.list_secrets()) == "InvalidSignatureException"


def test_the_server_treats_a_secret_scheduled_for_deletion_as_aws_does(aws_server: MotoServer) -> None:
    admin, path = aws_server.secrets(), _path()
    admin.create_secret(Name=path, SecretString="{}", ClientRequestToken=token())
    admin.delete_secret(SecretId=path, RecoveryWindowInDays=7)
    assert _error_code(
        lambda: admin.create_secret(Name=path, SecretString="{}", ClientRequestToken=token())
    ) == ("InvalidRequestException")
    assert _error_code(
        lambda: admin.put_secret_value(SecretId=path, SecretString="{}", ClientRequestToken=token())
    ) == ("InvalidRequestException")
    assert _error_code(lambda: admin.get_secret_value(SecretId=path)) == "InvalidRequestException"


def test_the_server_refuses_a_token_used_again_for_another_value(aws_server: MotoServer) -> None:
    admin, path, once = aws_server.secrets(), _path(), token()
    admin.create_secret(Name=path, SecretString='{"a": "1"}')
    admin.put_secret_value(SecretId=path, SecretString='{"a": "2"}', ClientRequestToken=once)
    same = admin.put_secret_value(SecretId=path, SecretString='{"a": "2"}', ClientRequestToken=once)
    assert same["VersionId"] == once and len(_stages(aws_server, path)) == 2
    assert _error_code(
        lambda: admin.put_secret_value(SecretId=path, SecretString='{"a": "3"}', ClientRequestToken=once)
    ) == ("ResourceExistsException")
