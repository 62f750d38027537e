"""Credential rotation in blocks: the form asking for the new credential, the views that replace it
while and after verifying, the request an admin approves in the admin channel, the same request
once decided, the direct messages to the requester and to the owner of an ageing credential, and
the reply to someone who tries to rotate while a rotation already waits.

A rotation shows two masked key hints and never more: ``connection.key_hint`` is the key in use,
``new_key_hint`` the one waiting for approval. Names, reasons and anything else a user typed are
escaped; user ids become ``<@U…>`` mentions only when they look like Slack user ids. Ids travel in
button values and ``private_metadata``, never in text.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from slack_sdk.models.blocks import (
    ActionsBlock,
    ButtonElement,
    HeaderBlock,
    InputBlock,
    MarkdownTextObject,
    PlainTextInputElement,
    SectionBlock,
)
from slack_sdk.models.views import View

from blocks.approval import REASON_MAX_LENGTH
from blocks.modal import VIEW_MAX_BLOCKS, notice_section, provider_form_blocks
from blocks.results import (
    MESSAGE_MAX_BLOCKS,
    Block,
    checks_blocks,
    context,
    message,
    quoted_name,
    result_blocks,
    section,
    try_again_block,
)
from blocks.text import HEADER_MAX, escape, one_line, plural, slack_date, truncate, user_mention
from bot import ids
from bot.domain import ConnectionSummary, RotationStatus
from bot.providers.base import Provider, Verification
from bot.services.rotations import RotationSummary

__all__ = [
    "REMINDER_ACTIONS_BLOCK",
    "ROTATION_ACTIONS_BLOCK",
    "ROTATION_TITLE",
    "rotation_decided",
    "rotation_decision_dm",
    "rotation_modal",
    "rotation_pending_reply",
    "rotation_problem_view",
    "rotation_reject_modal",
    "rotation_reminder_dm",
    "rotation_request",
    "rotation_result_message",
    "rotation_result_view",
    "rotation_verifying_view",
]

ROTATION_TITLE = "Rotate credentials"
"""The title of the rotation form and of the views that replace it (Slack allows 24 characters)."""
ROTATION_ACTIONS_BLOCK = "rotation_actions"
"""block_id of the actions block holding Approve and Reject on a rotation request."""
REMINDER_ACTIONS_BLOCK = "rotation_reminder_actions"
"""block_id of the actions block holding the Rotate button in a reminder."""

_SUBMIT_LABEL = "Verify"
_REJECT_TITLE = "Reject rotation"
_PROVIDER_SHOWN_MAX = 150
_KEY_HINT_SHOWN_MAX = 40
# Reasons are capped at REASON_MAX_LENGTH by the modal; this guards a caller passing more. Escaping
# and quoting grow a text at most fivefold, so this many characters still fit in a section.
_REASON_SHOWN_MAX = 550
_CHECKS_MAX_BLOCKS = 10
_NEVER_DECIDED = "a rotation awaiting approval has no decision to show"
_ICONS = {
    RotationStatus.APPROVED: "✅",
    RotationStatus.REJECTED: "❌",
    RotationStatus.EXPIRED: "⌛",
    RotationStatus.CANCELLED: "🚫",
}


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


# --- the admin channel ----------------------------------------------------------------------


def rotation_request(rotation: RotationSummary) -> dict[str, Any]:
    """The message posted to the admin channel: who asks to replace which key with which, what the
    new credential's verification found, and Approve / Reject, each carrying ``rotation.id``.

    Reject opens a modal asking for the reason, so it has no confirm step."""
    approve = ButtonElement(
        text="Approve", action_id=ids.ACTION_APPROVE_ROTATION, value=rotation.id, style="primary"
    )
    reject = ButtonElement(
        text="Reject", action_id=ids.ACTION_REJECT_ROTATION, value=rotation.id, style="danger"
    )
    blocks = [
        *_request_blocks(rotation),
        context(
            "Approving replaces the key in use with the new one and destroys the old stored "
            "credentials. Rejecting asks you for a reason, which the requester sees, destroys the "
            "new credentials and keeps the old ones working."
        ),
        dict(ActionsBlock(block_id=ROTATION_ACTIONS_BLOCK, elements=[approve, reject]).to_dict()),
    ]
    text = (
        f"🔁 Rotation requested for {quoted_name(rotation.connection.name)} ({_provider(rotation)}) "
        f"by {user_mention(rotation.requested_by)}"
    )
    return message(text, blocks)


def rotation_decided(rotation: RotationSummary) -> dict[str, Any]:
    """The rotation request updated in place once decided: the same facts, no buttons, what became
    of each key, and who decided and when (with the reason, quoted, for a rejection). A rotation
    still awaiting approval raises ``ValueError``."""
    outcome = _outcome_line(rotation)
    blocks = [*_request_blocks(rotation), section(outcome)]
    if rotation.status is RotationStatus.REJECTED or (rotation.reason and rotation.reason.strip()):
        blocks.append(section(_quoted_reason(rotation.reason)))
    text = f"🔁 Rotation of {quoted_name(rotation.connection.name)} ({_provider(rotation)}): {outcome}"
    return message(text, blocks)


def rotation_reject_modal(rotation: RotationSummary, *, private_metadata: str) -> dict[str, Any]:
    """The modal an admin fills in to reject a rotation: a required reason the requester will read.

    The reason input is read as in the connection's reject modal (``ids.BLOCK_REASON``).
    ``private_metadata`` is echoed by Slack to every client, so it must hold ids only."""
    reason = InputBlock(
        block_id=ids.BLOCK_REASON,
        label="Reason",
        hint="The requester sees this reason in a direct message, so say what to fix.",
        optional=False,
        element=PlainTextInputElement(
            action_id=ids.INPUT_ACTION,
            multiline=True,
            min_length=1,
            max_length=REASON_MAX_LENGTH,
            placeholder="e.g. Use a service account key, not a personal one.",
        ),
    )
    blocks = [
        section(
            f"Reject the new {_provider(rotation)} credentials for "
            f"*{quoted_name(rotation.connection.name)}*, "
            f"requested by {user_mention(rotation.requested_by)} {slack_date(rotation.requested_at)}?"
        ),
        dict(reason.to_dict()),
        context(
            f"The new credentials{_named(rotation.new_key_hint)} are destroyed; the connection keeps "
            f"using its current key{_named(rotation.connection.key_hint)}."
        ),
    ]
    view = View(
        type="modal",
        callback_id=ids.VIEW_REJECT_ROTATION,
        title=_REJECT_TITLE,
        submit="Reject",
        close="Cancel",
        private_metadata=private_metadata,
        blocks=blocks,
    )
    return dict(view.to_dict())


# --- direct messages and replies ------------------------------------------------------------


def rotation_decision_dm(rotation: RotationSummary) -> dict[str, Any]:
    """The direct message telling the requester what became of their new credentials and what to
    do next. A rotation still awaiting approval raises ``ValueError``."""
    subject = (
        f"The new credentials for {_provider(rotation)} connection {quoted_name(rotation.connection.name)}"
    )
    by = _by(rotation.decided_by)
    old = _old_hint(rotation)
    still = f"the connection keeps using its current key{_named(rotation.connection.key_hint)}"
    parts: list[str]
    retry = False
    if rotation.status is RotationStatus.APPROVED:
        text = f"✅ {subject} were approved{by}."
        parts = [
            f"{text} The new key{_named(rotation.new_key_hint)} is now in use, and the old stored "
            "credentials were destroyed.",
            f"*What next:* delete the old key{_named(old)} at {_provider(rotation)}, so it can no "
            "longer be used anywhere.",
        ]
    elif rotation.status is RotationStatus.REJECTED:
        text = f"❌ {subject} were rejected{by}."
        parts = [
            text,
            _quoted_reason(rotation.reason),
            f"*What next:* the new credentials you entered were destroyed and {still}. Fix what the "
            "reason says, then click *Rotate* to try again.",
        ]
        retry = True
    elif rotation.status is RotationStatus.EXPIRED:
        text = f"⌛ {subject} expired: nobody decided on them within the time limit."
        parts = [
            text,
            f"*What next:* the new credentials you entered were destroyed and {still}. To rotate, "
            "click *Rotate* and let an admin know it is waiting.",
        ]
        retry = True
    elif rotation.status is RotationStatus.CANCELLED:
        text = (
            f"🚫 The rotation of {_provider(rotation)} connection {quoted_name(rotation.connection.name)} "
            "was cancelled: the connection was removed."
        )
        parts = [
            text,
            f"The new credentials you entered were destroyed. If you created the new key only for this "
            f"connection, delete it at {_provider(rotation)}.",
        ]
    else:
        raise ValueError(_NEVER_DECIDED)
    # One section each: an escaped reason can be five times its typed length.
    blocks = [*(section(part) for part in parts), context(_identity(rotation))]
    if retry:
        blocks.append(_rotate_actions(rotation.connection))
    return message(text, blocks)


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
            f"🔁 *Time to rotate {name}*\nIts {provider} key{_named(connection.key_hint)} is {age} old, "
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
    blocks.append(_rotate_actions(connection))
    return message(text, blocks)


def rotation_pending_reply(rotation: RotationSummary) -> dict[str, Any]:
    """Told to someone who tries to rotate a connection whose rotation already waits for an admin."""
    text = (
        f"A rotation of {quoted_name(rotation.connection.name)} already waits for an admin's approval: "
        f"requested by {user_mention(rotation.requested_by)} {slack_date(rotation.requested_at)}, "
        f"new key{_named(rotation.new_key_hint) or ' (no hint)'}. Nothing changed. Once an admin decides "
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


def _request_blocks(rotation: RotationSummary) -> list[Block]:
    """What the request and its decided form share: header, facts and the new key's checks."""
    connection = rotation.connection
    name = one_line(connection.name)
    prefix = "🔁 Rotation requested for “"
    header = f"{prefix}{truncate(name, HEADER_MAX - len(prefix) - 1)}”"
    fields = [
        MarkdownTextObject(text=f"*Provider*\n{_provider(rotation)}"),
        MarkdownTextObject(text=f"*Name*\n{quoted_name(connection.name)}"),
        MarkdownTextObject(text=f"*Requested by*\n{user_mention(rotation.requested_by)}"),
        MarkdownTextObject(text=f"*When*\n{slack_date(rotation.requested_at)}"),
        MarkdownTextObject(text=f"*Key*\n{_key_change(rotation)}"),
    ]
    if connection.created_by != rotation.requested_by:
        fields.append(MarkdownTextObject(text=f"*Owner*\n{user_mention(connection.created_by)}"))
    return [
        dict(HeaderBlock(text=header).to_dict()),
        dict(SectionBlock(fields=fields).to_dict()),
        *checks_blocks(rotation.checks, failures_are_fatal=False, max_blocks=_CHECKS_MAX_BLOCKS),
    ]


