""" "Create <provider>" and "Rotate credentials" (the provider's form without the Name), and the views
that replace a form while and after its credentials are verified.

A form is built from the provider's declaration alone. Every input's action_id is
``ids.INPUT_ACTION`` and its block_id the field name, so a submission reads as
``state.values[field.name][ids.INPUT_ACTION]["value"]``. ``private_metadata`` is echoed by Slack to
every client, so callers put ids in it, never a secret; a secret field is never pre-filled.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from slack_sdk.models.blocks import InputBlock, PlainTextInputElement

from blocks.parts import Block, context, header, modal, named_key, provider_name, quoted_name, section
from blocks.results import result_blocks, try_again_block
from blocks.text import SECTION_TEXT_MAX, escape, truncate
from bot import ids
from bot.domain import NAME_MAX_LENGTH, ConnectionSummary, RequestKind
from bot.providers.base import FormField, Provider, Verification

__all__ = [
    "METADATA_TITLE",
    "ROTATION_TITLE",
    "SUBMIT_LABEL",
    "VIEW_MAX_BLOCKS",
    "create_modal",
    "notice_section",
    "problem_view",
    "provider_form_blocks",
    "result_view",
    "rotation_modal",
    "verifying_view",
]

METADATA_TITLE = "Metadata"
SUBMIT_LABEL = "Verify and save"
ROTATION_TITLE = "Rotate credentials"
"""The title of the rotation form and of the views that replace it (Slack allows 24 characters)."""
VIEW_MAX_BLOCKS = 100

# Slack's limits for a modal's title and buttons, and for the parts of an input.
_TITLE_MAX = 24
_LABEL_MAX = 2000
_HINT_MAX = 2000
_PLACEHOLDER_MAX = 150
_INPUT_MAX_LENGTH = 3000
_RESULT_CALLBACKS = {RequestKind.CONNECTION: ids.VIEW_RESULT, RequestKind.ROTATION: ids.VIEW_ROTATE_RESULT}


def create_modal(
    provider: Provider,
    *,
    private_metadata: str,
    initial: Mapping[str, str] | None = None,
    notice: str | None = None,
) -> dict[str, Any]:
    """The form a user fills in to connect ``provider``.

    ``initial`` pre-fills the Name (key ``ids.BLOCK_NAME``) and non-secret fields, e.g. when the
    user tries again; unknown keys are ignored, since a form can change between deploys. Asking
    to pre-fill a secret field raises ``ValueError``. ``notice`` (plain text) is shown above the
    form, e.g. why the last attempt failed.
    """
    initial = dict(initial or {})
    form = provider_form_blocks(provider, initial)
    if ids.BLOCK_NAME in {f.name for f in provider.fields}:
        raise ValueError(_declared_twice(provider))
    blocks: list[Block] = [notice_section(notice)] if notice else []
    blocks += [header(METADATA_TITLE), _name_input(provider, initial.get(ids.BLOCK_NAME)), *form]
    checks = f"these credentials with {escape(provider.title)} before saving anything"
    title = _title(RequestKind.CONNECTION, provider)
    return _form(ids.VIEW_CREATE, title, SUBMIT_LABEL, private_metadata, blocks, checks)


def rotation_modal(
    provider: Provider,
    connection: ConnectionSummary,
    *,
    private_metadata: str,
    initial: Mapping[str, str] | None = None,
    notice: str | None = None,
) -> dict[str, Any]:
    """The form asking for ``connection``'s new credential: the provider's form without the Name.
    ``initial`` and ``notice`` as for :func:`create_modal`."""
    blocks: list[Block] = [
        section(
            f"🔁 *Rotate the credentials of {quoted_name(connection.name)}* ({provider_name(provider)})\n"
            f"Enter the new credentials below. The current key{named_key(connection.key_hint)} keeps "
            "working until an admin approves the new one."
        )
    ]
    if notice and notice.strip():
        blocks.append(notice_section(notice))
    blocks.extend(provider_form_blocks(provider, initial))
    checks = f"the new credentials with {provider_name(provider)} before anything changes"
    return _form(ids.VIEW_ROTATE, ROTATION_TITLE, "Verify", private_metadata, blocks, checks)


def provider_form_blocks(provider: Provider, initial: Mapping[str, str] | None = None) -> list[Block]:
    """The provider's own sections as every form shows them: a header each, its description, then
    one input per field (block_id = field name, action_id = ``ids.INPUT_ACTION``).

    ``initial`` pre-fills non-secret fields and ignores unknown keys; asking to pre-fill a secret
    field raises ``ValueError``, as does a provider declaring a field name twice."""
    initial = dict(initial or {})
    secret = sorted(name for name in provider.secret_fields if name in initial)
    if secret:
        raise ValueError(f"secret fields cannot be pre-filled: {', '.join(secret)}")
    names = [f.name for f in provider.fields]
    if len(set(names)) != len(names):
        raise ValueError(_declared_twice(provider))
    blocks: list[Block] = []
    for form_section in provider.sections:
        blocks.append(header(form_section.title))
        if form_section.description:
            blocks.append(context(escape(truncate(form_section.description, 2000))))
        blocks.extend(_field_input(f, initial.get(f.name)) for f in form_section.fields)
    return blocks


def notice_section(notice: str) -> Block:
    """A warning above a form or in place of a result; ``notice`` is plain text, escaped here."""
    return section(f"⚠️ {escape(truncate(notice.strip(), SECTION_TEXT_MAX - 3))}")


# --- the views that replace a form -----------------------------------------------------------


def verifying_view(
    provider: Provider, name: str, *, kind: RequestKind = RequestKind.CONNECTION
) -> dict[str, Any]:
    """What replaces the form while the credentials are checked."""
    what = f"*{quoted_name(name)}* with {escape(provider.title)}"
    wait = "This takes a few seconds. If you close this window, the result comes to you as a direct message."
    if kind is RequestKind.ROTATION:
        what = f"the new credentials for *{quoted_name(name)}* with {provider_name(provider)}"
        wait += " Until an admin approves new credentials, the connection keeps using its current key."
    return _result_view(kind, provider, [section(f"⏳ Verifying {what}…"), context(wait)])


def result_view(
    provider: Provider,
    name: str,
    verification: Verification,
    *,
    try_again_value: str | None,
    approval_note: str,
    kind: RequestKind = RequestKind.CONNECTION,
) -> dict[str, Any]:
    """The verification's result in the modal (see :func:`blocks.results.result_blocks`). On
    failure, a Try again button carrying ``try_again_value`` reopens the form; ``approval_note``
    (mrkdwn written by the caller) says what happens next on success."""
    blocks = result_blocks(
        provider,
        name,
        verification,
        approval_note=approval_note,
        try_again_value=try_again_value,
        kind=kind,
        max_blocks=VIEW_MAX_BLOCKS,
    )
    return _result_view(kind, provider, blocks)


def problem_view(
    provider: Provider,
    message: str,
    *,
    try_again_value: str | None,
    kind: RequestKind = RequestKind.CONNECTION,
) -> dict[str, Any]:
    """A failure that is not the provider's answer: the name was taken a moment ago, a rotation
    already waits, something broke on our side. ``message`` is plain text meant for the user,
    never an exception's text."""
    blocks = [notice_section(message)]
    if try_again_value is not None:
        blocks.append(try_again_block(try_again_value))
    return _result_view(kind, provider, blocks)


