"""Pure Block Kit builders: declarations and read models in, Block Kit JSON (dicts) out. No I/O."""

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
    "checks_blocks",
    "connections_message",
    "create_modal",
    "escape",
    "help_message",
    "hints_blocks",
    "outcome_headline",
    "plural",
    "problem_view",
    "result_message",
    "result_view",
    "slack_date",
    "truncate",
    "verifying_view",
]
