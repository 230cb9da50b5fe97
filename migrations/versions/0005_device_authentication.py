"""device authorizations remember how the approving person signed in (amr, browser session)

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("device_authorizations") as batch:
        # Rows approved before this revision have no amr: an empty list, as the model's
        # default (the device grant then falls back to "pwd").
        batch.add_column(sa.Column("amr", sa.JSON(), nullable=False, server_default="[]"))
        batch.add_column(sa.Column("session_id", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("device_authorizations") as batch:
        batch.drop_column("session_id")
        batch.drop_column("amr")
