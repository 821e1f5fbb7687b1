"""catalogs.idempotency_key and fingerprint: one catalog per tenant's Idempotency-Key

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30 00:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("catalogs") as batch:  # batch mode: SQLite cannot add a constraint in place
        batch.add_column(sa.Column("fingerprint", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("idempotency_key", sa.String(length=255), nullable=True))
        batch.create_unique_constraint("uq_catalogs_tenant_id_idempotency_key", ["tenant_id", "idempotency_key"])


def downgrade() -> None:
    with op.batch_alter_table("catalogs") as batch:
        batch.drop_constraint("uq_catalogs_tenant_id_idempotency_key", type_="unique")
        batch.drop_column("idempotency_key")
        batch.drop_column("fingerprint")