def _result_view(kind: RequestKind, provider: Provider, blocks: list[Block]) -> dict[str, Any]:
    return modal(_RESULT_CALLBACKS[kind], _title(kind, provider), blocks, close="Close")


def _form(
    callback_id: str, title: str, submit: str, metadata: str, blocks: list[Block], checks: str
) -> dict[str, Any]:
    """A form ending with what submitting it does: first we check ``checks`` (mrkdwn, escaped)."""
    kept = "Secrets are stored encrypted and never shown again."
    blocks.append(context(f"When you submit, we check {checks}. {kept}"))
    return modal(callback_id, title, blocks, submit=submit, private_metadata=metadata, notify_on_close=False)


def _title(kind: RequestKind, provider: Provider) -> str:
    return (
        truncate(f"Create {provider.title}", _TITLE_MAX) if kind is RequestKind.CONNECTION else ROTATION_TITLE
    )


def _declared_twice(provider: Provider) -> str:
    return f"{provider.key} declares a field name twice or uses {ids.BLOCK_NAME!r}"


def _name_input(provider: Provider, initial: str | None) -> Block:
    examples = " or ".join(f"“{example}”" for example in provider.name_examples[:2])
    hint = (
        f"A friendly name so you and your team know which {provider.title} account or project "
        "this credential belongs to"
    )
    hint += f", e.g. {examples}." if examples else "."
    placeholder = provider.name_examples[0] if provider.name_examples else ""
    field = FormField(ids.BLOCK_NAME, "Name", hint, placeholder, max_length=NAME_MAX_LENGTH)
    return _field_input(field, initial)


def _field_input(field: FormField, initial: str | None) -> Block:
    max_length = field.max_length
    if max_length is not None and not 1 <= max_length <= _INPUT_MAX_LENGTH:
        raise ValueError(f"field {field.name!r}: max_length must be 1 to {_INPUT_MAX_LENGTH}")
    if field.secret:
        initial = None
    elif initial is not None and max_length is not None:
        # Slack refuses a view whose initial value is longer than the input allows.
        initial = initial[:max_length]
    element = PlainTextInputElement(
        action_id=ids.INPUT_ACTION,
        placeholder=truncate(field.placeholder, _PLACEHOLDER_MAX) if field.placeholder else None,
        initial_value=initial or None,
        max_length=max_length,
        multiline=field.multiline or None,
    )
    block = InputBlock(
        block_id=field.name,
        label=truncate(field.label, _LABEL_MAX),
        hint=truncate(field.hint, _HINT_MAX) if field.hint else None,
        optional=field.optional,
        element=element,
    )
    return dict(block.to_dict())
