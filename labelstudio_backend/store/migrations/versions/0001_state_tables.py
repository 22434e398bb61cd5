"""The state tables: projects, annotation records, references, pending events.

Revision ID: 0001
Revises:
"""
import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ntt_projects",
        sa.Column("project_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("generation", sa.BigInteger, nullable=False),
        sa.Column("revision", sa.BigInteger, nullable=False),
        sa.Column("next_seq", sa.BigInteger, nullable=False),
        sa.Column("encoder", sa.Text),
        sa.Column("settings", sa.Text, nullable=False),
        sa.Column("deleted", sa.Text, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    op.create_table(
        "ntt_annotations",
        sa.Column("project_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("key", sa.Text, primary_key=True),
        sa.Column("generation", sa.BigInteger, nullable=False),
        sa.Column("removed", sa.Boolean, nullable=False),
        sa.Column("record", sa.Text),
    )
    op.create_index("ix_ntt_annotations_changes", "ntt_annotations", ["project_id", "generation"])
    op.create_table(
        "ntt_references",
        sa.Column("project_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("ref_id", sa.Text, primary_key=True),
        sa.Column("generation", sa.BigInteger, nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("removed", sa.Boolean, nullable=False),
        sa.Column("negative_image", sa.Boolean, nullable=False),
        sa.Column("entries", sa.Text, nullable=False),
        sa.Column("dim", sa.Integer, nullable=False),
        sa.Column("vectors", sa.LargeBinary, nullable=False),
    )
    op.create_index("ix_ntt_references_changes", "ntt_references", ["project_id", "generation"])
    op.create_table(
        "ntt_pending",
        sa.Column("project_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("token", sa.Text, primary_key=True),
        sa.Column("lock_key", sa.Integer, nullable=False),
        sa.Column("since", sa.Float, nullable=False),
    )


def downgrade() -> None:
    for table in ("ntt_pending", "ntt_references", "ntt_annotations", "ntt_projects"):
        op.drop_table(table)
