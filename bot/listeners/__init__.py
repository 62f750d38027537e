"""Slack listeners: parse the payload, ack fast, call a service, render with ``blocks``.

One module per thing a user does; each ``register(app)`` is its routing table, one line per
command, action, view or event, and its callbacks live at module level. The services reach the
callbacks through Bolt's context (:class:`bot.listeners.kit.AttachServices`).
"""

from __future__ import annotations

from slack_bolt.async_app import AsyncApp

from bot.listeners import approvals, commands, forms, home, listing, removal, retests, submissions
from bot.listeners.kit import AttachServices
from bot.runtime import Services

__all__ = ["register_listeners"]


def register_listeners(app: AsyncApp, services: Services) -> None:
    app.use(AttachServices(services))
    for module in (commands, listing, forms, submissions, approvals, retests, removal, home):
        module.register(app)
