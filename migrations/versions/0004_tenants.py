"""tenants and hashed API keys; jobs and catalogs belong to a tenant; Idempotency-Keys are unique per tenant

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29 23:00:00
"""

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DEFAULT_TENANT_ID = "00000000-0000-0000-0000-000000000000"


def upgrade() -> None:
    tenants = op.create_table(
        "tenants",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tenants")),
        sa.UniqueConstraint("name", name=op.f("uq_tenants_name")),
    )
    # Rows made before tenants existed, and every row of a deployment without API keys, belong to it.
    op.bulk_insert(tenants, [{"id": DEFAULT_TENANT_ID, "name": "default", "created_at": datetime.now(UTC)}])
    op.create_table(
        "api_keys",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("tenant_id", sa.String(length=36), nullable=False),
        sa.Column("prefix", sa.String(length=16), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("label", sa.String(length=200), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], name=op.f("fk_api_keys_tenant_id_tenants"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("prefix", name=op.f("uq_api_keys_prefix")),
    )
    op.create_index(op.f("ix_api_keys_tenant_id"), "api_keys", ["tenant_id"], unique=False)
    with op.batch_alter_table("jobs") as batch:  # batch mode: SQLite cannot add constraints in place
        batch.add_column(sa.Column("tenant_id", sa.String(length=36), nullable=False,
                                   server_default=DEFAULT_TENANT_ID))
        batch.create_foreign_key(op.f("fk_jobs_tenant_id_tenants"), "tenants", ["tenant_id"], ["id"])
        batch.drop_constraint(op.f("uq_jobs_idempotency_key"), type_="unique")
        batch.create_unique_constraint("uq_jobs_tenant_id_idempotency_key", ["tenant_id", "idempotency_key"])
        batch.create_index("ix_jobs_tenant_id_created_at", ["tenant_id", "created_at"])
    with op.batch_alter_table("catalogs") as batch:
        batch.add_column(sa.Column("tenant_id", sa.String(length=36), nullable=False,
                                   server_default=DEFAULT_TENANT_ID))
        batch.create_foreign_key(op.f("fk_catalogs_tenant_id_tenants"), "tenants", ["tenant_id"], ["id"])
        batch.create_index("ix_catalogs_tenant_id_created_at", ["tenant_id", "created_at"])


def downgrade() -> None:
    with op.batch_alter_table("catalogs") as batch:
        batch.drop_index("ix_catalogs_tenant_id_created_at")
        batch.drop_constraint(op.f("fk_catalogs_tenant_id_tenants"), type_="foreignkey")
        batch.drop_column("tenant_id")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_index("ix_jobs_tenant_id_created_at")
        batch.drop_constraint("uq_jobs_tenant_id_idempotency_key", type_="unique")
        batch.create_unique_constraint(op.f("uq_jobs_idempotency_key"), ["idempotency_key"])
        batch.drop_constraint(op.f("fk_jobs_tenant_id_tenants"), type_="foreignkey")
        batch.drop_column("tenant_id")
    op.drop_index(op.f("ix_api_keys_tenant_id"), table_name="api_keys")
    op.drop_table("api_keys")
    op.drop_table("tenants")
