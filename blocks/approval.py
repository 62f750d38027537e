"""Approval requests in blocks, for a new connection and for a rotation alike: the request posted
to the admin channel, the same request once decided, the modal asking why an admin rejects, the
direct message to the requester, and the replies to a click that changes nothing.

The two kinds share every layout; a rotation shows what changes (the key in use → the new one, and
every other setting it changes, before → after, so that an admin sees a rotation that repoints a
connection) and says what approving it does. Names, reasons, settings and anything else a user
typed are escaped; user ids become ``<@U…>`` mentions only when they look like Slack user ids. The
request's id travels in the buttons' values, never in text.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from slack_sdk.models.blocks import ButtonElement, InputBlock, PlainTextInputElement

from blocks.parts import (
    Block,
    actions,
    admin_unchecked,
    by,
    checks_blocks,
    context,
    fields_section,
    header,
    key_text,
    message,
    modal,
    named_key,
    not_admin,
    pack_sections,
    provider_text,
    quoted_name,
    quoted_reason,
    reply,
    section,
    stored_in,
)
from blocks.results import config_change_lines
from blocks.text import HEADER_MAX, inline, literal, one_line, slack_date, truncate, user_mention
from bot import ids
from bot.domain import (
    REASON_MAX_LENGTH,
    ApprovalRequest,
    ConnectionSummary,
    Decision,
    RequestKind,
    RotationStatus,
    Status,
    Verdict,
)

__all__ = [
    "APPROVAL_ACTIONS_BLOCK",
    "REASON_MAX_LENGTH",
    "REMINDER_ACTIONS_BLOCK",
    "ROTATION_ACTIONS_BLOCK",
    "STATUS_ICONS",
    "admin_check_failed_reply",
    "already_decided_reply",
    "decide_buttons",
    "decided_message",
    "decision_dm",
    "decision_reply",
    "not_admin_reply",
    "not_found_reply",
    "reason_modal",
    "refusal_text",
    "request_message",
    "rotate_actions",
    "rotation_pending_reply",
    "self_approval_reply",
    "store_failed_reply",
]

APPROVAL_ACTIONS_BLOCK = "approval_actions"
"""block_id of the actions block holding Approve and Reject on a new connection's request."""
ROTATION_ACTIONS_BLOCK = "rotation_actions"
"""block_id of the actions block holding Approve and Reject on a rotation request."""
REMINDER_ACTIONS_BLOCK = "rotation_reminder_actions"
"""block_id of the actions block holding a Rotate button in a direct message."""

_NEVER_DECIDED = "a request awaiting approval has no decision to show"
_PROBLEM_MAX = 400
"""The most characters of a store's reason shown (its messages are one line, a path included)."""
_CHANGES_MAX_BLOCKS = 10
"""Sections for a rotation's other changes: each holds several, and a form has fewer fields."""

_ACTIONS = {
    RequestKind.CONNECTION: (ids.ACTION_APPROVE, ids.ACTION_REJECT, APPROVAL_ACTIONS_BLOCK),
    RequestKind.ROTATION: (ids.ACTION_APPROVE_ROTATION, ids.ACTION_REJECT_ROTATION, ROTATION_ACTIONS_BLOCK),
}
STATUS_ICONS = {
    Status.PENDING_APPROVAL: "⏳",
    Status.ACTIVE: "✅",
    Status.REJECTED: "❌",
    Status.EXPIRED: "⌛",
    Status.REVOKED: "🚫",
    RotationStatus.APPROVED: "✅",
    RotationStatus.REJECTED: "❌",
    RotationStatus.EXPIRED: "⌛",
    RotationStatus.CANCELLED: "🚫",
}
"""The icon of each status of a connection or of a rotation."""
_ON_APPROVAL = {
    RequestKind.CONNECTION: (
        "Approving makes the connection usable by the team. Rejecting asks you for a reason, which "
        "the requester sees, and destroys the stored credentials."
    ),
    RequestKind.ROTATION: (
        "Approving replaces the key in use with the new one and destroys the old stored credentials. "
        "Rejecting asks you for a reason, which the requester sees, destroys the new credentials and "
        "keeps the old ones working."
    ),
}
_ROTATION_OUTCOMES = {
    RotationStatus.APPROVED: "the new key is in use and the old stored credentials were destroyed.",
    RotationStatus.REJECTED: "the new credentials were destroyed; the old key is still in use.",
    RotationStatus.EXPIRED: (
        "nobody decided in time. The new credentials were destroyed; the old key is still in use."
    ),
    RotationStatus.CANCELLED: "the connection was removed, and the new credentials were destroyed.",
}


