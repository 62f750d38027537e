"""Logging for the whole process: one stderr handler, with secrets masked on the way out."""

from __future__ import annotations

import logging
import sys
from typing import TextIO

from slack_bolt.logger.messages import warning_client_prioritized_and_token_skipped

from bot.redaction import install_redaction

__all__ = ["SLACK_LOGGER", "configure_logging", "slack_logger"]

SLACK_LOGGER = "connections_bot.slack"


def configure_logging(level: str = "INFO", stream: TextIO | None = None) -> logging.Handler:
    """Send every logger's records to ``stream`` (stderr by default) through the redaction filter;
    returns the handler so that a caller can remove it again."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
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
