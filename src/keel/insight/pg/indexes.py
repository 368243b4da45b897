"""Index advice from the catalog rows of `sql_objects.INDEXES`: pure functions, no SQL."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

Row = dict[str, Any]

_SAME_DEFINITION = (
    "table_oid", "key", "key_columns", "opclasses", "collations", "options",
    "expressions", "predicate", "method",
)  # fmt: skip


def _public(row: Row) -> Row:
    return {k: row[k] for k in ("index", "table", "bytes", "scans", "definition")}


def _keeps_a_promise(row: Row) -> bool:
    """Unique, primary, exclusion or backing a constraint: dropping it changes behaviour."""
    return bool(row["is_unique"] or row["is_primary"] or row["is_exclusion"]) or bool(
        row["backs_constraint"]
    )


def invalid(indexes: list[Row]) -> list[Row]:
    return [_public(row) for row in indexes if not row["is_valid"]]


def unused(indexes: list[Row]) -> list[Row]:
    """Valid indexes never scanned since the statistics reset, that enforce nothing."""
    return [
        _public(row)
        for row in indexes
        if row["is_valid"] and row["scans"] == 0 and not _keeps_a_promise(row)
    ]


def duplicate(indexes: list[Row]) -> list[Row]:
    """Indexes with the same table, columns, operator classes, expressions and predicate."""
    groups: dict[tuple[Any, ...], list[Row]] = defaultdict(list)
    for row in indexes:
        if row["is_valid"]:
            groups[tuple(row[k] for k in _SAME_DEFINITION)].append(row)
    found = []
    for group in groups.values():
        if len(group) < 2:
            continue
        # Keep the one that enforces something (or the first by name); the rest can go.
        keep = sorted(group, key=lambda r: (not _keeps_a_promise(r), r["index"]))[0]
        for row in group:
            if row is not keep and not _keeps_a_promise(row):
                found.append({**_public(row), "same_as": keep["index"]})
    return sorted(found, key=lambda r: r["index"])


def _key(row: Row) -> list[str]:
    return str(row["key"]).split()[: int(row["key_columns"])]


def redundant(indexes: list[Row]) -> list[Row]:
    """B-tree indexes whose key columns are a strict prefix of another's on the same table."""
    plain = [
        row
        for row in indexes
        if row["is_valid"] and row["method"] == "btree"
        and not row["expressions"] and not row["predicate"]
    ]  # fmt: skip
    found = []
    for row in plain:
        if _keeps_a_promise(row):
            continue
        key, classes = _key(row), str(row["opclasses"]).split()
        for other in plain:
            other_key = _key(other)
            if (
                other is not row
                and other["table_oid"] == row["table_oid"]
                and len(other_key) > len(key)
                and other_key[: len(key)] == key
                and str(other["opclasses"]).split()[: len(key)] == classes[: len(key)]
            ):
                found.append({**_public(row), "covered_by": other["index"]})
                break
    return found
