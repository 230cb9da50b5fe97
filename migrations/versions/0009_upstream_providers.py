"""upstream identity providers and the links of local users to their accounts there

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07 16:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from identity.models import UTCDateTime

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
# The rows that carry a sign-in's amr carry its upstream provider too (the idp claim).
_SIGN_IN_ROWS = (
    "browser_sessions",
    "authorization_codes",
    "refresh_tokens",
    "device_authorizations",
)


def upgrade() -> None:
    op.create_table(
        "upstream_providers",
        sa.Column("name", sa.String(length=40), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("issuer", sa.String(length=500), nullable=False),
        sa.Column("client_id", sa.String(length=255), nullable=False),
        sa.Column("client_secret_sealed", sa.Text(), nullable=False),
        sa.Column("scope", sa.String(length=500), nullable=False),
        sa.Column("label", sa.String(length=100), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("trust_mfa", sa.Boolean(), nullable=False),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_upstream_providers")),
    )
    op.create_table(
        "federated_identities",
        sa.Column("id", _BIG_ID, autoincrement=True, nullable=False),
        sa.Column("provider", sa.String(length=40), nullable=False),
        sa.Column("subject", sa.String(length=255), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_used_at", UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["provider"],
            ["upstream_providers.name"],
            ondelete="CASCADE",
            name=op.f("fk_federated_identities_provider_upstream_providers"),
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            ondelete="CASCADE",
            name=op.f("fk_federated_identities_user_id_users"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_federated_identities")),
        sa.UniqueConstraint(
            "provider", "subject", name=op.f("uq_federated_identities_provider_subject")
        ),
    )
    op.create_index(op.f("ix_federated_identities_user_id"), "federated_identities", ["user_id"])
    for table in _SIGN_IN_ROWS:
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("idp", sa.String(length=40), nullable=True))


def downgrade() -> None:
    for table in _SIGN_IN_ROWS:
        with op.batch_alter_table(table) as batch:
            batch.drop_column("idp")
    op.drop_index(op.f("ix_federated_identities_user_id"), table_name="federated_identities")
    op.drop_table("federated_identities")
    op.drop_table("upstream_providers")