# --- the admin channel ----------------------------------------------------------------------


def request_message(request: ApprovalRequest) -> dict[str, Any]:
    """The message posted to the admin channel: who asks for what, what the verification found,
    and Approve / Reject, each carrying ``request.id``. Reject opens :func:`reason_modal`, which
    asks for the reason, so it has no confirm step."""
    blocks = [*_request_blocks(request), context(_ON_APPROVAL[request.kind]), decide_buttons(request)]
    connection = request.connection
    prefix = "Approval requested:" if request.kind is RequestKind.CONNECTION else "🔁 Rotation requested for"
    subject = f"{prefix} {quoted_name(connection.name)} ({provider_text(connection)})"
    return message(f"{subject} by {user_mention(request.requested_by)}", blocks)


def decide_buttons(
    request: ApprovalRequest,
    *,
    block_id: str | None = None,
    noun: str = "",
    reject_style: str | None = "danger",
) -> Block:
    """The actions block with Approve and Reject for ``request`` (labelled "Approve <noun>" with
    ``noun``), each button carrying its id."""
    approve_id, reject_id, default_block = _ACTIONS[request.kind]
    label = f" {noun}" if noun else ""
    approve = ButtonElement(text=f"Approve{label}", action_id=approve_id, value=request.id, style="primary")
    reject = ButtonElement(text=f"Reject{label}", action_id=reject_id, value=request.id, style=reject_style)
    return actions(approve, reject, block_id=block_id or default_block)


def decided_message(request: ApprovalRequest) -> dict[str, Any]:
    """The request updated in place once decided: the same facts, no buttons, what became of it,
    who decided and when (with the reason, quoted, when there is one). A request still awaiting
    approval raises ``ValueError``."""
    outcome = _outcome_line(request)
    blocks = [*_request_blocks(request), section(outcome)]
    where = _where_approved(request)
    if where:
        blocks.append(context(where))
    rejected = request.status in (Status.REJECTED, RotationStatus.REJECTED)
    if rejected or (request.reason and request.reason.strip()):
        blocks.append(section(quoted_reason(request.reason)))
    connection = request.connection
    prefix = "" if request.kind is RequestKind.CONNECTION else "🔁 Rotation of "
    return message(f"{prefix}{quoted_name(connection.name)} ({provider_text(connection)}): {outcome}", blocks)


def reason_modal(request: ApprovalRequest, *, private_metadata: str) -> dict[str, Any]:
    """The modal an admin fills in to reject: a required reason the requester will read.
    ``private_metadata`` is echoed by Slack to every client, so it must hold ids only."""
    connection = request.connection
    asked = f"requested by {user_mention(request.requested_by)} {slack_date(request.requested_at)}?"
    if request.kind is RequestKind.CONNECTION:
        title, callback_id = "Reject connection", ids.VIEW_REJECT
        question = f"Reject {provider_text(connection)} connection *{quoted_name(connection.name)}*, {asked}"
        what_happens = "Its stored credentials are destroyed; to try again, the requester registers it anew."
    else:
        title, callback_id = "Reject rotation", ids.VIEW_REJECT_ROTATION
        credentials = f"the new {provider_text(connection)} credentials"
        question = f"Reject {credentials} for *{quoted_name(connection.name)}*, {asked}"
        what_happens = (
            f"The new credentials{named_key(request.new_key_hint)} are destroyed; the connection keeps "
            f"using its current key{named_key(connection.key_hint)}."
        )
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
    blocks = [section(question), dict(reason.to_dict()), context(what_happens)]
    return modal(callback_id, title, blocks, submit="Reject", private_metadata=private_metadata)