def _key_change(rotation: RotationSummary) -> str:
    """ "`old` → `new`"; once the connection already shows the new key, only the new one."""
    old, new = rotation.connection.key_hint, rotation.new_key_hint
    if old is not None and old == new:
        return _key(new)
    return f"{_key(old)} → {_key(new)}"


def _old_hint(rotation: RotationSummary) -> str | None:
    """The replaced key's hint, unless the connection summary was read after the swap."""
    old = rotation.connection.key_hint
    return None if old == rotation.new_key_hint else old


def _outcome_line(rotation: RotationSummary) -> str:
    """ "✅ Approved by <@U1> <date>: …", "⌛ Expired <date>: nobody decided in time. …"."""
    status = rotation.status
    when = f" {slack_date(rotation.decided_at)}" if rotation.decided_at is not None else ""
    by = _by(rotation.decided_by)
    if status is RotationStatus.APPROVED:
        line = f"Approved{by}{when}: the new key is in use and the old stored credentials were destroyed."
    elif status is RotationStatus.REJECTED:
        line = f"Rejected{by}{when}: the new credentials were destroyed; the old key is still in use."
    elif status is RotationStatus.EXPIRED:
        line = (
            f"Expired{when}: nobody decided in time. The new credentials were destroyed; the old key "
            "is still in use."
        )
    elif status is RotationStatus.CANCELLED:
        line = f"Cancelled{when}: the connection was removed, and the new credentials were destroyed."
    else:
        raise ValueError(_NEVER_DECIDED)
    return f"{_ICONS[status]} {line}"


