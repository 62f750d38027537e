"""Snowflake access tokens: replace the stored hints that showed 8 characters of the token

Revision ID: f1a3c5e7b9d2
Revises: c8e0f2a4b6d1
Create Date: 2026-11-29 09:00:00

A programmatic access token's hint was its first and last 4 characters, part of the secret
itself, shown to every member. New hints say "access token"; this rewrites the stored ones on
connections and on rotations of Snowflake connections. A key pair's hint is the public key's
fingerprint (SHA256:…), which reveals nothing, and is kept.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "f1a3c5e7b9d2"
down_revision: str | Sequence[str] | None = "c8e0f2a4b6d1"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Must equal bot.providers.snowflake.TOKEN_HINT; copied, as a migration must not change with the code.
TOKEN_HINT = "access token"
TOKEN_HINTS = f"key_hint IS NOT NULL AND key_hint NOT LIKE 'SHA256:%' AND key_hint <> '{TOKEN_HINT}'"


def upgrade() -> None:
    op.execute(
        f"UPDATE connections SET key_hint = '{TOKEN_HINT}' WHERE provider = 'snowflake' AND {TOKEN_HINTS}"
    )
    op.execute(
        f"UPDATE rotations SET key_hint = '{TOKEN_HINT}' WHERE {TOKEN_HINTS} AND connection_id IN "
        "(SELECT id FROM connections WHERE provider = 'snowflake')"
    )


def downgrade() -> None:
    """Nothing to undo: the old hints are gone, and the new ones read well with the older code."""
