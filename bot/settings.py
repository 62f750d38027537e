"""Configuration: the one module that reads the environment (and a ``.env`` file).

Every variable is documented in DESIGN.md's configuration contract and in the README.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from dotenv import dotenv_values

from bot.redaction import Secret
from bot.stores.paths import DEFAULT_SECRET_PATH, PathTemplate

__all__ = [
    "SECRET_STORES",
    "ConfigError",
    "KeySettings",
    "Settings",
    "StoreSettings",
    "load_database_url",
    "load_key_settings",
    "load_settings",
    "load_store_settings",
]

DEFAULT_SLACK_API_URL = "https://slack.com/api/"
DEFAULT_DATABASE_URL = "sqlite:///connections.db"
DEFAULT_MAX_BODY_BYTES = 1024 * 1024
SECRET_STORES = ("local", "aws", "vault")


class ConfigError(Exception):
    """A missing or malformed setting; the message names the variable and is safe to print."""


@dataclass(frozen=True)
class Settings:
    slack_bot_token: Secret
    slack_signing_secret: Secret | None = None
    slack_app_token: Secret | None = None
    slack_api_url: str = DEFAULT_SLACK_API_URL
    # A database URL can carry a password; keep it out of reprs (Services embeds Settings).
    database_url: str = field(default=DEFAULT_DATABASE_URL, repr=False)
    admin_channel: str | None = None
    admins: frozenset[str] = field(default_factory=frozenset)
    admin_group: str | None = None
    allow_self_approval: bool = False
    approval_ttl_hours: float = 72.0
    # How often overdue approval requests are looked for; mainly turned down by tests and operators.
    expiry_check_seconds: float = 300.0
    oncall_group: str | None = None
    own_alert_channel: str | None = None
    """``CONNECTIONS_ALERT_CHANNEL`` as set; :attr:`alert_channel` is where alerts go."""
    retest_interval_minutes: float = 360.0
    retest_concurrency: int = 16
    rotation_days: float = 90.0
    # The largest request body /slack/events reads; Slack's own are a few kilobytes.
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    # Per user and minute (bot.services.limits): far above what anyone does by hand.
    limit_submissions_per_minute: int = 10
    limit_retests_per_minute: int = 20
    limit_rotations_per_minute: int = 10
    master_key: Secret | None = None
    master_key_file: Path | None = None
    master_key_previous: Secret | None = None
    """``CONNECTIONS_MASTER_KEY_PREVIOUS``: opens rows sealed before a rotation, never seals."""
    secret_store: str = "local"
    """``CONNECTIONS_SECRET_STORE``: where approved credentials live (see :mod:`bot.stores`)."""
    secret_path: PathTemplate = field(default_factory=PathTemplate)
    """``CONNECTIONS_SECRET_PATH``: where in the store each connection's secret lives."""
    host: str = "0.0.0.0"
    port: int = 3000
    log_level: str = "INFO"
    # Every variable as read, for the providers' own settings (each provider module reads its
    # own, so this module names none). It can hold secrets: never in a repr or a comparison.
    environment: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)

    @property
    def socket_mode(self) -> bool:
        return self.slack_app_token is not None

    @property
    def alert_channel(self) -> str | None:
        """Where health alerts go: ``CONNECTIONS_ALERT_CHANNEL``, else the admin channel."""
        return self.own_alert_channel or self.admin_channel

    @property
    def alert_channel_setting(self) -> str:
        """The variable that decides :attr:`alert_channel`, to name in a log line."""
        return "CONNECTIONS_ALERT_CHANNEL" if self.own_alert_channel else "CONNECTIONS_ADMIN_CHANNEL"

    @classmethod
    def from_mapping(cls, env: Mapping[str, str]) -> Settings:
        """Build settings from a mapping of variables; raises :class:`ConfigError`."""

        def get(name: str) -> str | None:
            value = env.get(name)
            if value is None:
                return None
            value = value.strip()
            return value or None

        def required(name: str, why: str = "") -> str:
            value = get(name)
            if value is None:
                raise ConfigError(f"{name} is required{why}; set it in the environment or in .env")
            return value

        bot_token = required("SLACK_BOT_TOKEN")
        app_token = get("SLACK_APP_TOKEN")
        signing_secret = get("SLACK_SIGNING_SECRET")
        if app_token is None and signing_secret is None:
            required("SLACK_SIGNING_SECRET", " in HTTP mode (when SLACK_APP_TOKEN is not set)")
        if app_token is not None and not app_token.startswith("xapp-"):
            raise ConfigError("SLACK_APP_TOKEN must be an app-level token starting with xapp-")

        port = _whole(get, "PORT", "3000", 0, 65535)

        log_level = _log_level(get, "INFO")

        self_approval_text = (get("CONNECTIONS_ALLOW_SELF_APPROVAL") or "false").lower()
        if self_approval_text not in ("true", "false", "1", "0", "yes", "no"):
            raise ConfigError("CONNECTIONS_ALLOW_SELF_APPROVAL must be true or false")
        ttl_hours = _positive(get, "CONNECTIONS_APPROVAL_TTL_HOURS", "72", "hours")
        expiry_check_seconds = _positive(get, "CONNECTIONS_EXPIRY_CHECK_SECONDS", "300", "seconds")
        retest_minutes = _positive(get, "CONNECTIONS_RETEST_INTERVAL_MINUTES", "360", "minutes")
        rotation_days = _positive(get, "CONNECTIONS_ROTATION_DAYS", "90", "days")
        concurrency = _whole(get, "CONNECTIONS_RETEST_CONCURRENCY", "16", 1, 256)
        max_body = _whole(get, "CONNECTIONS_MAX_BODY_BYTES", str(DEFAULT_MAX_BODY_BYTES), 1024, 64 << 20)

        def per_minute(what: str, default: str) -> int:
            return _whole(get, f"CONNECTIONS_LIMIT_{what}_PER_MINUTE", default, 1, 10_000)

        secret_store = (get("CONNECTIONS_SECRET_STORE") or "local").lower()
        if secret_store not in SECRET_STORES:
            raise ConfigError(f"CONNECTIONS_SECRET_STORE must be one of {', '.join(SECRET_STORES)}")
        secret_path = _secret_path(get)

        master_key = get("CONNECTIONS_MASTER_KEY")
        key_file = get("CONNECTIONS_MASTER_KEY_FILE")
        previous = get("CONNECTIONS_MASTER_KEY_PREVIOUS")
        admins = frozenset(a.strip() for a in (get("CONNECTIONS_ADMINS") or "").split(",") if a.strip())
        return cls(
            slack_bot_token=Secret(bot_token),
            slack_signing_secret=Secret(signing_secret) if signing_secret else None,
            slack_app_token=Secret(app_token) if app_token else None,
            slack_api_url=_with_trailing_slash(get("SLACK_API_URL") or DEFAULT_SLACK_API_URL),
            database_url=get("DATABASE_URL") or DEFAULT_DATABASE_URL,
            admin_channel=get("CONNECTIONS_ADMIN_CHANNEL"),
            admins=admins,
            admin_group=get("CONNECTIONS_ADMIN_GROUP"),
            allow_self_approval=self_approval_text in ("true", "1", "yes"),
            approval_ttl_hours=ttl_hours,
            expiry_check_seconds=expiry_check_seconds,
            oncall_group=get("CONNECTIONS_ONCALL_GROUP"),
            own_alert_channel=get("CONNECTIONS_ALERT_CHANNEL"),
            retest_interval_minutes=retest_minutes,
            retest_concurrency=concurrency,
            rotation_days=rotation_days,
            max_body_bytes=max_body,
            limit_submissions_per_minute=per_minute("SUBMISSIONS", "10"),
            limit_retests_per_minute=per_minute("RETESTS", "20"),
            limit_rotations_per_minute=per_minute("ROTATIONS", "10"),
            master_key=Secret(master_key) if master_key else None,
            master_key_file=Path(key_file).expanduser() if key_file else None,
            master_key_previous=Secret(previous) if previous else None,
            secret_store=secret_store,
            secret_path=secret_path,
            host=get("HOST") or "0.0.0.0",
            port=port,
            log_level=log_level,
            environment=dict(env),
        )


