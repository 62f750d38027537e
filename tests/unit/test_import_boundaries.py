"""The layers of DESIGN.md, as imports: data flows from Slack down to the store, never back up.

* ``blocks`` are pure renderers: they import only the domain, the provider declarations, the
  shared ids and the mrkdwn rules (``bot.markup``, which the providers' hints use too), and
  ``slack_sdk``'s Block Kit models, so importing one loads no database, HTTP or Slack client;
* services know nothing of Slack, nor of how it is rendered;
* listeners, what tells people in Slack, and the jobs never touch the store: they go through the
  services;
* nothing below the Slack layer imports it.

The check reads the source (every ``import`` and ``from … import``, including those inside
functions), so it cannot be fooled by an import that happens not to run in a test.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

SLACK = ("slack_bolt", "slack_sdk", "aiohttp")
SLACK_LAYER = ("bot.listeners", "bot.notify", "bot.jobs", "bot.app", "bot.payloads")
STORE = ("bot.store", "sqlalchemy", "alembic")

RULES: dict[str, tuple[str, ...]] = {
    # package -> the imports it must not make
    "blocks": (
        *SLACK_LAYER,
        *STORE,
        "bot.services",
        "bot.runtime",
        "bot.crypto",
        "bot.keys",
        "slack_bolt",
        "slack_sdk.web",
        "aiohttp",
        "httpx",
    ),
    "bot/services": (*SLACK, *SLACK_LAYER, "blocks", "bot.runtime"),
    "bot/providers": (*SLACK, *SLACK_LAYER, *STORE, "blocks", "bot.services", "bot.runtime"),
    "bot/stores": (*SLACK, *SLACK_LAYER, *STORE, "blocks", "bot.services", "bot.runtime", "bot.crypto"),
    "bot/store": (*SLACK, *SLACK_LAYER, "blocks", "bot.services", "bot.runtime"),
    "bot/listeners": STORE,
    "bot/notify": STORE,
    "bot/jobs": STORE,
}
ALLOWED_IN_BLOCKS = (
    "blocks",
    "bot.domain",
    "bot.markup",
    "bot.providers.base",
    "bot.ids",
    "slack_sdk.models",
)


def imports_of(path: Path) -> list[tuple[int, str]]:
    """Every module ``path`` imports, absolute, with the line it is imported on."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from bot import ids` imports the module bot.ids.
            package = node.module in ("bot", "blocks")
            found += [
                (node.lineno, f"{node.module}.{a.name}" if package else node.module) for a in node.names
            ]
    return found


def under(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == prefix or module.startswith(prefix + ".") for prefix in prefixes)


def sources(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package", sorted(RULES))
def test_no_layer_imports_what_it_must_not(package: str) -> None:
    crossings = [
        f"{path.relative_to(ROOT)}:{line}: imports {module}"
        for path in sources(package)
        for line, module in imports_of(path)
        if under(module, RULES[package])
    ]
    assert crossings == [], "\n".join(crossings)


def test_every_first_party_import_is_absolute() -> None:
    # The rules above read absolute module names; a relative import would slip past them.
    relative = [
        f"{path.relative_to(ROOT)}:{node.lineno}"
        for package in ("bot", "blocks")
        for path in sources(package)
        for node in ast.walk(ast.parse(path.read_text(), str(path)))
        if isinstance(node, ast.ImportFrom) and node.level > 0
    ]
    assert relative == [], "\n".join(relative)


def test_blocks_import_only_the_domain_the_provider_declarations_and_the_ids() -> None:
    first_party = [
        f"{path.relative_to(ROOT)}:{line}: imports {module}"
        for path in sources("blocks")
        for line, module in imports_of(path)
        if under(module, ("bot", "blocks", "slack_sdk")) and not under(module, ALLOWED_IN_BLOCKS)
    ]
    assert first_party == [], "\n".join(first_party)


def test_importing_every_renderer_loads_no_database_or_slack_client() -> None:
    modules = sorted(f"blocks.{p.stem}" for p in sources("blocks") if p.stem != "__init__")
    probe = (
        f"import {', '.join(modules)}, sys; "
        "print(' '.join(sorted(m for m in ('sqlalchemy', 'slack_bolt', 'aiohttp', 'bot.store', "
        "'bot.services', 'bot.runtime') if m in sys.modules)))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert loaded.stdout.strip() == ""


def test_the_check_sees_a_crossing(tmp_path: Path) -> None:
    # The scan itself must be able to fail: an import inside a function is found too.
    module = tmp_path / "renderer.py"
    module.write_text("def render():\n    from bot.store import Database\n    import sqlalchemy\n")
    found = [name for _, name in imports_of(module)]
    assert found == ["bot.store", "sqlalchemy"]
    assert under("bot.store.models", RULES["blocks"]) and not under("bot.storefront", ("bot.store",))
