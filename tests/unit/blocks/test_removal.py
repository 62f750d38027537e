"""Removing a connection: the prompt, the confirm dialog every Remove button carries, the result."""

from __future__ import annotations

from blocks.removal import remove_confirm, remove_prompt, removed_message
from bot import ids
from tests.support.block_kit import assert_valid
from tests.support.block_text import markup_problems, visible_text
from tests.support.slack_requests import find_action
from tests.unit.blocks.test_approval import user_made_markup
from tests.unit.blocks.test_retests import HOSTILE, OWNER, connection


def test_the_prompt_says_what_removing_does_and_offers_a_danger_button_behind_a_confirm() -> None:
    item = connection(name="Prod stream")
    payload = remove_prompt(item)
    assert_valid("message", payload)
    assert payload["text"] == "Remove “Prod stream”?"
    text = visible_text(payload)
    assert "*Remove “Prod stream”?* (Acme Stream)" in text
    assert "Removing it revokes it and destroys its stored credentials" in text
    assert "its name is then free again for a new connection" in text
    assert "*This cannot be undone.*" in text
    _, button = find_action(payload["blocks"], ids.ACTION_REMOVE, item.id)
    assert button["style"] == "danger"
    assert button["text"]["text"] == "Remove"
    assert button["confirm"] == remove_confirm("Prod stream")


def test_the_confirm_dialog_names_the_connection_and_says_it_cannot_be_undone() -> None:
    confirm = remove_confirm("Prod stream")
    assert confirm == {
        "title": {"type": "plain_text", "text": "Remove connection?", "emoji": True},
        "text": {
            "type": "plain_text",
            "text": (
                "“Prod stream” will be revoked and its stored credentials destroyed. This cannot be undone."
            ),
            "emoji": False,
        },
        "confirm": {"type": "plain_text", "text": "Remove", "emoji": True},
        "deny": {"type": "plain_text", "text": "Cancel", "emoji": True},
        "style": "danger",
    }


def test_the_confirm_dialog_fits_slacks_limits_with_any_name() -> None:
    for name in ("&" * 64, "x" * 500, "line\nbreaks\n" * 20, HOSTILE):
        payload = remove_prompt(connection(name=name))
        assert_valid("message", payload)
        text = remove_confirm(name)["text"]
        # Plain text: shown as typed, never parsed into a mention.
        assert text["type"] == "plain_text"
        assert len(text["text"]) <= 300
        assert "\n" not in text["text"]
        assert not markup_problems(remove_confirm(name))


def test_the_prompt_escapes_the_name() -> None:
    payload = remove_prompt(connection(name=HOSTILE))
    markup = user_made_markup(payload)
    assert "<" not in markup and ">" not in markup
    assert "&lt;!channel&gt;" in markup
    assert not markup_problems(payload)


def test_removed_says_who_removed_it_and_that_the_credentials_are_gone() -> None:
    payload = removed_message(connection(name="Prod stream"), OWNER)
    assert_valid("message", payload)
    expected = (
        f"🚫 “Prod stream” (Acme Stream) was removed by <@{OWNER}>; its stored credentials were destroyed."
    )
    assert payload["text"] == expected
    assert visible_text(payload["blocks"]) == expected


def test_removed_escapes_the_name_and_a_remover_that_is_not_a_user_id() -> None:
    payload = removed_message(connection(name=HOSTILE), "<!everyone>")
    assert_valid("message", payload)
    markup = user_made_markup(payload)
    assert "<" not in markup and ">" not in markup
    assert "removed by &lt;!everyone&gt;" in markup