def _log_level(get: Callable[[str], str | None], default: str) -> str:
    log_level = (get("LOG_LEVEL") or default).upper()
    if log_level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError("LOG_LEVEL must be one of DEBUG, INFO, WARNING, ERROR")
    return log_level


def _secret_path(get: Callable[[str], str | None]) -> PathTemplate:
    try:
        return PathTemplate(get("CONNECTIONS_SECRET_PATH") or DEFAULT_SECRET_PATH)
    except ValueError as exc:
        raise ConfigError(f"CONNECTIONS_SECRET_PATH {exc}") from None


def _positive(get: Callable[[str], str | None], name: str, default: str, unit: str) -> float:
    text = get(name) or default
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"{name} must be a number of {unit}, not {text!r}") from None
    if not 0 < value < float("inf"):
        raise ConfigError(f"{name} must be a finite number of {unit} more than 0")
    return value


def _whole(get: Callable[[str], str | None], name: str, default: str, low: int, high: int) -> int:
    text = get(name) or default
    try:
        value = int(text)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, not {text!r}") from None
    if not low <= value <= high:
        raise ConfigError(f"{name} must be between {low} and {high}, not {value}")
    return value


def _with_trailing_slash(url: str) -> str:
    return url if url.endswith("/") else url + "/"


def load_settings(env_file: str | os.PathLike[str] | None = ".env") -> Settings:
    """Settings from ``.env`` (if present) overlaid by the process environment."""
    return Settings.from_mapping(_environment(env_file))


