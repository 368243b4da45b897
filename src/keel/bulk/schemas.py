"""Import rows, options and reports. Rows reuse the API's own field rules."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal
from uuid import UUID

import orjson
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    EmailStr,
    Field,
    StrictBool,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_validator,
)

from keel.core.json_depth import JsonDepthGauge
from keel.core.passwords import PasswordHasher
from keel.core.types import AwareIsoDatetime
from keel.posts.schemas import Content, Title
from keel.users.schemas import MAX_METADATA_KEYS, FullName, Password, Username


class OnConflict(StrEnum):
    SKIP = "skip"  # keep the stored row, count the imported one as skipped
    UPDATE = "update"  # overwrite the stored row with the imported one
    ERROR = "error"  # reject the imported row


class ImportStrategy(StrEnum):
    """How checked post rows land (setting IMPORT_STRATEGY); the reports are the same."""

    AUTO = "auto"  # upsert when the `citus` extension is installed, else merge
    MERGE = "merge"  # MERGE ... RETURNING merge_action()
    UPSERT = "upsert"  # INSERT ... ON CONFLICT ... RETURNING (xmax = 0): works on Citus


class Kind(StrEnum):
    USERS = "users"
    POSTS = "posts"


def text_cells(max_json_depth: int) -> dict[str, Any]:
    """The validation context for CSV, where every cell is text (JSON ones nest at most so)."""
    return {"text_cells": True, "max_json_depth": max_json_depth}


def _from_text(info: ValidationInfo) -> bool:
    return bool(info.context and info.context.get("text_cells"))


def _csv_json(value: object, info: ValidationInfo) -> object:
    # A CSV metadata cell holds a JSON object; JSON input must send the object itself.
    if isinstance(value, str) and _from_text(info):
        max_depth = (info.context or {})["max_json_depth"]
        if JsonDepthGauge(max_depth).too_deep(value.encode()):
            raise ValueError(f"JSON nested deeper than {max_depth} levels")
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:
            raise ValueError("expected a JSON object") from None
    return value


def _csv_bool(value: object, info: ValidationInfo) -> object:
    if isinstance(value, str) and _from_text(info):
        lowered = value.strip().lower()
        if lowered in {"true", "t", "yes", "1"}:
            return True
        if lowered in {"false", "f", "no", "0"}:
            return False
    return value


Flag = Annotated[StrictBool, BeforeValidator(_csv_bool)]
Metadata = Annotated[
    dict[str, Any], BeforeValidator(_csv_json), Field(max_length=MAX_METADATA_KEYS)
]
AuthorName = Annotated[str, StringConstraints(min_length=1, max_length=320)]


class UserImportRow(BaseModel):
    """One account: a plain `password` (hashed on import) or a `hashed_password`."""

    model_config = ConfigDict(extra="forbid")

    email: EmailStr
    username: Username
    full_name: FullName | None = None
    password: Password | None = None
    hashed_password: str | None = Field(
        default=None, description="argon2id/argon2i (v19) or bcrypt ($2a$/$2b$/$2y$)."
    )
    is_active: Flag = True
    is_verified: Flag = False
    is_superuser: Flag = False
    metadata: Metadata = Field(default_factory=dict)
    created_at: AwareIsoDatetime | None = None

    @field_validator("hashed_password")
    @classmethod
    def _supported_hash(cls, value: str | None) -> str | None:
        if value is not None and not PasswordHasher.is_supported_hash(value):
            raise ValueError("not a supported argon2 or bcrypt hash")
        return value

    @model_validator(mode="after")
    def _one_secret(self) -> UserImportRow:
        if (self.password is None) == (self.hashed_password is None):
            raise ValueError("give exactly one of password or hashed_password")
        return self


class PostImportRow(BaseModel):
    """One post. Its author is named by exactly one of id, username or email."""

    model_config = ConfigDict(extra="forbid")

    id: UUID | None = Field(default=None, description="Omit to create a new post.")
    title: Title
    content: Content = ""
    is_published: Flag = False
    author_id: UUID | None = None
    author_username: AuthorName | None = None
    author_email: AuthorName | None = None
    created_at: AwareIsoDatetime | None = None

    @model_validator(mode="after")
    def _one_author(self) -> PostImportRow:
        named = [self.author_id, self.author_username, self.author_email]
        if sum(value is not None for value in named) != 1:
            raise ValueError("give exactly one of author_id, author_username or author_email")
        return self


ROW_MODELS: dict[Kind, type[BaseModel]] = {
    Kind.USERS: UserImportRow,
    Kind.POSTS: PostImportRow,
}


class Rejection(BaseModel):
    """A row that was not imported. `line` for CSV and NDJSON, `index` for a JSON array."""

    line: int | None = None
    index: int | None = None
    field: str | None = None
    reason: str


class ImportReport(BaseModel):
    import_id: UUID | None = Field(
        None, description="The import's record (`GET .../imports/{import_id}`); none for users."
    )
    kind: Kind
    format: Literal["json", "ndjson", "csv", "json_table"]
    on_conflict: OnConflict
    atomic: bool
    rows: int = Field(description="Rows read from the input.")
    inserted: int = 0
    updated: int = 0
    unchanged: int = Field(0, description="Matched with on_conflict=update, already identical.")
    skipped: int = Field(0, description="Matched a stored row with on_conflict=skip.")
    rejected_count: int = 0
    rejected: list[Rejection] = Field(
        default_factory=list, description="The first rejected rows (see rejected_truncated)."
    )
    rejected_truncated: bool = False
    committed: bool = Field(description="False when atomic=true and any row was rejected.")


ImportStatus = Literal["committed", "rejected"]


class ImportRecordPublic(BaseModel):
    """One import of the organization's data: who ran it, how, and what it did."""

    model_config = ConfigDict(from_attributes=True)

    id: UUID
    actor_id: UUID | None = Field(description="Who ran it; null for `keel import`.")
    kind: Kind
    format: str
    on_conflict: OnConflict
    atomic: bool
    strategy: str = Field(description="merge or upsert (IMPORT_STRATEGY).")
    status: ImportStatus = Field(description="rejected: atomic with rejected rows, rolled back.")
    rows: int
    inserted: int
    updated: int
    unchanged: int
    skipped: int
    rejected_count: int
    created_at: datetime
    finished_at: datetime


