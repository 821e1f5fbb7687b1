"""catalogs: models x recipes in one request, and job fingerprints for reuse

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 11:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("fingerprint", sa.String(length=64), nullable=True))
    op.create_index(op.f("ix_jobs_fingerprint"), "jobs", ["fingerprint"], unique=False)
    op.create_table(
        "catalogs",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=True),
        sa.Column("tolerance_pct", sa.Float(), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_catalogs")),
    )
    op.create_index(op.f("ix_catalogs_created_at"), "catalogs", ["created_at"], unique=False)
    op.create_table(
        "catalog_entries",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("catalog_id", sa.String(length=36), nullable=False),
        sa.Column("model_index", sa.Integer(), nullable=False),
        sa.Column("recipe_index", sa.Integer(), nullable=False),
        sa.Column("model_name", sa.String(length=200), nullable=False),
        sa.Column("recipe_name", sa.String(length=200), nullable=False),
        sa.Column("job_id", sa.String(length=36), nullable=False),
        sa.Column("reused", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(["catalog_id"], ["catalogs.id"], name=op.f("fk_catalog_entries_catalog_id_catalogs"),
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name=op.f("fk_catalog_entries_job_id_jobs")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_catalog_entries")),
        sa.UniqueConstraint("catalog_id", "model_index", "recipe_index",
                            name=op.f("uq_catalog_entries_catalog_id")),
    )
    op.create_index(op.f("ix_catalog_entries_catalog_id"), "catalog_entries", ["catalog_id"], unique=False)
    op.create_index(op.f("ix_catalog_entries_job_id"), "catalog_entries", ["job_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_catalog_entries_job_id"), table_name="catalog_entries")
    op.drop_index(op.f("ix_catalog_entries_catalog_id"), table_name="catalog_entries")
    op.drop_table("catalog_entries")
    op.drop_index(op.f("ix_catalogs_created_at"), table_name="catalogs")
    op.drop_table("catalogs")
    op.drop_index(op.f("ix_jobs_fingerprint"), table_name="jobs")
    op.drop_column("jobs", "fingerprint")