def load_database_url(env_file: str | os.PathLike[str] | None = ".env") -> str:
    """``DATABASE_URL`` (or its default) from the same sources as :func:`load_settings`, for
    commands that only read the database (``audit export``) and so need no Slack token."""
    return (_environment(env_file).get("DATABASE_URL") or "").strip() or DEFAULT_DATABASE_URL


@dataclass(frozen=True)
class KeySettings:
    """What ``rotate-master-key`` reads: the database and the master key, no Slack token."""

    database_url: str = field(default=DEFAULT_DATABASE_URL, repr=False)
    master_key: Secret | None = None
    master_key_file: Path | None = None
    master_key_previous: Secret | None = None
    new_master_key: Secret | None = None
    """The variable ``rotate-master-key --new-key-from-env`` names, as read."""
    # Fault injection for the kill-safety tests (CONNECTIONS_FAILPOINT): the step at which the
    # command exits as a SIGKILL would stop it. Unset in any real deployment.
    failpoint: str | None = None


def load_key_settings(
    env_file: str | os.PathLike[str] | None = ".env", new_key_variable: str | None = None
) -> KeySettings:
    """:class:`KeySettings` from the same sources as :func:`load_settings`; ``new_key_variable``
    names the variable that holds the new key of a rotation, if any."""
    env = _environment(env_file)

    def get(name: str) -> str | None:
        return (env.get(name) or "").strip() or None

    def secret(name: str | None) -> Secret | None:
        value = get(name) if name else None
        return Secret(value) if value else None

    key_file = get("CONNECTIONS_MASTER_KEY_FILE")
    return KeySettings(
        database_url=get("DATABASE_URL") or DEFAULT_DATABASE_URL,
        master_key=secret("CONNECTIONS_MASTER_KEY"),
        master_key_file=Path(key_file).expanduser() if key_file else None,
        master_key_previous=secret("CONNECTIONS_MASTER_KEY_PREVIOUS"),
        new_master_key=secret(new_key_variable),
        failpoint=get("CONNECTIONS_FAILPOINT"),
    )


@dataclass(frozen=True)
class StoreSettings:
    """What ``migrate-secrets`` reads besides :class:`KeySettings`: where secrets go in a store,
    every variable (each store module reads its own from them), and how much to log."""

    secret_path: PathTemplate = field(default_factory=PathTemplate)
    environment: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)
    log_level: str = "WARNING"
    """``LOG_LEVEL``; by default only warnings, so the progress bar and the count stay readable."""


def load_store_settings(env_file: str | os.PathLike[str] | None = ".env") -> StoreSettings:
    """:class:`StoreSettings` from the same sources as :func:`load_settings`; no Slack token needed."""
    env = _environment(env_file)

    def get(name: str) -> str | None:
        return (env.get(name) or "").strip() or None

    return StoreSettings(secret_path=_secret_path(get), environment=env, log_level=_log_level(get, "WARNING"))


def _environment(env_file: str | os.PathLike[str] | None) -> dict[str, str]:
    values: dict[str, str] = {}
    if env_file is not None and Path(env_file).is_file():
        values.update(_read_env_file(Path(env_file)))
    values.update(os.environ)
    return values


# The variables that make a settings file as secret as a key file: any of them opens every credential.
_KEY_VARIABLES = ("CONNECTIONS_MASTER_KEY", "CONNECTIONS_MASTER_KEY_PREVIOUS")


def _read_env_file(path: Path) -> dict[str, str]:
    """The variables in ``path``; refuses a file holding a master key that others could read or
    replace (checked on the file read, not on a name that could change in between)."""
    with path.open(encoding="utf-8") as handle:
        info = os.fstat(handle.fileno())
        values = {k: v for k, v in dotenv_values(stream=handle).items() if v is not None}
    held = [name for name in _KEY_VARIABLES if values.get(name, "").strip()]
    if held and info.st_uid != os.getuid():
        raise ConfigError(
            f"{path} holds {held[0]} but is owned by another user (uid {info.st_uid}); it must belong "
            f"to the user running the bot (uid {os.getuid()})"
        )
    if held and info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"{path} holds {held[0]} but is accessible by group or others "
            f"(mode {stat.S_IMODE(info.st_mode):o}); run `chmod 600 {path}`"
        )
    return values