def _rotate_actions(connection: ConnectionSummary) -> Block:
    button = ButtonElement(text="Rotate", action_id=ids.ACTION_ROTATE, value=connection.id, style="primary")
    return dict(ActionsBlock(block_id=REMINDER_ACTIONS_BLOCK, elements=[button]).to_dict())


def _current_key_keeps_working(connection: ConnectionSummary) -> str:
    return f"The current key{_named(connection.key_hint)} keeps working until an admin approves the new one."


def _identity(rotation: RotationSummary) -> str:
    """Which credentials a direct message is about, without revealing them."""
    facts = [_provider(rotation)]
    old = _old_hint(rotation)
    if old:
        facts.append(f"old key {_key(old)}")
    facts += [f"new key {_key(rotation.new_key_hint)}", f"requested {slack_date(rotation.requested_at)}"]
    return " · ".join(facts)


def _by(user_id: str | None) -> str:
    return f" by {user_mention(user_id)}" if user_id else ""


def _quoted_reason(reason: str | None) -> str:
    """The reason as a mrkdwn block quote, escaped line by line so it cannot end the quote early."""
    text = (reason or "").strip()
    if not text:
        return "_No reason was given._"
    lines = truncate(text, _REASON_SHOWN_MAX).splitlines()
    return "\n".join(f"> {escape(line)}" if line.strip() else ">" for line in lines)


def _days(days: float) -> str:
    """ "90 days", "1 day", "0.5 days": a whole number without its ".0"."""
    shown = f"{days:.10g}"
    return f"{shown} day" if days == 1 else f"{shown} days"


def _provider(rotation: RotationSummary) -> str:
    return _title(rotation.connection.provider_title)


def _provider_title(provider: Provider) -> str:
    return _title(provider.title)


def _title(title: str) -> str:
    return escape(truncate(one_line(title, "the provider"), _PROVIDER_SHOWN_MAX))


def _key(hint: str | None) -> str:
    """A masked key hint (first and last characters) as the store keeps it, in code; never more."""
    return f"`{escape(truncate(one_line(hint), _KEY_HINT_SHOWN_MAX))}`" if hint else "—"


def _named(hint: str | None) -> str:
    """ " `ABCD…WXYZ`" to follow "key" in a sentence, or nothing when there is no hint."""
    return f" {_key(hint)}" if hint else ""
