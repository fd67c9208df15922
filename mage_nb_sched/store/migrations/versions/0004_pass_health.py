"""Scheduler health: rows a step skipped (``scheduler_problem``), partial indexes of live runs.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# ``mage_nb_sched.store.schema.UNFINISHED_RUNS_WHERE`` / ``UNFINALIZED_RUNS_WHERE`` as of this
# revision (a migration never imports the package's schema: it describes the newest one).
UNFINISHED = "status IN ('initial', 'running')"
UNFINALIZED = "finalized_at IS NULL"


def upgrade() -> None:
    op.create_table(
        "scheduler_problem",
        sa.Column("step", sa.String(length=32), nullable=False),
        sa.Column("row_kind", sa.String(length=16), nullable=False),
        sa.Column("row_id", sa.Integer(), nullable=False),
        sa.Column("schedule_id", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("first_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("retry_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("step", "row_kind", "row_id"),
    )
    # Plain CREATE INDEX (no table rebuild); partial indexes work on SQLite and PostgreSQL.
    for name, columns, where in (
        ("ix_pipeline_run_unfinished", ["status", "owner"], UNFINISHED),
        ("ix_pipeline_run_schedule_unfinished", ["pipeline_schedule_id", "status"], UNFINISHED),
        ("ix_pipeline_run_unfinalized", ["status"], UNFINALIZED),
    ):
        op.create_index(
            name,
            "pipeline_run",
            columns,
            unique=False,
            sqlite_where=sa.text(where),
            postgresql_where=sa.text(where),
        )


def downgrade() -> None:
    for name in (
        "ix_pipeline_run_unfinalized",
        "ix_pipeline_run_schedule_unfinished",
        "ix_pipeline_run_unfinished",
    ):
        op.drop_index(name, table_name="pipeline_run")
    op.drop_table("scheduler_problem")