def _request_blocks(request: ApprovalRequest) -> list[Block]:
    """What the request and its decided form share: header, facts and checks."""
    connection = request.connection
    name = one_line(connection.name)
    if request.kind is RequestKind.CONNECTION:
        title = f"Approval requested: {name}"
    else:
        prefix = "🔁 Rotation requested for “"
        title = f"{prefix}{truncate(name, HEADER_MAX - len(prefix) - 1)}”"
    fields = [
        f"*Provider*\n{provider_text(connection)}",
        f"*Name*\n{quoted_name(connection.name)}",
        f"*Requested by*\n{user_mention(request.requested_by)}",
        f"*When*\n{slack_date(request.requested_at)}",
        f"*Key*\n{_key_change(request)}",
    ]
    if connection.created_by != request.requested_by:
        fields.append(f"*Owner*\n{user_mention(connection.created_by)}")
    changes = [] if request.config_changes is None else config_change_lines(request.config_changes)
    return [
        header(title),
        fields_section(fields),
        *pack_sections(changes, _CHANGES_MAX_BLOCKS),
        *checks_blocks(request.checks, failures_are_fatal=False),
    ]


def _where_approved(request: ApprovalRequest) -> str:
    """Where an approved credential now lives, when a secret store holds it, so whoever wires a
    pipeline knows what to reference; empty otherwise."""
    location = request.connection.secret_location
    if location is None or request.status not in (Status.ACTIVE, RotationStatus.APPROVED):
        return ""
    what = "The new credential is" if request.kind is RequestKind.ROTATION else "The credential is"
    return f"🔐 {what} stored in {stored_in(location)}: pipelines read it there."


def _key_change(request: ApprovalRequest) -> str:
    """The key in use; for a rotation "`old` → `new`", or only the new one once it is in use."""
    old = request.connection.key_hint
    if request.kind is RequestKind.CONNECTION:
        return key_text(old)
    new = request.new_key_hint
    return key_text(new) if old is not None and old == new else f"{key_text(old)} → {key_text(new)}"


def _outcome_line(request: ApprovalRequest) -> str:
    """ "✅ Approved by <@U1> <date>", "⌛ Expired <date>: nobody decided in time", …"""
    status = request.status
    if request.kind is RequestKind.CONNECTION:
        decision = _decision(Status(status), request.decided_by, request.decided_at)
    elif status in _ROTATION_OUTCOMES:
        when = f" {slack_date(request.decided_at)}" if request.decided_at is not None else ""
        who = "" if status in (RotationStatus.EXPIRED, RotationStatus.CANCELLED) else by(request.decided_by)
        decision = f"{status.value.capitalize()}{who}{when}: {_ROTATION_OUTCOMES[RotationStatus(status)]}"
    else:
        raise ValueError(_NEVER_DECIDED)
    return f"{STATUS_ICONS[status]} {decision}"


def _decision(status: Status, decided_by: str | None, decided_at: datetime | None) -> str:
    """ "Approved by <@U1> <date>", "Expired <date>: nobody decided in time", …"""
    when = f" {slack_date(decided_at)}" if decided_at is not None else ""
    if status is Status.ACTIVE:
        return f"Approved{by(decided_by)}{when}"
    if status is Status.EXPIRED:
        return f"{status.label.capitalize()}{when}: nobody decided in time"
    if status in (Status.REJECTED, Status.REVOKED):
        return f"{status.label.capitalize()}{by(decided_by)}{when}"
    raise ValueError(_NEVER_DECIDED)


# --- the requester --------------------------------------------------------------------------


def decision_dm(request: ApprovalRequest) -> dict[str, Any]:
    """The direct message telling the requester what became of their request and what to do next.
    A request still awaiting approval raises ``ValueError``."""
    rotation = request.kind is RequestKind.ROTATION
    text, parts = (_rotation_news if rotation else _connection_news)(request)
    # One section each: an escaped reason can be five times its typed length.
    blocks = [*(section(part) for part in parts), context(_identity(request))]
    if rotation and request.status in (RotationStatus.REJECTED, RotationStatus.EXPIRED):
        blocks.append(rotate_actions(request.connection))
    return message(text, blocks)


