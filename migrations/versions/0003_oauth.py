"""codes, refresh tokens, consents, device authorizations

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22 04:27:28.850956
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import identity.models

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "authorization_codes",
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("client_id", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("redirect_uri", sa.Text(), nullable=False),
        sa.Column("scope", sa.Text(), nullable=False),
        sa.Column("audience", sa.JSON(), nullable=False),
        sa.Column("nonce", sa.String(length=512), nullable=True),
        sa.Column("code_challenge", sa.String(length=128), nullable=False),
        sa.Column("code_challenge_method", sa.String(length=10), nullable=False),
        sa.Column("auth_time", identity.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("amr", sa.JSON(), nullable=False),
        sa.Column("session_id", sa.String(length=64), nullable=True),
        sa.Column("created_at", identity.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", identity.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("used_at", identity.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("issued_jtis", sa.JSON(), nullable=False),
        sa.Column("refresh_family_id", sa.Uuid(), nullable=True),
        sa.ForeignKeyConstraint(
            ["client_id"],
            ["clients.client_id"],
            name=op.f("fk_authorization_codes_client_id_clients"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_authorization_codes_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("digest", name=op.f("pk_authorization_codes")),
    )
    with op.batch_alter_table("authorization_codes", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_authorization_codes_expires_at"), ["expires_at"], unique=False
        )

    op.create_table(
        "consents",
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("client_id", sa.String(length=64), nullable=False),
        sa.Column("scope", sa.Text(), nullable=False),
        sa.Column("granted_at", identity.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", identity.models.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["client_id"],
            ["clients.client_id"],
            name=op.f("fk_consents_client_id_clients"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_consents_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("user_id", "client_id", name=op.f("pk_consents")),
    )
    op.create_table(
        "device_authorizations",
        sa.Column("device_code_digest", sa.String(length=64), nullable=False),
        sa.Column("user_code", sa.String(length=16), nullable=False),
        sa.Column("client_id", sa.String(length=64), nullable=False),
        sa.Column("scope", sa.Text(), nullable=False),
        sa.Column("audience", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=True),
        sa.Column("auth_time", identity.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("interval", sa.Integer(), nullable=False),
        sa.Column("last_polled_at", identity.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_at", identity.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", identity.models.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["client_id"],
            ["clients.client_id"],
            name=op.f("fk_device_authorizations_client_id_clients"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_device_authorizations_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("device_code_digest", name=op.f("pk_device_authorizations")),
        sa.UniqueConstraint("user_code", name=op.f("uq_device_authorizations_user_code")),
    )
    op.create_table(
        "refresh_tokens",
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("family_id", sa.Uuid(), nullable=False),
        sa.Column("parent_digest", sa.String(length=64), nullable=True),
        sa.Column("successor_digest", sa.String(length=64), nullable=True),
        sa.Column("client_id", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("scope", sa.Text(), nullable=False),
        sa.Column("audience", sa.JSON(), nullable=False),
        sa.Column("auth_time", identity.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("amr", sa.JSON(), nullable=False),
        sa.Column("session_id", sa.String(length=64), nullable=True),
        sa.Column("created_at", identity.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", identity.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("family_expires_at", identity.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("rotated_at", identity.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", identity.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("access_jti", sa.String(length=64), nullable=True),
        sa.Column("access_expires_at", identity.models.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["client_id"],
            ["clients.client_id"],
            name=op.f("fk_refresh_tokens_client_id_clients"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_refresh_tokens_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("digest", name=op.f("pk_refresh_tokens")),
    )
    with op.batch_alter_table("refresh_tokens", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_refresh_tokens_expires_at"), ["expires_at"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_refresh_tokens_family_id"), ["family_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_refresh_tokens_user_id_client_id"),
            ["user_id", "client_id"],
            unique=False,
        )

    with op.batch_alter_table("clients", schema=None) as batch_op:
        # Existing clients get an empty list and False.
        batch_op.add_column(
            sa.Column("post_logout_redirect_uris", sa.JSON(), nullable=False, server_default="[]")
        )
        batch_op.add_column(
            sa.Column(
                "refresh_without_offline_access",
                sa.Boolean(),
                nullable=False,
                server_default=sa.false(),
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("clients", schema=None) as batch_op:
        batch_op.drop_column("refresh_without_offline_access")
        batch_op.drop_column("post_logout_redirect_uris")

    with op.batch_alter_table("refresh_tokens", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_refresh_tokens_user_id_client_id"))
        batch_op.drop_index(batch_op.f("ix_refresh_tokens_family_id"))
        batch_op.drop_index(batch_op.f("ix_refresh_tokens_expires_at"))

    op.drop_table("refresh_tokens")
    op.drop_table("device_authorizations")
    op.drop_table("consents")
    with op.batch_alter_table("authorization_codes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_authorization_codes_expires_at"))

    op.drop_table("authorization_codes")
