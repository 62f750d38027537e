"""A provider is one module plus its tests: no other code of the bot names one.

Listeners, services, blocks, the store and the rest work from the provider's declaration (form,
checks, hints) and its key as data. This test reads the source of every module outside the
providers' own and fails on any provider's key, title or module name, so provider-specific code
cannot creep into shared layers unnoticed.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bot.providers.registry import PROVIDERS

ROOT = Path(__file__).resolve().parents[2]
SHARED = [*sorted((ROOT / "bot").rglob("*.py")), *sorted((ROOT / "blocks").rglob("*.py"))]


def _names(provider: type) -> tuple[str, list[str]]:
    module = provider.__module__.rsplit(".", 1)[-1]
    stem = module.lstrip("_").split("_")[0]
    instance_key = provider.key
    title = provider.title
    return stem, sorted({stem, instance_key, title, instance_key.replace("_", " ")}, key=len, reverse=True)


def _own(path: Path, stem: str) -> bool:
    """The provider's own modules (``bot/providers/<stem>…`` and ``_<stem>…``) and the registry."""
    relative = path.relative_to(ROOT).as_posix()
    if relative == "bot/providers/registry.py":
        return True
    return relative.startswith((f"bot/providers/{stem}", f"bot/providers/_{stem}"))


@pytest.mark.parametrize("provider", PROVIDERS, ids=lambda p: p.__name__)
def test_no_shared_module_names_a_provider(provider: type) -> None:
    stem, names = _names(provider)
    pattern = re.compile("|".join(re.escape(n) for n in names), re.IGNORECASE)
    found = []
    for path in SHARED:
        if _own(path, stem):
            continue
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if pattern.search(line):
                found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert found == [], "provider-specific text outside the provider's module:\n" + "\n".join(found)


def test_the_check_sees_a_provider_name_where_it_should_not_be(tmp_path: Path) -> None:
    # The scan itself must be able to fail: a shared module mentioning a provider is caught.
    stem, names = _names(PROVIDERS[0])
    pattern = re.compile("|".join(re.escape(n) for n in names), re.IGNORECASE)
    assert pattern.search(f"# special case for {names[-1]} here")
    assert not _own(ROOT / "bot" / "listeners" / "views.py", stem)
    assert _own(ROOT / "bot" / "providers" / f"{stem}_anything.py", stem)