class ImportRecordDetail(ImportRecordPublic):
    rejected: list[Rejection] = Field(description="The first rejected rows.")
    rejected_truncated: bool


class ImportPage(BaseModel):
    items: list[ImportRecordPublic]
    next: UUID | None = Field(description="Pass as `before` for the next (older) page.")


JsonPath = Annotated[str, StringConstraints(min_length=1, max_length=1_000, pattern=r"^[^\x00]*$")]
PostColumn = Literal[
    "id",
    "title",
    "content",
    "is_published",
    "author_id",
    "author_username",
    "author_email",
    "created_at",
]


class JsonTableImport(BaseModel):
    """Shred `document` with SQL/JSON paths: `rows` selects the items, `columns` maps fields."""

    model_config = ConfigDict(extra="forbid")

    document: dict[str, Any] | list[Any]
    rows: JsonPath = Field(description="Path to the items, e.g. `$.data.items[*]`.")
    columns: dict[PostColumn, JsonPath] = Field(
        description='Post column → path inside each item, e.g. {"title": "$.headline"}.'
    )

    @model_validator(mode="after")
    def _required_columns(self) -> JsonTableImport:
        if "title" not in self.columns:
            raise ValueError("columns must map title")
        authors = {"author_id", "author_username", "author_email"} & self.columns.keys()
        if len(authors) != 1:
            raise ValueError(
                "columns must map exactly one of author_id, author_username, author_email"
            )
        return self
