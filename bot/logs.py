"""Logging for the whole process: one stderr handler, with secrets masked on the way out."""

from __future__ import annotations

import logging
import sys
from typing import TextIO

from slack_bolt.logger.messages import warning_client_prioritized_and_token_skipped

from bot.redaction import install_redaction

__all__ = ["SLACK_LOGGER", "WIRE_LOGGERS", "configure_logging", "slack_logger", "wire_record_dropped"]

SLACK_LOGGER = "connections_bot.slack"
WIRE_LOGGERS = ("botocore", "boto3", "s3transfer", "urllib3", "requests", "hvac")
"""The secret stores' client libraries. At DEBUG they print whole request and response bodies
(botocore: ``SecretString``, escaped twice, which no mask can be sure to recognise), so their DEBUG
records never leave the process, whatever level anyone sets on their loggers."""


def wire_record_dropped(record: logging.LogRecord) -> bool:
    """Whether the handler drops ``record``: a DEBUG line of a store client's wire logger."""
    if record.levelno >= logging.INFO:
        return False
    return any(record.name == name or record.name.startswith(name + ".") for name in WIRE_LOGGERS)


class _DropWireDebug(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not wire_record_dropped(record)


def configure_logging(level: str = "INFO", stream: TextIO | None = None) -> logging.Handler:
    """Send every logger's records to ``stream`` (stderr by default) through the redaction filter;
    returns the handler so that a caller can remove it again."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(_DropWireDebug())
    install_redaction(handler)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # httpx logs every request line at INFO: noise in production, useful when debugging.
    logging.getLogger("httpx").setLevel(logging.DEBUG if level == "DEBUG" else logging.WARNING)
    return handler


class _DropTokenWarning(logging.Filter):
    """Bolt reads SLACK_BOT_TOKEN from the environment itself and then warns that the client we
    give it takes precedence. It is the same token, so the warning would only alarm operators."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != warning_client_prioritized_and_token_skipped()


def slack_logger() -> logging.Logger:
    """The logger handed to Bolt. Bolt prints whole request bodies (modal state, secrets included)
    at INFO when a signature check fails, so its loggers never go below WARNING."""
    logger = logging.getLogger(SLACK_LOGGER)
    logger.setLevel(logging.WARNING)
    if not any(isinstance(f, _DropTokenWarning) for f in logger.filters):
        logger.addFilter(_DropTokenWarning())
    return logger
