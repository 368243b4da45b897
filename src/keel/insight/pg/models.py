"""Insight's own tables: periodic snapshots of query statistics and relation sizes."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Column, DateTime, Double, Index, Text
from sqlmodel import Field, SQLModel


class QuerySnapshot(SQLModel, table=True):
    """pg_stat_statements counters of one statement (summed over roles) at one instant."""

    __tablename__ = "insight_query_snapshots"
    __table_args__ = (
        Index("ix_insight_query_snapshots_queryid_captured_at", "queryid", "captured_at"),
        {"schema": "app"},
    )

    captured_at: datetime = Field(
        sa_column=Column(DateTime(timezone=True), primary_key=True, nullable=False)
    )
    queryid: int = Field(sa_column=Column(BigInteger, primary_key=True, nullable=False))
    calls: int = Field(sa_column=Column(BigInteger, nullable=False))
    total_ms: float = Field(sa_column=Column(Double, nullable=False))
    rows: int = Field(sa_column=Column(BigInteger, nullable=False))
    query: str = Field(sa_column=Column(Text, nullable=False))


class SpaceSnapshot(SQLModel, table=True):
    """The size of the database ('' relation) or of one table with its indexes and TOAST."""

    __tablename__ = "insight_space_snapshots"
    __table_args__ = (
        Index("ix_insight_space_snapshots_relation_captured_at", "relation", "captured_at"),
        {"schema": "app"},
    )

    captured_at: datetime = Field(
        sa_column=Column(DateTime(timezone=True), primary_key=True, nullable=False)
    )
    relation: str = Field(sa_column=Column(Text, primary_key=True, nullable=False))
    total_bytes: int = Field(sa_column=Column(BigInteger, nullable=False))
