"""Column helpers shared by every domain's models."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Column, DateTime, ForeignKey, text

APP_SCHEMA = "app"  # the schema every Keel table lives in


def created_at_column() -> Any:
    return Column(DateTime(timezone=True), nullable=False, server_default=text("now()"))


def updated_at_column() -> Any:
    """Maintained by the `app.set_updated_at()` trigger, not by the application."""
    return Column(DateTime(timezone=True), nullable=False, server_default=text("now()"))


def optional_timestamp_column() -> Any:
    return Column(DateTime(timezone=True), nullable=True)


def tenant_column() -> Any:
    """`tenant_id`: the organization owning the row, first column of its primary key."""
    return Column(
        ForeignKey("app.organizations.id", ondelete="CASCADE"), primary_key=True, nullable=False
    )
