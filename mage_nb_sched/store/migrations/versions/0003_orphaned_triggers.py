"""Schedules whose triggers.yaml disappeared are kept (orphaned), not deleted.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A plain ADD COLUMN (no table rebuild), nullable: existing rows are not orphaned.
    op.add_column(
        "pipeline_schedule",
        sa.Column("orphaned_at", sa.DateTime(timezone=True), nullable=True),
    )


def downgrade() -> None:
    with op.batch_alter_table("pipeline_schedule") as batch:
        batch.drop_column("orphaned_at")
