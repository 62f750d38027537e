"""Slack callback, action and block ids, shared by ``blocks`` (which emits them) and ``listeners``
(which route on them). Changing one here changes both sides."""

from __future__ import annotations

from bot.domain import NAME_FIELD

__all__ = [
    "ACTION_APPROVE",
    "ACTION_APPROVE_ROTATION",
    "ACTION_CONNECT",
    "ACTION_PAGE",
    "ACTION_PAGE_NEXT",
    "ACTION_PAGE_PREVIOUS",
    "ACTION_REJECT",
    "ACTION_REJECT_ROTATION",
    "ACTION_REMOVE",
    "ACTION_RETEST",
    "ACTION_ROTATE",
    "ACTION_TRY_AGAIN",
    "BLOCK_NAME",
    "BLOCK_REASON",
    "INPUT_ACTION",
    "VIEW_CREATE",
    "VIEW_REJECT",
    "VIEW_REJECT_ROTATION",
    "VIEW_RESULT",
    "VIEW_ROTATE",
    "VIEW_ROTATE_RESULT",
]

VIEW_CREATE = "create_connection"
"""callback_id of the "Create <provider>" modal."""
VIEW_RESULT = "create_connection_result"
"""callback_id of the "Verifying…" and result views that replace the form."""

ACTION_CONNECT = "connect_provider"
"""A provider card's Connect button; value = provider key."""
ACTION_PAGE = "connections_page"
"""Prefix of the Previous/Next buttons under the connections list; value = the target page number."""
ACTION_PAGE_PREVIOUS = f"{ACTION_PAGE}:previous"
ACTION_PAGE_NEXT = f"{ACTION_PAGE}:next"
ACTION_TRY_AGAIN = "try_again"
"""The result view's Try again button; value = JSON of the provider key and non-secret fields."""

BLOCK_NAME = NAME_FIELD
"""block_id of the Name input; every other input's block_id is its provider field name, so the
services' problems by field name are the modal's inline errors by block_id."""
INPUT_ACTION = "value"
"""action_id of every text input, so values read as state.values[block_id]["value"]["value"]."""

ACTION_APPROVE = "approve_connection"
"""Approve on an approval request (admin channel or App Home); value = connection id."""
ACTION_REJECT = "reject_connection"
"""Reject on an approval request; opens the reason modal; value = connection id."""
VIEW_REJECT = "reject_connection_reason"
"""callback_id of the modal asking an admin why they reject; private_metadata holds the ids."""
BLOCK_REASON = "reason"
"""block_id of the reason input in the reject modal."""

ACTION_RETEST = "retest_connection"
"""Re-test one connection with its stored credentials (lists, App Home, alerts); value = connection id."""
ACTION_ROTATE = "rotate_connection"
"""Open the rotation form of a connection; value = connection id."""
ACTION_REMOVE = "remove_connection"
"""Remove a connection (the button carries a confirm dialog); value = connection id."""
VIEW_ROTATE = "rotate_connection"
"""callback_id of the "Rotate <name>" modal; private_metadata holds the connection id."""
VIEW_ROTATE_RESULT = "rotate_connection_result"
"""callback_id of the "Verifying…" and result views that replace the rotation form."""
ACTION_APPROVE_ROTATION = "approve_rotation"
"""Approve on a rotation request; value = rotation id."""
ACTION_REJECT_ROTATION = "reject_rotation"
"""Reject on a rotation request; opens the reason modal; value = rotation id."""
VIEW_REJECT_ROTATION = "reject_rotation_reason"
"""callback_id of the modal asking an admin why they reject a rotation."""
