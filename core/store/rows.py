"""Row encoding shared by the query modules: JSON columns, 0/1 booleans, chunked `IN` lists."""

from __future__ import annotations

import json
from typing import Any, Iterator, Sequence

# Chunk size for `IN (...)` lists: far below SQLite's variable limit on any build.
_IN_CHUNK = 500


def _json(value: Any) -> str:
    return json.dumps(value if value is not None else {}, sort_keys=True)


def _as_bool(value: Any) -> bool | None:
    return None if value is None else bool(value)


def _as_int_bool(value: bool | None) -> int | None:
    return None if value is None else int(bool(value))


def _decode(row: dict, *bool_columns: str, json_columns: Sequence[str] = ("meta",)) -> dict:
    for column in bool_columns:
        if column in row:
            row[column] = _as_bool(row[column])
    for column in json_columns:
        if column in row and isinstance(row[column], str):
            row[column] = json.loads(row[column])
    return row


def _chunks(items: Sequence[int], size: int = _IN_CHUNK) -> Iterator[Sequence[int]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
