"""Slack listeners: parse the payload, ack fast, call a service, render with ``blocks``.

One module per kind of Slack request; each exposes ``register(app, services)``, its routing table.
"""

from __future__ import annotations

from slack_bolt.async_app import AsyncApp

from bot.listeners import actions, approvals, commands, events, removal, retests, rotation, views
from bot.runtime import Services

__all__ = ["register_listeners"]


def register_listeners(app: AsyncApp, services: Services) -> None:
    commands.register(app, services)
    actions.register(app, services)
    views.register(app, services)
    approvals.register(app, services)
    events.register(app, services)
    retests.register(app, services)
    rotation.register(app, services)
    removal.register(app, services)
