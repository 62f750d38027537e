"""The readers of what Slack hands back (button values, private_metadata, modal state), fed any
text and any JSON: they never raise, and what they return is safe to look up, store and show.

Each property has a few explicit examples of what the end-to-end fuzzing found: a rotation form's
metadata naming a connection id or name no row can hold, a reason of nothing but NUL, and a
form's metadata naming another provider than the one the form was built for.
"""

from __future__ import annotations

import json
import unicodedata
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from blocks.forms import create_modal, rotation_modal
from bot import ids
from bot.domain import NAME_MAX_LENGTH, ConnectionSummary, Health, Status
from bot.payloads import (
    FormDraft,
    RotationForm,
    first_input,
    form_fits,
    parse_form_metadata,
    parse_id,
    parse_json_object,
    parse_page,
    parse_rotation_metadata,
    read_reason,
)
from bot.providers.base import Provider
from bot.providers.registry import PROVIDERS

ANY_TEXT = st.text(st.characters(exclude_categories=("Cs",)))
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | ANY_TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(ANY_TEXT, inner, max_size=4),
    max_leaves=12,
)


def providers() -> list[Provider]:
    return [p.from_environment({}) for p in PROVIDERS]


def has_control_characters(text: str) -> bool:
    return any(unicodedata.category(ch) == "Cc" for ch in text)


# --- ids -----------------------------------------------------------------------------------------------


@given(value=st.one_of(ANY_TEXT, JSON_VALUES))
@example(value="x" * 2000)
@example(value=str(uuid.uuid4()) + "\x00")
@example(value=" " + str(uuid.uuid4()))
def test_an_id_is_short_printable_ascii_or_nothing(value: Any) -> None:
    parsed = parse_id(value)
    if parsed is not None:
        assert parsed == value
        assert 0 < len(parsed) <= 36 and parsed.isascii() and parsed.isprintable() and " " not in parsed


def test_our_ids_are_ids() -> None:
    value = str(uuid.uuid4())
    assert parse_id(value) == value


# --- a rotation form's private_metadata ------------------------------------------------------------------


def rotation_metadata(connection: Any, provider: Any, name: Any) -> str:
    """Metadata in the shape the rotation form is opened with."""
    return json.dumps({"connection": connection, "provider": provider, "name": name})


@given(text=st.one_of(ANY_TEXT, st.builds(rotation_metadata, JSON_VALUES, JSON_VALUES, JSON_VALUES)))
@example(text=rotation_metadata("0", "confluent_cloud", "<!channel>" * 7))
@example(text=rotation_metadata("c" * 3000, "confluent_cloud", "Prod"))
@example(text=rotation_metadata("c1\x00", "confluent_cloud", "Prod"))
@example(text=rotation_metadata("c1", "confluent_cloud", "Prod\x00\n\nwarehouse"))
@example(text=rotation_metadata("c1", None, "Prod"))
def test_rotation_metadata_is_ours_or_nothing_and_its_name_fits_a_stored_name(text: str) -> None:
    form = parse_rotation_metadata(text)
    if form is None:
        return
    assert parse_id(form.connection_id) == form.connection_id
    assert isinstance(form.provider_key, str)
    assert len(form.name) <= NAME_MAX_LENGTH
    assert not has_control_characters(form.name) and "\n" not in form.name


def test_rotation_metadata_as_written_comes_back_as_it_was() -> None:
    connection_id = str(uuid.uuid4())
    text = rotation_metadata(connection_id, "snowflake", "Prod “warehouse” & co")

    assert parse_rotation_metadata(text) == RotationForm(connection_id, "snowflake", "Prod “warehouse” & co")


