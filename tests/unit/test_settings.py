"""Settings from the environment: required values, defaults, and no secret in a repr."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from bot.settings import (
    ConfigError,
    Settings,
    load_database_url,
    load_key_settings,
    load_settings,
    load_store_settings,
)

BASE = {"SLACK_BOT_TOKEN": "xoxb-123-abc-secretvalue", "SLACK_SIGNING_SECRET": "signing-secret-value"}


def test_defaults_follow_the_configuration_contract() -> None:
    settings = Settings.from_mapping(BASE)
    assert settings.slack_api_url == "https://slack.com/api/"
    assert settings.database_url == "sqlite:///connections.db"
    assert (settings.host, settings.port) == ("0.0.0.0", 3000)
    assert settings.admins == frozenset()
    assert not settings.socket_mode


@pytest.mark.parametrize("missing", ["SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET"])
def test_a_missing_required_value_is_named(missing: str) -> None:
    env = {k: v for k, v in BASE.items() if k != missing}
    with pytest.raises(ConfigError, match=missing):
        Settings.from_mapping(env)


def test_socket_mode_needs_no_signing_secret_but_an_xapp_token() -> None:
    settings = Settings.from_mapping({"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_APP_TOKEN": "xapp-1-abc"})
    assert settings.socket_mode
    with pytest.raises(ConfigError, match="SLACK_APP_TOKEN"):
        Settings.from_mapping({"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_APP_TOKEN": "xoxb-wrong"})


def test_values_are_parsed() -> None:
    settings = Settings.from_mapping(
        {
            **BASE,
            "PORT": "8080",
            "CONNECTIONS_ADMINS": " U1, U2 ,,",
            "SLACK_API_URL": "http://127.0.0.1:9/api",
        }
    )
    assert settings.port == 8080
    assert settings.admins == frozenset({"U1", "U2"})
    assert settings.slack_api_url == "http://127.0.0.1:9/api/"


def test_providers_read_their_own_variables_from_the_environment_kept_out_of_the_repr() -> None:
    settings = Settings.from_mapping({**BASE, "SOME_PROVIDER_TOKEN": "provider-secret-value"})
    assert settings.environment["SOME_PROVIDER_TOKEN"] == "provider-secret-value"
    assert "provider-secret-value" not in repr(settings)


@pytest.mark.parametrize("port", ["abc", "70000"])
def test_a_bad_port_is_refused(port: str) -> None:
    with pytest.raises(ConfigError, match="PORT"):
        Settings.from_mapping({**BASE, "PORT": port})


def test_repr_shows_no_token_key_or_database_password() -> None:
    settings = Settings.from_mapping(
        {
            **BASE,
            "CONNECTIONS_MASTER_KEY": "bWFzdGVyLWtleS1iYXNlNjQtdmFsdWU=",
            "DATABASE_URL": "postgresql://bot:hunter2pw@db.internal/connections",
        }
    )
    text = repr(settings)
    assert "hunter2pw" not in text
    for value in (*BASE.values(), "bWFzdGVyLWtleS1iYXNlNjQtdmFsdWU="):
        assert value not in text


def test_dotenv_is_read_and_the_environment_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("SLACK_BOT_TOKEN=xoxb-from-file\nSLACK_SIGNING_SECRET=from-file\nPORT=4000\n")
    for name in ("SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET", "SLACK_APP_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PORT", "5000")
    settings = load_settings(env_file)
    assert settings.slack_bot_token.reveal() == "xoxb-from-file"
    assert settings.port == 5000


KEY = "bWFzdGVyLWtleS1iYXNlNjQtdmFsdWUtMzItYnl0ZXM="


def env_file_with(tmp_path: Path, mode: int, text: str = f"CONNECTIONS_MASTER_KEY={KEY}\n") -> Path:
    env_file = tmp_path / ".env"
    env_file.write_text(f"SLACK_BOT_TOKEN=xoxb-from-file\nSLACK_SIGNING_SECRET=from-file\n{text}")
    env_file.chmod(mode)
    return env_file


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660, 0o602])
@pytest.mark.parametrize("loader", [load_settings, load_key_settings, load_database_url, load_store_settings])
def test_a_dotenv_holding_the_master_key_open_to_others_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: int, loader: Callable[[Path], object]
) -> None:
    monkeypatch.delenv("CONNECTIONS_MASTER_KEY", raising=False)
    env_file = env_file_with(tmp_path, mode)

    with pytest.raises(ConfigError) as caught:
        loader(env_file)

    message = str(caught.value)
    assert f"{env_file} holds CONNECTIONS_MASTER_KEY but is accessible by group or others" in message
    assert f"chmod 600 {env_file}" in message and KEY not in message


def test_a_dotenv_holding_the_master_key_owned_by_another_user_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env_file = env_file_with(tmp_path, 0o600, f"CONNECTIONS_MASTER_KEY_PREVIOUS={KEY}\n")
    monkeypatch.setattr(os, "getuid", lambda: env_file.stat().st_uid + 1)

    with pytest.raises(
        ConfigError, match="holds CONNECTIONS_MASTER_KEY_PREVIOUS but is owned by another user"
    ):
        load_settings(env_file)


def test_a_private_dotenv_may_hold_the_master_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CONNECTIONS_MASTER_KEY", raising=False)
    settings = load_settings(env_file_with(tmp_path, 0o600))
    assert settings.master_key is not None and settings.master_key.reveal() == KEY


@pytest.mark.parametrize("key_line", ["", "CONNECTIONS_MASTER_KEY=\n", "CONNECTIONS_MASTER_KEY_FILE=/k\n"])
def test_a_dotenv_without_a_master_key_may_be_readable(tmp_path: Path, key_line: str) -> None:
    assert (
        load_settings(env_file_with(tmp_path, 0o644, key_line)).slack_bot_token.reveal() == "xoxb-from-file"
    )


def test_approval_settings_have_defaults_and_are_checked() -> None:
    defaults = Settings.from_mapping(BASE)
    assert (defaults.allow_self_approval, defaults.approval_ttl_hours) == (False, 72.0)
    custom = Settings.from_mapping(
        {**BASE, "CONNECTIONS_ALLOW_SELF_APPROVAL": "TRUE", "CONNECTIONS_APPROVAL_TTL_HOURS": "0.5"}
    )
    assert (custom.allow_self_approval, custom.approval_ttl_hours) == (True, 0.5)
    for name, value in (
        ("CONNECTIONS_ALLOW_SELF_APPROVAL", "maybe"),
        ("CONNECTIONS_APPROVAL_TTL_HOURS", "-1"),
    ):
        with pytest.raises(ConfigError, match=name):
            Settings.from_mapping({**BASE, name: value})


def test_health_and_rotation_settings_have_defaults() -> None:
    settings = Settings.from_mapping({**BASE, "CONNECTIONS_ADMIN_CHANNEL": "C0ADMINS01"})
    assert settings.retest_interval_minutes == 360.0
    assert settings.retest_concurrency == 16
    assert settings.rotation_days == 90.0
    assert settings.oncall_group is None
    # Alerts go to the admin channel unless a channel of their own is set.
    assert settings.alert_channel == "C0ADMINS01"
    assert Settings.from_mapping(BASE).alert_channel is None


def test_health_and_rotation_settings_are_read() -> None:
    settings = Settings.from_mapping(
        {
            **BASE,
            "CONNECTIONS_ADMIN_CHANNEL": "C0ADMINS01",
            "CONNECTIONS_ALERT_CHANNEL": "C0ALERTS01",
            "CONNECTIONS_ONCALL_GROUP": "S0ONCALL01",
            "CONNECTIONS_RETEST_INTERVAL_MINUTES": "15",
            "CONNECTIONS_RETEST_CONCURRENCY": "4",
            "CONNECTIONS_ROTATION_DAYS": "30",
        }
    )
    assert settings.alert_channel == "C0ALERTS01"
    assert settings.oncall_group == "S0ONCALL01"
    assert (settings.retest_interval_minutes, settings.retest_concurrency, settings.rotation_days) == (
        15,
        4,
        30,
    )


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("CONNECTIONS_RETEST_INTERVAL_MINUTES", "0"),
        ("CONNECTIONS_RETEST_INTERVAL_MINUTES", "often"),
        ("CONNECTIONS_RETEST_INTERVAL_MINUTES", "inf"),
        ("CONNECTIONS_RETEST_CONCURRENCY", "0"),
        ("CONNECTIONS_RETEST_CONCURRENCY", "2.5"),
        ("CONNECTIONS_RETEST_CONCURRENCY", "1000"),
        ("CONNECTIONS_ROTATION_DAYS", "-3"),
        ("CONNECTIONS_LIMIT_SUBMISSIONS_PER_MINUTE", "0"),
        ("CONNECTIONS_LIMIT_RETESTS_PER_MINUTE", "many"),
        ("CONNECTIONS_LIMIT_ROTATIONS_PER_MINUTE", "1.5"),
    ],
)
def test_bad_health_and_rotation_settings_are_named(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        Settings.from_mapping({**BASE, name: value})


def test_the_body_limit_is_read_and_bounded() -> None:
    assert Settings.from_mapping(BASE).max_body_bytes == 1024 * 1024
    assert Settings.from_mapping({**BASE, "CONNECTIONS_MAX_BODY_BYTES": "65536"}).max_body_bytes == 65536
    for bad in ("0", "1e6", str(65 << 20)):
        with pytest.raises(ConfigError, match="CONNECTIONS_MAX_BODY_BYTES"):
            Settings.from_mapping({**BASE, "CONNECTIONS_MAX_BODY_BYTES": bad})


def test_the_per_user_limits_have_defaults_and_can_be_set() -> None:
    assert (
        Settings.from_mapping(BASE).limit_submissions_per_minute,
        Settings.from_mapping(BASE).limit_retests_per_minute,
        Settings.from_mapping(BASE).limit_rotations_per_minute,
    ) == (10, 20, 10)
    settings = Settings.from_mapping(
        {
            **BASE,
            "CONNECTIONS_LIMIT_SUBMISSIONS_PER_MINUTE": "2",
            "CONNECTIONS_LIMIT_RETESTS_PER_MINUTE": "3",
            "CONNECTIONS_LIMIT_ROTATIONS_PER_MINUTE": "4",
        }
    )
    assert (
        settings.limit_submissions_per_minute,
        settings.limit_retests_per_minute,
        settings.limit_rotations_per_minute,
    ) == (2, 3, 4)


def test_the_store_settings_need_no_slack_token_and_check_the_path_and_log_level(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET", "CONNECTIONS_SECRET_PATH", "LOG_LEVEL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("VAULT_ADDR", "https://vault.example:8200")
    missing = tmp_path / "none.env"

    settings = load_store_settings(missing)

    assert settings.secret_path.template == "connections/{team}/{provider}/{name}"
    assert (
        settings.log_level == "WARNING" and settings.environment["VAULT_ADDR"] == "https://vault.example:8200"
    )
    assert "vault.example" not in repr(settings)
    monkeypatch.setenv("CONNECTIONS_SECRET_PATH", "secrets/{id}")
    with pytest.raises(ConfigError, match=r"CONNECTIONS_SECRET_PATH must hold \{team\}"):
        load_store_settings(missing)
    monkeypatch.setenv("CONNECTIONS_SECRET_PATH", "bot/{team}/{id}")
    monkeypatch.setenv("LOG_LEVEL", "debug")
    settings = load_store_settings(missing)
    assert (settings.secret_path.template, settings.log_level) == ("bot/{team}/{id}", "DEBUG")
    monkeypatch.setenv("LOG_LEVEL", "loud")
    with pytest.raises(ConfigError, match="LOG_LEVEL"):
        load_store_settings(missing)
