"""Pure Block Kit builders: declarations and read models in, Block Kit JSON (dicts) out. No I/O."""

from blocks.approval import (
    admin_check_failed_reply,
    already_decided_reply,
    approval_decided,
    approval_request,
    decision_dm,
    not_admin_reply,
    not_found_reply,
    reject_reason_modal,
    self_approval_reply,
)
from blocks.connections import (
    ACTION_PAGE_NEXT,
    ACTION_PAGE_PREVIOUS,
    connections_message,
    help_message,
)
from blocks.modal import create_modal, problem_view, result_view, verifying_view
from blocks.results import checks_blocks, hints_blocks, outcome_headline, result_message
from blocks.text import escape, plural, slack_date, truncate

__all__ = [
    "ACTION_PAGE_NEXT",
    "ACTION_PAGE_PREVIOUS",
    "admin_check_failed_reply",
    "already_decided_reply",
    "approval_decided",
    "approval_request",
    "checks_blocks",
    "connections_message",
    "create_modal",
    "decision_dm",
    "escape",
    "help_message",
    "hints_blocks",
    "not_admin_reply",
    "not_found_reply",
    "outcome_headline",
    "plural",
    "problem_view",
    "reject_reason_modal",
    "result_message",
    "result_view",
    "self_approval_reply",
    "slack_date",
    "truncate",
    "verifying_view",
]
