"""Report history (report_runs, report_members) and review decisions (review_marks).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _utc() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    """Create the report history and review tables."""
    op.create_table(
        "report_runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("created_at", _utc(), nullable=False),
        sa.Column("threshold", sa.Float(), nullable=False),
        sa.Column("model_id", sa.String(length=255), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("summary", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_report_runs")),
    )
    op.create_table(
        "report_members",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("cluster_id", sa.String(length=32), nullable=False),
        sa.Column("image_id", sa.Integer(), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("is_keeper", sa.Boolean(), nullable=False),
        sa.Column("tier", sa.String(length=16), nullable=False),
        sa.Column("distance", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"], ["report_runs.id"], name=op.f("fk_report_members_run_id_report_runs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_report_members")),
    )
    op.create_index("ix_report_members_run_cluster", "report_members", ["run_id", "cluster_id"], unique=False)
    op.create_table(
        "review_marks",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("image_a", sa.Integer(), nullable=False),
        sa.Column("image_b", sa.Integer(), nullable=False),
        sa.Column("decision", sa.String(length=16), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("created_at", _utc(), nullable=False),
        sa.CheckConstraint("decision IN ('duplicate', 'not_duplicate')", name=op.f("ck_review_marks_decision")),
        sa.CheckConstraint("image_a < image_b", name=op.f("ck_review_marks_ordered")),
        sa.ForeignKeyConstraint(
            ["image_a"], ["images.id"], name=op.f("fk_review_marks_image_a_images"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["image_b"], ["images.id"], name=op.f("fk_review_marks_image_b_images"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_review_marks")),
        sa.UniqueConstraint("image_a", "image_b", name=op.f("uq_review_marks_image_a_image_b")),
    )
    op.create_index(op.f("ix_review_marks_image_b"), "review_marks", ["image_b"], unique=False)


def downgrade() -> None:
    """Drop the report history and review tables."""
    op.drop_index(op.f("ix_review_marks_image_b"), table_name="review_marks")
    op.drop_table("review_marks")
    op.drop_index("ix_report_members_run_cluster", table_name="report_members")
    op.drop_table("report_members")
    op.drop_table("report_runs")
