"""Input types that accept exactly what the OpenAPI schema promises, nothing looser."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import AwareDatetime, BeforeValidator, StringConstraints


def _iso_8601_only(value: object) -> object:
    # Pydantic would read 0.5 as a Unix timestamp; the schema says `date-time`.
    if isinstance(value, int | float) or (
        isinstance(value, str) and value.replace(".", "", 1).lstrip("-").isdigit()
    ):
        raise ValueError("expected an ISO 8601 date-time, e.g. 2026-01-31T12:00:00Z")
    return value


IsoDatetime = Annotated[datetime, BeforeValidator(_iso_8601_only)]
# The same, but a value without a UTC offset is refused rather than guessed.
AwareIsoDatetime = Annotated[AwareDatetime, BeforeValidator(_iso_8601_only)]

# PostgreSQL text cannot hold NUL; say so in the schema instead of failing at INSERT.
NO_NUL_PATTERN = r"^[^\x00]*$"
DbText = Annotated[str, StringConstraints(pattern=NO_NUL_PATTERN)]