@pytest.mark.parametrize(
    ("text", "name"),
    [
        (rotation_metadata("c1", "confluent_cloud", "Prod\x00 \n warehouse"), "Prod warehouse"),
        (rotation_metadata("c1", "confluent_cloud", "n" * 2000), "n" * NAME_MAX_LENGTH),
        (rotation_metadata("c1", "confluent_cloud", ["Prod"]), ""),
    ],
)
def test_a_tampered_name_is_cut_to_what_a_stored_name_can_be(text: str, name: str) -> None:
    form = parse_rotation_metadata(text)
    assert form is not None and form.name == name


@pytest.mark.parametrize(
    "text",
    [
        rotation_metadata("c" * 37, "confluent_cloud", "Prod"),
        rotation_metadata("c1\x00", "confluent_cloud", "Prod"),
        rotation_metadata("", "confluent_cloud", "Prod"),
        rotation_metadata(7, "confluent_cloud", "Prod"),
        rotation_metadata("c1", 7, "Prod"),
        "",
        "[]",
    ],
)
def test_metadata_with_an_id_no_row_can_have_is_not_a_rotation_form(text: str) -> None:
    assert parse_rotation_metadata(text) is None


# --- the reason of a reject modal ----------------------------------------------------------------------


def reason_view(value: Any) -> dict[str, Any]:
    return {
        "state": {
            "values": {ids.BLOCK_REASON: {ids.INPUT_ACTION: {"type": "plain_text_input", "value": value}}}
        }
    }


@given(value=st.one_of(ANY_TEXT, JSON_VALUES))
@example(value="\x00")
@example(value="Use\x00 the service\x1b account\n\n> quoted\t")
def test_a_reason_keeps_what_shows_and_drops_control_characters(value: Any) -> None:
    reason = read_reason(reason_view(value))
    assert reason == reason.strip()
    assert all(ch.isspace() or unicodedata.category(ch) != "Cc" for ch in reason)
    if isinstance(value, str):
        assert (
            reason == "".join(ch for ch in value if ch.isspace() or unicodedata.category(ch) != "Cc").strip()
        )
    else:
        assert reason == ""


def test_a_reason_of_nothing_but_nul_is_no_reason() -> None:
    assert read_reason(reason_view("\x00\x00 ")) == ""
    assert read_reason({}) == ""


# --- which form a submission belongs to ---------------------------------------------------------------


def summary(provider: Provider) -> ConnectionSummary:
    now = datetime(2026, 3, 1, tzinfo=UTC)
    return ConnectionSummary(
        id="c1",
        name="Prod",
        provider_key=provider.key,
        provider_title=provider.title,
        status=Status.ACTIVE,
        health=Health.HEALTHY,
        created_by="U0A1B2C3D4E",
        created_at=now,
        last_verified_at=now,
        key_hint=None,
    )


@pytest.mark.parametrize("provider", providers(), ids=lambda p: p.key)
def test_a_form_fits_its_own_provider_only(provider: Provider) -> None:
    create = create_modal(provider, private_metadata="{}")
    rotate = rotation_modal(provider, summary(provider), private_metadata="{}")
    for other in providers():
        assert form_fits(create, other) is (other.key == provider.key)
        assert form_fits(rotate, other) is (other.key == provider.key)
    assert first_input(create) == ids.BLOCK_NAME
    assert first_input(rotate) == provider.fields[0].name


@given(view=st.dictionaries(st.sampled_from(["blocks", "state", "id"]), JSON_VALUES))
@example(view={"blocks": [{"type": "input"}, {"type": "input", "block_id": 7}, "x", None]})
def test_any_view_is_read_without_raising(view: dict[str, Any]) -> None:
    assert isinstance(first_input(view), str)
    for provider in providers():
        assert form_fits(view, provider) in (True, False)


# --- the other readers, for completeness ----------------------------------------------------------------


@given(text=ANY_TEXT)
@example(text="[" * 2500)
def test_no_reader_raises_on_any_text(text: str) -> None:
    FormDraft.decode(text)
    assert isinstance(parse_json_object(text), dict)
    assert parse_form_metadata(text) is None or isinstance(parse_form_metadata(text), str)
    assert parse_page(text) >= 1
