"""Run Alembic programmatically: `keel migrate`, `keel serve` and the tests all come here."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection

SCRIPT_LOCATION = Path(__file__).parent


def alembic_config(url: str) -> Config:
    """An Alembic config for `url`, with no alembic.ini needed."""
    config = Config()
    config.set_main_option("script_location", str(SCRIPT_LOCATION))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str, revision: str = "head") -> None:
    """Apply migrations up to `revision`. Safe to run from several processes at once."""
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str) -> None:
    command.downgrade(alembic_config(url), revision)


def create_revision(url: str, message: str, *, autogenerate: bool) -> None:
    command.revision(alembic_config(url), message=message, autogenerate=autogenerate)


def head_revision() -> str | None:
    return ScriptDirectory(str(SCRIPT_LOCATION)).get_current_head()


def database_revision(connection: Connection) -> str | None:
    """The revision stored in the database (sync; use through `run_sync`)."""
    return MigrationContext.configure(connection).get_current_revision()
