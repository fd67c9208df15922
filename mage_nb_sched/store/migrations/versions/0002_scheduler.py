"""Scheduler state: when each schedule is next due, run ownership and leases.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

# ``mage_nb_sched.models.EVALUATE_NOW`` as stored (a migration never imports the package's
# models: they describe the newest schema, not this revision's). SQLite keeps naive UTC text.
EVALUATE_NOW = {"sqlite": "1970-01-01 00:00:00.000000"}
EVALUATE_NOW_OTHER = "1970-01-01 00:00:00+00:00"


def upgrade() -> None:
    epoch = EVALUATE_NOW.get(op.get_bind().dialect.name, EVALUATE_NOW_OTHER)
    # Plain ADD COLUMN / CREATE INDEX (no table rebuild): SQLite supports both natively.
    op.add_column(
        "pipeline_schedule",
        sa.Column(
            "next_due_at",
            sa.DateTime(timezone=True),
            nullable=False,
            server_default=sa.text(f"'{epoch}'"),
        ),
    )
    op.create_index(
        "ix_pipeline_schedule_due",
        "pipeline_schedule",
        ["status", "schedule_type", "next_due_at"],
        unique=False,
    )
    op.add_column("pipeline_run", sa.Column("owner", sa.String(length=128), nullable=True))
    op.add_column("pipeline_run", sa.Column("claim_token", sa.String(length=32), nullable=True))
    op.add_column(
        "pipeline_run", sa.Column("finalized_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.add_column(
        "pipeline_run",
        sa.Column("attempts", sa.Integer(), nullable=False, server_default=sa.text("0")),
    )
    op.create_index(
        "ix_pipeline_run_status_owner", "pipeline_run", ["status", "owner"], unique=False
    )
    op.create_index(
        "ix_pipeline_run_finalized_status",
        "pipeline_run",
        ["finalized_at", "status"],
        unique=False,
    )
    # Runs that finished before the upgrade were never seen by a scheduler: treat them as
    # handled, so the first pass does not send a notification for every old failure.
    op.execute(
        "UPDATE pipeline_run SET finalized_at = COALESCE(completed_at, updated_at) "
        "WHERE status IN ('completed', 'failed', 'cancelled')"
    )
    op.create_table(
        "scheduler_lease",
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("owner", sa.String(length=128), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("details", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("name"),
    )


def downgrade() -> None:
    op.drop_table("scheduler_lease")
    with op.batch_alter_table("pipeline_run", schema=None) as batch_op:
        batch_op.drop_index("ix_pipeline_run_finalized_status")
        batch_op.drop_index("ix_pipeline_run_status_owner")
        batch_op.drop_column("attempts")
        batch_op.drop_column("finalized_at")
        batch_op.drop_column("claim_token")
        batch_op.drop_column("owner")
    with op.batch_alter_table("pipeline_schedule", schema=None) as batch_op:
        batch_op.drop_index("ix_pipeline_schedule_due")
        batch_op.drop_column("next_due_at")
