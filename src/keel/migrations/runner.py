"""Run Alembic programmatically: `keel migrate`, `keel serve` and the tests all come here."""

from __future__ import annotations

from collections.abc import MutableMapping
from pathlib import Path
from typing import Any, Literal

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection

from keel.core.columns import APP_SCHEMA

SCRIPT_LOCATION = Path(__file__).parent

NameKind = Literal[
    "schema",
    "table",
    "column",
    "index",
    "unique_constraint",
    "foreign_key_constraint",
    "check_constraint",
]


def include_name(
    name: str | None, type_: NameKind, parent_names: MutableMapping[Any, str | None]
) -> bool:
    """Compare only Keel's own schema; extensions and other tenants are not ours."""
    if type_ == "schema":
        return name == APP_SCHEMA
    return True


# Shared by env.py and the drift test, so both compare the same way.
COMPARE_OPTIONS: dict[str, Any] = {
    "include_schemas": True,
    "include_name": include_name,
    "compare_type": True,
    "compare_server_default": True,
}


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