def _connection_news(request: ApprovalRequest) -> tuple[str, list[str]]:
    connection, status = request.connection, request.status
    subject = f"Your {provider_text(connection)} connection {quoted_name(connection.name)}"
    decided = by(request.decided_by)
    destroyed = "*What next:* the credentials you entered were destroyed."
    again = "register the connection again with `/connections`"
    if status is Status.ACTIVE:
        text = f"✅ {subject} was approved{decided}."
        where = _where_approved(request)
        return text, [f"{text} It is now {status.label} and ready to use.", *([where] if where else [])]
    if status is Status.REJECTED:
        text = f"❌ {subject} was {status.label}{decided}."
        fix = f"{destroyed} Fix what the reason says, then {again}."
        return text, [text, quoted_reason(request.reason), fix]
    if status is Status.EXPIRED:
        text = f"⌛ {subject} {status.label}: nobody decided on it within the time limit."
        return text, [text, f"{destroyed} To use it, {again} and let an admin know it is waiting."]
    if status is Status.REVOKED:
        text = f"🚫 {subject} was {status.label}{decided}."
        reason = [quoted_reason(request.reason)] if request.reason and request.reason.strip() else []
        return text, [f"{text} It can no longer be used.", *reason]
    raise ValueError(_NEVER_DECIDED)


def _rotation_news(request: ApprovalRequest) -> tuple[str, list[str]]:
    connection, status = request.connection, request.status
    provider, name = provider_text(connection), quoted_name(connection.name)
    subject = f"The new credentials for {provider} connection {name}"
    destroyed = (
        "*What next:* the new credentials you entered were destroyed and the connection keeps using its "
        f"current key{named_key(connection.key_hint)}."
    )
    if status is RotationStatus.APPROVED:
        text = f"✅ {subject} were approved{by(request.decided_by)}."
        where = _where_approved(request)
        return text, [
            f"{text} The new key{named_key(request.new_key_hint)} is now in use, and the old stored "
            "credentials were destroyed.",
            *([where] if where else []),
            f"*What next:* delete the old key{named_key(_old_hint(request))} at {provider}, so it can "
            "no longer be used anywhere.",
        ]
    if status is RotationStatus.REJECTED:
        text = f"❌ {subject} were rejected{by(request.decided_by)}."
        fix = f"{destroyed} Fix what the reason says, then click *Rotate* to try again."
        return text, [text, quoted_reason(request.reason), fix]
    if status is RotationStatus.EXPIRED:
        text = f"⌛ {subject} expired: nobody decided on them within the time limit."
        return text, [text, f"{destroyed} To rotate, click *Rotate* and let an admin know it is waiting."]
    if status is RotationStatus.CANCELLED:
        text = f"🚫 The rotation of {provider} connection {name} was cancelled: the connection was removed."
        gone = (
            "The new credentials you entered were destroyed. If you created the new key only for this "
            f"connection, delete it at {provider}."
        )
        return text, [text, gone]
    raise ValueError(_NEVER_DECIDED)


def rotation_pending_reply(rotation: ApprovalRequest) -> dict[str, Any]:
    """Told to someone who tries to rotate a connection whose rotation already waits for an admin."""
    return reply(
        f"A rotation of {quoted_name(rotation.connection.name)} already waits for an admin's approval: "
        f"requested by {user_mention(rotation.requested_by)} {slack_date(rotation.requested_at)}, "
        f"new key{named_key(rotation.new_key_hint) or ' (no hint)'}. Nothing changed. Once an admin decides "
        "on it, you can rotate again."
    )


def rotate_actions(connection: ConnectionSummary) -> Block:
    """A Rotate button for ``connection``, for a direct message."""
    button = ButtonElement(text="Rotate", action_id=ids.ACTION_ROTATE, value=connection.id, style="primary")
    return actions(button, block_id=REMINDER_ACTIONS_BLOCK)


def _old_hint(request: ApprovalRequest) -> str | None:
    """The replaced key's hint, unless the connection was read after the swap."""
    old = request.connection.key_hint
    return None if old == request.new_key_hint else old


def _identity(request: ApprovalRequest) -> str:
    """Which credential a direct message is about, without revealing it."""
    connection = request.connection
    if request.kind is RequestKind.CONNECTION:
        key = key_text(connection.key_hint)
        return f"{provider_text(connection)} · key {key} · requested {slack_date(connection.created_at)}"
    facts = [provider_text(connection)]
    old = _old_hint(request)
    if old:
        facts.append(f"old key {key_text(old)}")
    facts += [f"new key {key_text(request.new_key_hint)}", f"requested {slack_date(request.requested_at)}"]
    return " · ".join(facts)


# --- a click that changes nothing -------------------------------------------------------------


