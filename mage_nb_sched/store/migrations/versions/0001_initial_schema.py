"""Initial schema: schedules, runs, block runs, backfills, event matchers.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "event_matcher",
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("event_type", sa.String(length=255), nullable=False),
        sa.Column("pattern", sa.JSON(), nullable=True),
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    with op.batch_alter_table("event_matcher", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_event_matcher_event_type"), ["event_type"], unique=False
        )

    op.create_table(
        "pipeline_schedule",
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("pipeline_uuid", sa.String(length=255), nullable=False),
        sa.Column("schedule_type", sa.String(length=32), nullable=False),
        sa.Column("schedule_interval", sa.String(length=100), nullable=True),
        sa.Column("start_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("last_enabled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("variables", sa.JSON(), nullable=True),
        sa.Column("sla", sa.Integer(), nullable=True),
        sa.Column("settings", sa.JSON(), nullable=True),
        sa.Column("token_hash", sa.String(length=128), nullable=True),
        sa.Column("token_hint", sa.String(length=16), nullable=True),
        sa.Column("in_code", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("pipeline_schedule", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_pipeline_schedule_pipeline_uuid"), ["pipeline_uuid"], unique=False
        )
        batch_op.create_index(
            "ix_pipeline_schedule_status_type", ["status", "schedule_type"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_pipeline_schedule_token_hash"), ["token_hash"], unique=False
        )
        batch_op.create_index(
            "uq_pipeline_schedule_pipeline_name", ["pipeline_uuid", "name"], unique=True
        )

    op.create_table(
        "backfill",
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("pipeline_uuid", sa.String(length=255), nullable=False),
        sa.Column("pipeline_schedule_id", sa.Integer(), nullable=True),
        sa.Column("start_datetime", sa.DateTime(timezone=True), nullable=False),
        sa.Column("end_datetime", sa.DateTime(timezone=True), nullable=False),
        sa.Column("interval_type", sa.String(length=32), nullable=False),
        sa.Column("interval_units", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("failed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("variables", sa.JSON(), nullable=True),
        sa.Column("settings", sa.JSON(), nullable=True),
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["pipeline_schedule_id"], ["pipeline_schedule.id"], ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("backfill", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_backfill_pipeline_schedule_id"), ["pipeline_schedule_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_backfill_pipeline_uuid"), ["pipeline_uuid"], unique=False
        )

    op.create_table(
        "pipeline_schedule_event_matcher_association",
        sa.Column("pipeline_schedule_id", sa.Integer(), nullable=False),
        sa.Column("event_matcher_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["event_matcher_id"], ["event_matcher.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(
            ["pipeline_schedule_id"], ["pipeline_schedule.id"], ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("pipeline_schedule_id", "event_matcher_id"),
    )
    op.create_table(
        "pipeline_run",
        sa.Column("pipeline_schedule_id", sa.Integer(), nullable=True),
        sa.Column("pipeline_uuid", sa.String(length=255), nullable=False),
        sa.Column("execution_date", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("variables", sa.JSON(), nullable=True),
        sa.Column("event_variables", sa.JSON(), nullable=True),
        sa.Column("metrics", sa.JSON(), nullable=True),
        sa.Column("backfill_id", sa.Integer(), nullable=True),
        sa.Column("sla_breached", sa.Boolean(), nullable=False),
        sa.Column("run_key", sa.String(length=255), nullable=False),
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["backfill_id"], ["backfill.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(
            ["pipeline_schedule_id"], ["pipeline_schedule.id"], ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("run_key"),
    )
    with op.batch_alter_table("pipeline_run", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_pipeline_run_backfill_id"), ["backfill_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_pipeline_run_execution_date"), ["execution_date"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_pipeline_run_pipeline_schedule_id"),
            ["pipeline_schedule_id"],
            unique=False,
        )
        batch_op.create_index(
            batch_op.f("ix_pipeline_run_pipeline_uuid"), ["pipeline_uuid"], unique=False
        )
        batch_op.create_index(
            "ix_pipeline_run_schedule_execution_date",
            ["pipeline_schedule_id", "execution_date"],
            unique=False,
        )
        batch_op.create_index(
            "ix_pipeline_run_status_created", ["status", "created_at"], unique=False
        )

    op.create_table(
        "block_run",
        sa.Column("pipeline_run_id", sa.Integer(), nullable=False),
        sa.Column("block_uuid", sa.String(length=255), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("metrics", sa.JSON(), nullable=True),
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["pipeline_run_id"], ["pipeline_run.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("block_run", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_block_run_pipeline_run_id"), ["pipeline_run_id"], unique=False
        )
        batch_op.create_index(
            "ix_block_run_run_block", ["pipeline_run_id", "block_uuid"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("block_run", schema=None) as batch_op:
        batch_op.drop_index("ix_block_run_run_block")
        batch_op.drop_index(batch_op.f("ix_block_run_pipeline_run_id"))

    op.drop_table("block_run")
    with op.batch_alter_table("pipeline_run", schema=None) as batch_op:
        batch_op.drop_index("ix_pipeline_run_status_created")
        batch_op.drop_index("ix_pipeline_run_schedule_execution_date")
        batch_op.drop_index(batch_op.f("ix_pipeline_run_pipeline_uuid"))
        batch_op.drop_index(batch_op.f("ix_pipeline_run_pipeline_schedule_id"))
        batch_op.drop_index(batch_op.f("ix_pipeline_run_execution_date"))
        batch_op.drop_index(batch_op.f("ix_pipeline_run_backfill_id"))

    op.drop_table("pipeline_run")
    op.drop_table("pipeline_schedule_event_matcher_association")
    with op.batch_alter_table("backfill", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_backfill_pipeline_uuid"))
        batch_op.drop_index(batch_op.f("ix_backfill_pipeline_schedule_id"))

    op.drop_table("backfill")
    with op.batch_alter_table("pipeline_schedule", schema=None) as batch_op:
        batch_op.drop_index("uq_pipeline_schedule_pipeline_name")
        batch_op.drop_index(batch_op.f("ix_pipeline_schedule_token_hash"))
        batch_op.drop_index("ix_pipeline_schedule_status_type")
        batch_op.drop_index(batch_op.f("ix_pipeline_schedule_pipeline_uuid"))

    op.drop_table("pipeline_schedule")
    with op.batch_alter_table("event_matcher", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_event_matcher_event_type"))

    op.drop_table("event_matcher")
