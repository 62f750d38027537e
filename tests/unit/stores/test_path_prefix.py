"""The static prefix of ``CONNECTIONS_SECRET_PATH``: what a store policy is scoped to."""

from __future__ import annotations

import pytest

from bot.stores.paths import PathTemplate


@pytest.mark.parametrize(
    ("template", "prefix"),
    [
        ("connections/{team}/{provider}/{name}", "connections/"),
        ("platform/prod/connections-{team}/{id}", "platform/prod/connections-"),
        ("{team}/{provider}/{name}", ""),
    ],
)
def test_the_prefix_is_the_text_before_the_first_placeholder(template: str, prefix: str) -> None:
    assert PathTemplate(template).prefix == prefix


@pytest.mark.parametrize(
    "template", ["connections/{team}/{provider}/{name}", "team-{team}/x/{id}", "{team}/{name}"]
)
def test_every_rendered_path_starts_with_the_prefix(template: str) -> None:
    paths = PathTemplate(template)
    path = paths.render(team="T0ABC", provider="snowflake", name="Prod (EU)", connection_id="c-1")
    assert path.startswith(paths.prefix)
