"""The metadata every table belongs to. Import each domain's models here for Alembic."""

from sqlmodel import SQLModel

from keel.core.columns import APP_SCHEMA

# Deterministic constraint names, so migrations can refer to them.
SQLModel.metadata.naming_convention = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = SQLModel.metadata

# Every domain's tables, registered on `metadata` for Alembic and the drift test.
from keel.auth import models as auth_models  # noqa: E402
from keel.bulk import models as bulk_models  # noqa: E402
from keel.core.idempotency import models as idempotency_models  # noqa: E402
from keel.documents import models as document_models  # noqa: E402
from keel.insight.pg import models as insight_models  # noqa: E402
from keel.jobs import models as job_models  # noqa: E402
from keel.orgs import models as org_models  # noqa: E402
from keel.posts import models as post_models  # noqa: E402
from keel.search import models as search_models  # noqa: E402
from keel.users import models as user_models  # noqa: E402

__all__ = [
    "APP_SCHEMA",
    "auth_models",
    "bulk_models",
    "document_models",
    "idempotency_models",
    "insight_models",
    "job_models",
    "metadata",
    "org_models",
    "post_models",
    "search_models",
    "user_models",
]