def decision_reply(decision: Decision, how_to_become_admin: str) -> dict[str, Any]:
    """Told to whoever clicked Approve or Reject when their click decided nothing."""
    request = decision.request
    if decision.verdict is Verdict.STORE_FAILED:
        return store_failed_reply(decision)
    if decision.verdict is Verdict.NOT_ADMIN:
        return not_admin_reply(how_to_become_admin)
    if decision.verdict is Verdict.ADMIN_CHECK_FAILED:
        return admin_check_failed_reply(decision.admin.why if decision.admin else "unknown")
    if request is None:
        return not_found_reply()
    if request.kind is RequestKind.ROTATION:
        return reply(literal(refusal_text(decision, request.kind)))
    if decision.verdict is Verdict.SELF_APPROVAL:
        return self_approval_reply()
    return already_decided_reply(Status(request.status), request.decided_by, request.decided_at)


def refusal_text(decision: Decision, kind: RequestKind) -> str:
    """Why a decision on a request of ``kind`` changed nothing, as plain text (an error under the
    reject modal's reason)."""
    request = decision.request
    rotation = kind is RequestKind.ROTATION
    noun = "rotation" if rotation else "connection"
    verdict = decision.verdict
    if verdict is Verdict.NOT_ADMIN:
        what = "decide on rotations" if rotation else "reject"
        return f"Only admins of connections can {what}. Nothing changed."
    if verdict is Verdict.ADMIN_CHECK_FAILED:
        why = decision.admin.why if decision.admin else "unknown"
        return f"Your admin rights could not be checked with Slack ({why}), so nothing changed. Try again."
    if verdict is Verdict.SELF_APPROVAL:
        return f"You asked for this {noun}, so another admin must decide. Nothing changed."
    if verdict is Verdict.EXPIRED:
        request_noun = "rotation request" if rotation else "request"
        return f"This {request_noun} expired: nobody decided within the time limit. Nothing changed."
    if verdict is Verdict.STORE_FAILED:
        why = one_line(decision.problem or "", "no reason given")
        return f"Nothing was approved: {truncate(why, _PROBLEM_MAX)} The {noun} still waits for approval."
    if verdict is Verdict.ALREADY_DECIDED and request is not None:
        status = request.status.label if isinstance(request.status, Status) else request.status.value
        return f"Someone already decided: this {noun} is {status}. Nothing changed."
    return f"This {noun} no longer exists. Nothing changed."


def store_failed_reply(decision: Decision) -> dict[str, Any]:
    """Told to the admin whose Approve could not put the credential in the secret store: where
    and why (the store's words, shown literally), that nothing changed, and to click again."""
    request = decision.request
    noun = "rotation" if request is not None and request.kind is RequestKind.ROTATION else "connection"
    why = inline(decision.problem or "", _PROBLEM_MAX, "no reason given")
    return reply(
        f"⚠️ *Nothing was approved:* the credential could not be put in the secret store.\n> {why}\n"
        f"The {noun} still waits for approval. Once the store works (or whoever runs the bot has fixed "
        "it), click *Approve* again: a retry never writes the credential twice."
    )


def not_admin_reply(how_to_become: str) -> dict[str, Any]:
    """Told to someone who clicked Approve or Reject without being an admin of connections, with
    ``how_to_become`` one (see :func:`blocks.parts.not_admin`)."""
    return not_admin("Only admins of connections can approve or reject. Nothing changed.", how_to_become)


def self_approval_reply() -> dict[str, Any]:
    """Told to an admin who clicked Approve or Reject on their own request."""
    return reply(
        "You requested this connection, so another admin must approve or reject it. Nothing changed."
    )


def already_decided_reply(
    status: Status, decided_by: str | None, decided_at: datetime | None
) -> dict[str, Any]:
    """Told to whoever clicked after the decision was made (a double click, a second admin, a
    stale message): who decided what, and when. A status still awaiting approval raises
    ``ValueError``."""
    outcome = _decision(status, decided_by, decided_at)
    return reply(f"Already {outcome[0].lower()}{outcome[1:]}. Nothing changed.")


def not_found_reply() -> dict[str, Any]:
    """Told to whoever clicked on a request whose connection no longer exists."""
    return reply("This connection no longer exists, so there is nothing to approve or reject.")


def admin_check_failed_reply(why: str) -> dict[str, Any]:
    """Told when Slack could not confirm the clicker is an admin; ``why`` is a short plain-text
    reason (e.g. "Slack did not answer in time")."""
    return reply(admin_unchecked(why, "nothing changed. Try again in a minute."))
