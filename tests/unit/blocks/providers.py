"""Made-up providers for the block builder tests: blocks must render from a declaration alone."""

from __future__ import annotations

import httpx

from bot.providers.base import FieldValues, FormField, FormSection, Outcome, Probe, Provider

__all__ = ["WAREHOUSE", "AcceptingProvider", "FakeProvider", "Warehouse"]


class AcceptingProvider(Provider):
    """A provider whose form is always valid and whose credentials always work; the block
    builders never call either, so subclasses only declare who they are and their form."""

    def validate(self, values: FieldValues) -> dict[str, str]:
        return {}

    async def probe(self, values: FieldValues, http: httpx.AsyncClient) -> Probe:
        return Probe(Outcome.OK, "fine")


class FakeProvider(AcceptingProvider):
    """Any provider with a one-token form, named by the test."""

    def __init__(self, key: str, title: str, description: str) -> None:
        self.key = key
        self.title = title
        self.description = description
        self.sections = (FormSection("Account", (FormField("token", "Token", "Paste it.", secret=True),)),)


class Warehouse(AcceptingProvider):
    """Secret and plain fields, limits, examples, and an optional section with a description.

    Declared with class attributes so a test can subclass it to change one of them."""

    key = "acme_warehouse"
    title = "Acme Warehouse"
    description = "A warehouse."
    name_examples = ("Production warehouse", "Staging analytics")
    sections: tuple[FormSection, ...] = (
        FormSection(
            title="Account",
            fields=(
                FormField(
                    "account_url",
                    "Account URL",
                    "Your account's address.",
                    "https://x.acme.example",
                    max_length=200,
                ),
                FormField(
                    "api_key", "API Key", "Under Settings → Keys.", "AKIA…", secret=True, max_length=100
                ),
                FormField("api_secret", "API Secret", "Shown once when the key is made.", secret=True),
            ),
        ),
        FormSection(
            title="Advanced (optional)",
            description="Only for private networking & <custom> setups.",
            fields=(
                FormField("notes", "Notes", "Anything your team should know.", optional=True, multiline=True),
            ),
        ),
    )


WAREHOUSE = Warehouse()
