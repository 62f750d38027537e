"""Credential rotation in blocks: the form asking for the new credential, the views that replace it
while and after verifying, the direct message to the owner of an ageing credential, and the reply
to someone who tries to rotate while a rotation already waits (the request an admin decides is
in :mod:`blocks.approval`).

A rotation shows two masked key hints and never more: ``connection.key_hint`` is the key in use,
``new_key_hint`` the one waiting for approval. Names and anything else a user typed are escaped.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from slack_sdk.models.views import View

from blocks.approval import rotate_actions
from blocks.modal import VIEW_MAX_BLOCKS, notice_section, provider_form_blocks
from blocks.parts import MESSAGE_MAX_BLOCKS, Block, context, message, named_key, quoted_name, section
from blocks.results import result_blocks, try_again_block
from blocks.text import escape, one_line, plural, slack_date, truncate, user_mention
from bot import ids
from bot.domain import ApprovalRequest, ConnectionSummary
from bot.providers.base import Provider, Verification

__all__ = [
    "ROTATION_TITLE",
    "rotation_modal",
    "rotation_pending_reply",
    "rotation_problem_view",
    "rotation_reminder_dm",
    "rotation_result_message",
    "rotation_result_view",
    "rotation_verifying_view",
]

ROTATION_TITLE = "Rotate credentials"
"""The title of the rotation form and of the views that replace it (Slack allows 24 characters)."""

_SUBMIT_LABEL = "Verify"
_PROVIDER_SHOWN_MAX = 150


# --- the form and the views that replace it -------------------------------------------------


def rotation_modal(
    provider: Provider,
    connection: ConnectionSummary,
    *,
    private_metadata: str,
    initial: Mapping[str, str] | None = None,
    notice: str | None = None,
) -> dict[str, Any]:
    """The form asking for ``connection``'s new credential: the provider's form without the Name.

    ``initial`` pre-fills non-secret fields (e.g. the connection's current ones, or what the user
    typed before trying again); pre-filling a secret field raises ``ValueError``. ``notice`` (plain
    text) is shown under the introduction, e.g. why the last attempt failed. ``private_metadata``
    is echoed by Slack to every client, so it must hold ids only.
    """
    blocks: list[Block] = [
        section(
            f"🔁 *Rotate the credentials of {quoted_name(connection.name)}* ({_provider_title(provider)})\n"
            f"Enter the new credentials below. {_current_key_keeps_working(connection)}"
        )
    ]
    if notice and notice.strip():
        blocks.append(notice_section(notice))
    blocks.extend(provider_form_blocks(provider, initial))
    blocks.append(
        context(
            f"When you submit, we check the new credentials with {_provider_title(provider)} before "
            "anything changes. Secrets are stored encrypted and never shown again."
        )
    )
    view = View(
        type="modal",
        callback_id=ids.VIEW_ROTATE,
        title=ROTATION_TITLE,
        submit=_SUBMIT_LABEL,
        close="Cancel",
        notify_on_close=False,
        private_metadata=private_metadata,
        blocks=blocks,
    )
    return dict(view.to_dict())


def rotation_verifying_view(provider: Provider, name: str) -> dict[str, Any]:
    """What replaces the rotation form while the new credentials are checked."""
    blocks = [
        section(
            f"⏳ Verifying the new credentials for *{quoted_name(name)}* with {_provider_title(provider)}…"
        ),
        context(
            "This takes a few seconds. If you close this window, the result comes to you as a direct "
            "message. Until an admin approves new credentials, the connection keeps using its current key."
        ),
    ]
    return _result_view(blocks)


def rotation_result_view(
    provider: Provider,
    name: str,
    verification: Verification,
    *,
    note: str,
    try_again_value: str | None,
) -> dict[str, Any]:
    """The new credentials' verification in the modal, as :func:`blocks.results.result_blocks`
    shows a new connection's. ``note`` (mrkdwn written by the caller; anything a user typed must be
    escaped before it goes in) says what happens next on success, e.g. that the rotation awaits
    an admin's approval in <#C123> and the current key keeps working until then. On failure it
    says nothing changed and, with ``try_again_value``, offers a Try again button (the shared
    ``ids.ACTION_TRY_AGAIN``: its listener tells a rotation by the view's callback_id)."""
    return _result_view(_result_blocks(provider, name, verification, note, try_again_value, VIEW_MAX_BLOCKS))


def rotation_result_message(
    provider: Provider, name: str, verification: Verification, *, note: str
) -> dict[str, Any]:
    """The same result as a direct message, for when the user closed the modal before it came."""
    shown = quoted_name(name)
    if verification.ok:
        text = f"✅ The new credentials for {shown} work."
    else:
        summary = escape(truncate(one_line(verification.summary, "the verification failed"), 300))
        text = (
            f"❌ Couldn't verify the new credentials for {shown} with {_provider_title(provider)}: {summary}"
        )
    return message(text, _result_blocks(provider, name, verification, note, None, MESSAGE_MAX_BLOCKS))


def rotation_problem_view(provider: Provider, message: str) -> dict[str, Any]:
    """A failure that is not the provider's answer (a rotation already waits, the connection was
    removed, something broke on our side). ``message`` is plain text meant for the user, never an
    exception's text; it says what became of the connection, which differs from case to case."""
    return _result_view([notice_section(message)])


# --- direct messages and replies ------------------------------------------------------------


def rotation_reminder_dm(
    connection: ConnectionSummary, *, age_days: int, rotation_days: float
) -> dict[str, Any]:
    """The direct message to the owner of a credential older than the team's rotation period: how
    old it is, how to rotate it, and a Rotate button carrying ``connection.id``."""
    provider = _title(connection.provider_title)
    name = quoted_name(connection.name)
    age = plural(age_days, "day")
    text = f"🔁 The key of your {provider} connection {name} is {age} old: time to rotate it."
    blocks = [
        section(
            f"🔁 *Time to rotate {name}*\nIts {provider} key{named_key(connection.key_hint)} is {age} old, "
            f"older than your team's rotation period of {_days(rotation_days)}."
        ),
        section(
            "*How to rotate*\n"
            f"1. Create a new key at {provider}.\n"
            "2. Click *Rotate* below and enter it; we check it before anything changes.\n"
            "3. An admin approves the new key; until then the old one keeps working.\n"
            f"4. Once it is approved, delete the old key at {provider}."
        ),
    ]
    if connection.credential_created_at is not None:
        blocks.append(context(f"Key stored {slack_date(connection.credential_created_at)}"))
    blocks.append(rotate_actions(connection))
    return message(text, blocks)


def rotation_pending_reply(rotation: ApprovalRequest) -> dict[str, Any]:
    """Told to someone who tries to rotate a connection whose rotation already waits for an admin."""
    text = (
        f"A rotation of {quoted_name(rotation.connection.name)} already waits for an admin's approval: "
        f"requested by {user_mention(rotation.requested_by)} {slack_date(rotation.requested_at)}, "
        f"new key{named_key(rotation.new_key_hint) or ' (no hint)'}. Nothing changed. Once an admin decides "
        "on it, you can rotate again."
    )
    return message(text, [section(text)])


# --- shared pieces --------------------------------------------------------------------------


def _result_view(blocks: list[Block]) -> dict[str, Any]:
    view = View(
        type="modal",
        callback_id=ids.VIEW_ROTATE_RESULT,
        title=ROTATION_TITLE,
        close="Close",
        blocks=blocks,
    )
    return dict(view.to_dict())


def _result_blocks(
    provider: Provider,
    name: str,
    verification: Verification,
    note: str,
    try_again_value: str | None,
    max_blocks: int,
) -> list[Block]:
    """result_blocks for the new credentials; on failure, it adds that the current key stays in
    use and keeps the Try again button last."""
    # Two blocks are kept for what follows on failure: the current key line and Try again.
    blocks = result_blocks(provider, name, verification, approval_note=note, max_blocks=max_blocks - 2)
    if verification.ok:
        return blocks
    blocks.append(
        section(
            f"*Nothing changed:* {quoted_name(name)} keeps using its current {_provider_title(provider)} key."
        )
    )
    if try_again_value is not None:
        blocks.append(try_again_block(try_again_value))
    return blocks


def _current_key_keeps_working(connection: ConnectionSummary) -> str:
    return (
        f"The current key{named_key(connection.key_hint)} keeps working until an admin approves the new one."
    )


def _days(days: float) -> str:
    """ "90 days", "1 day", "0.5 days": a whole number without its ".0"."""
    shown = f"{days:.10g}"
    return f"{shown} day" if days == 1 else f"{shown} days"


def _provider_title(provider: Provider) -> str:
    return _title(provider.title)


def _title(title: str) -> str:
    return escape(truncate(one_line(title, "the provider"), _PROVIDER_SHOWN_MAX))
