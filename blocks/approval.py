"""The approval flow in blocks: the request posted to the admin channel, the same request once
decided, the modal asking why an admin rejects, the direct message to the requester, and the short
ephemeral replies to a click that changes nothing.

Names, reasons and anything else a user typed are escaped; user ids become ``<@U…>`` mentions only
when they look like Slack user ids. Nothing here is provider-specific: the provider is named by
``ConnectionSummary.provider_title``. Callers pass the connection's id as ``summary.id``; it is
carried in the buttons' values, never shown.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
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

# The mention rule lives with the connections list; both must agree on what counts as a user id.
from blocks.results import Block, checks_blocks, context, message, quoted_name, section
from blocks.text import HEADER_MAX, escape, one_line, slack_date, truncate, user_mention
from bot import ids
from bot.domain import ConnectionSummary, Status
from bot.providers.base import Check

__all__ = [
    "APPROVAL_ACTIONS_BLOCK",
    "REASON_MAX_LENGTH",
    "admin_check_failed_reply",
    "already_decided_reply",
    "approval_decided",
    "approval_request",
    "decision_dm",
    "not_admin_reply",
    "not_found_reply",
    "reject_reason_modal",
    "self_approval_reply",
]

APPROVAL_ACTIONS_BLOCK = "approval_actions"
"""block_id of the actions block holding Approve and Reject."""
REASON_MAX_LENGTH = 500
"""The most characters an admin may write as the reason for a rejection."""

_MODAL_TITLE = "Reject connection"
_PROVIDER_SHOWN_MAX = 150
_KEY_HINT_SHOWN_MAX = 40
# The modal caps reasons at REASON_MAX_LENGTH; this guards a caller passing something longer.
# Escaping and quoting grow a text at most fivefold, so this many characters fit in a section.
_REASON_SHOWN_MAX = 550
_WHY_SHOWN_MAX = 500
_CHECKS_MAX_BLOCKS = 10
_NEVER_DECIDED = "a request awaiting approval has no decision to show"


def approval_request(summary: ConnectionSummary, checks: Sequence[Check]) -> dict[str, Any]:
    """The message posted to the admin channel: who asks for what, what the verification found,
    and the Approve / Reject buttons, each carrying ``summary.id`` as its value.

    Reject opens :func:`reject_reason_modal`, which asks for the reason, so it has no confirm step.
    """
    approve = ButtonElement(text="Approve", action_id=ids.ACTION_APPROVE, value=summary.id, style="primary")
    reject = ButtonElement(text="Reject", action_id=ids.ACTION_REJECT, value=summary.id, style="danger")
    blocks = [
        *_request_blocks(summary, checks),
        context(
            "Approving makes the connection usable by the team. Rejecting asks you for a reason, "
            "which the requester sees, and destroys the stored credentials."
        ),
        dict(ActionsBlock(block_id=APPROVAL_ACTIONS_BLOCK, elements=[approve, reject]).to_dict()),
    ]
    text = (
        f"Approval requested: {quoted_name(summary.name)} ({_provider(summary)}) "
        f"by {user_mention(summary.created_by)}"
    )
    return message(text, blocks)


def approval_decided(
    summary: ConnectionSummary,
    checks: Sequence[Check],
    *,
    status: Status,
    decided_by: str | None,
    decided_at: datetime,
    reason: str | None,
) -> dict[str, Any]:
    """The approval request updated in place once decided: the same facts, no buttons, and who
    decided what and when (with the reason, quoted, when there is one).

    ``status`` is the connection's status after the decision; ``decided_by`` is ignored for an
    expiry, which nobody decided. A status still awaiting approval raises ``ValueError``.
    """
    outcome = _outcome_line(status, decided_by, decided_at)
    blocks = [*_request_blocks(summary, checks), section(outcome)]
    if status is Status.REJECTED or (reason and reason.strip()):
        blocks.append(section(_quoted_reason(reason)))
    text = f"{quoted_name(summary.name)} ({_provider(summary)}): {outcome}"
    return message(text, blocks)


def reject_reason_modal(summary: ConnectionSummary, *, private_metadata: str) -> dict[str, Any]:
    """The modal an admin fills in to reject: a required reason the requester will read.

    ``private_metadata`` is echoed by Slack to every client, so it must hold ids only.
    """
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
            f"Reject {_provider(summary)} connection *{quoted_name(summary.name)}*, "
            f"requested by {user_mention(summary.created_by)} {slack_date(summary.created_at)}?"
        ),
        dict(reason.to_dict()),
        context("Its stored credentials are destroyed; to try again, the requester registers it anew."),
    ]
    view = View(
        type="modal",
        callback_id=ids.VIEW_REJECT,
        title=_MODAL_TITLE,
        submit="Reject",
        close="Cancel",
        private_metadata=private_metadata,
        blocks=blocks,
    )
    return dict(view.to_dict())


def decision_dm(
    summary: ConnectionSummary, *, status: Status, decided_by: str | None, reason: str | None
) -> dict[str, Any]:
    """The direct message telling the requester what became of their connection, and for a
    rejection or an expiry, what to do next. A status still awaiting approval raises ``ValueError``."""
    subject = f"Your {_provider(summary)} connection {quoted_name(summary.name)}"
    by = _by(decided_by)
    destroyed = "*What next:* the credentials you entered were destroyed."
    again = "register the connection again with `/connections`"
    parts: list[str]
    if status is Status.ACTIVE:
        text = f"✅ {subject} was approved{by}."
        parts = [f"{text} It is now {status.label} and ready to use."]
    elif status is Status.REJECTED:
        text = f"❌ {subject} was {status.label}{by}."
        parts = [text, _quoted_reason(reason), f"{destroyed} Fix what the reason says, then {again}."]
    elif status is Status.EXPIRED:
        text = f"⌛ {subject} {status.label}: nobody decided on it within the time limit."
        parts = [text, f"{destroyed} To use it, {again} and let an admin know it is waiting."]
    elif status is Status.REVOKED:
        text = f"🚫 {subject} was {status.label}{by}."
        parts = [f"{text} It can no longer be used."]
        if reason and reason.strip():
            parts.append(_quoted_reason(reason))
    else:
        raise ValueError(_NEVER_DECIDED)
    # One section each: an escaped reason can be five times its typed length.
    blocks = [*(section(part) for part in parts), context(_identity(summary))]
    return message(text, blocks)


def not_admin_reply(how_to_become: str) -> dict[str, Any]:
    """Told to someone who clicked Approve or Reject without being an admin of connections.

    ``how_to_become`` is mrkdwn written by the caller (it may link a channel or a user group), not
    user text, so it is not escaped."""
    text = "Only admins of connections can approve or reject. Nothing changed."
    how = how_to_become.strip()
    return _reply(f"{text} {how}" if how else text)


def self_approval_reply() -> dict[str, Any]:
    """Told to an admin who clicked Approve or Reject on their own request."""
    return _reply(
        "You requested this connection, so another admin must approve or reject it. Nothing changed."
    )


def already_decided_reply(
    status: Status, decided_by: str | None, decided_at: datetime | None
) -> dict[str, Any]:
    """Told to whoever clicked after the decision was made (a double click, a second admin, a
    stale message): who decided what, and when. A status still awaiting approval raises
    ``ValueError``."""
    outcome = _decision(status, decided_by, decided_at)
    return _reply(f"Already {outcome[0].lower()}{outcome[1:]}. Nothing changed.")


def not_found_reply() -> dict[str, Any]:
    """Told to whoever clicked on a request whose connection no longer exists."""
    return _reply("This connection no longer exists, so there is nothing to approve or reject.")


def admin_check_failed_reply(why: str) -> dict[str, Any]:
    """Told when Slack could not confirm the clicker is an admin: we refuse rather than guess.

    ``why`` is a short plain-text reason (e.g. "Slack did not answer in time"); it is escaped."""
    shown = escape(truncate(one_line(why, "no reason given"), _WHY_SHOWN_MAX))
    return _reply(
        f"⚠️ We couldn't check your admin rights with Slack right now ({shown}), so nothing "
        "changed. Try again in a minute."
    )


def _request_blocks(summary: ConnectionSummary, checks: Sequence[Check]) -> list[Block]:
    """What the request and its decided form share: header, facts and checks."""
    header = truncate(f"Approval requested: {one_line(summary.name)}", HEADER_MAX)
    facts = SectionBlock(
        fields=[
            MarkdownTextObject(text=f"*Provider*\n{_provider(summary)}"),
            MarkdownTextObject(text=f"*Name*\n{quoted_name(summary.name)}"),
            MarkdownTextObject(text=f"*Requested by*\n{user_mention(summary.created_by)}"),
            MarkdownTextObject(text=f"*When*\n{slack_date(summary.created_at)}"),
            MarkdownTextObject(text=f"*Key*\n{_key(summary)}"),
        ]
    )
    return [
        dict(HeaderBlock(text=header).to_dict()),
        dict(facts.to_dict()),
        *checks_blocks(checks, failures_are_fatal=False, max_blocks=_CHECKS_MAX_BLOCKS),
    ]


def _outcome_line(status: Status, decided_by: str | None, decided_at: datetime) -> str:
    icons = {Status.ACTIVE: "✅", Status.REJECTED: "❌", Status.EXPIRED: "⌛", Status.REVOKED: "🚫"}
    decision = _decision(status, decided_by, decided_at)
    return f"{icons[status]} {decision}"


def _decision(status: Status, decided_by: str | None, decided_at: datetime | None) -> str:
    """ "Approved by <@U1> <date>", "Expired <date>: nobody decided in time", ..."""
    when = f" {slack_date(decided_at)}" if decided_at is not None else ""
    if status is Status.ACTIVE:
        return f"Approved{_by(decided_by)}{when}"
    if status is Status.EXPIRED:
        return f"{status.label.capitalize()}{when}: nobody decided in time"
    if status in (Status.REJECTED, Status.REVOKED):
        return f"{status.label.capitalize()}{_by(decided_by)}{when}"
    raise ValueError(_NEVER_DECIDED)


def _by(user_id: str | None) -> str:
    return f" by {user_mention(user_id)}" if user_id else ""


def _quoted_reason(reason: str | None) -> str:
    """The reason as a mrkdwn block quote, escaped line by line so it cannot end the quote early."""
    text = (reason or "").strip()
    if not text:
        return "_No reason was given._"
    lines = truncate(text, _REASON_SHOWN_MAX).splitlines()
    return "\n".join(f"> {escape(line)}" if line.strip() else ">" for line in lines)


def _provider(summary: ConnectionSummary) -> str:
    return escape(truncate(one_line(summary.provider_title, "a provider"), _PROVIDER_SHOWN_MAX))


def _identity(summary: ConnectionSummary) -> str:
    """Which credential a direct message is about, without revealing it."""
    return f"{_provider(summary)} · key {_key(summary)} · requested {slack_date(summary.created_at)}"


def _key(summary: ConnectionSummary) -> str:
    """The masked key hint (first and last characters) as the store keeps it; never more."""
    hint = summary.key_hint
    return f"`{escape(truncate(one_line(hint), _KEY_HINT_SHOWN_MAX))}`" if hint else "—"


def _reply(text: str) -> dict[str, Any]:
    """A short ephemeral reply for ``chat.postEphemeral`` or ``respond``."""
    return message(text, [section(text)])
