"""verification codes carry their signup attempt's password; wrong tries move to the limiter

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("verification_challenges") as batch:
        batch.add_column(sa.Column("password_hash", sa.String(length=255), nullable=True))
        batch.add_column(sa.Column("name", sa.String(length=200), nullable=True))
        # Wrong codes are counted per address and client IP in the named limiters now.
        batch.drop_column("attempts")
    # A code mailed before this revision belongs to the attempt whose password the account
    # holds (a repeated signup used to overwrite it): it keeps that password, instead of
    # turning into a code that proves the mailbox only.
    op.execute(
        "UPDATE verification_challenges SET "
        "password_hash = (SELECT users.password_hash FROM users "
        "WHERE users.id = verification_challenges.user_id), "
        "name = (SELECT users.name FROM users WHERE users.id = verification_challenges.user_id)"
    )
    with op.batch_alter_table("users") as batch:
        batch.add_column(
            sa.Column("signup_attempts", sa.Integer(), nullable=False, server_default="0")
        )


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.drop_column("signup_attempts")
    with op.batch_alter_table("verification_challenges") as batch:
        batch.add_column(sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"))
        batch.drop_column("name")
        batch.drop_column("password_hash")
