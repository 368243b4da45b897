"""Alembic revisions: frozen history, never importing the live models."""
