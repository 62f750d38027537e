"""Provider plug-ins: one module per provider, all behind :class:`bot.providers.base.Provider`."""

from bot.providers.base import (
    Check,
    FieldValues,
    FormField,
    FormSection,
    Outcome,
    Probe,
    Provider,
    Verification,
)

__all__ = [
    "Check",
    "FieldValues",
    "FormField",
    "FormSection",
    "Outcome",
    "Probe",
    "Provider",
    "Verification",
]
