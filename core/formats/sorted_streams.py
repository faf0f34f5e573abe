"""Merging row streams that are sorted by the same key, in one pass (a merge join in Python).

The exports read each table as one query ordered by trajectory (core.store.export) instead of
one query per trajectory; this puts a trajectory's rows from every stream back together while
holding only that trajectory's rows.
"""

from __future__ import annotations

from itertools import groupby, islice
from typing import Any, Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")
Key = Callable[[Any], Any]


class SortedGroups:
    """A stream sorted by `key`, read one key's rows at a time (`take`, with ascending keys)."""

    def __init__(self, rows: Iterable, key: Key) -> None:
        self._groups = groupby(rows, key)
        self._next = next(self._groups, None)

    def take(self, key: Any) -> list:
        """The rows with this key ([] if none); rows of smaller keys are passed over (their
        driving row was filtered out)."""
        while self._next is not None and self._next[0] < key:
            self._next = next(self._groups, None)
        if self._next is None or self._next[0] != key:
            return []
        rows = list(self._next[1])
        self._next = next(self._groups, None)
        return rows


def join_sorted(driver: Iterable[T], key: Key, *streams: tuple[Iterable, Key]) -> Iterator[tuple]:
    """(driving row, its rows of each stream, ...) for each row of `driver`; `driver` and each
    (rows, key) stream ascend by key, and the driver's keys are unique."""
    groups = [SortedGroups(rows, stream_key) for rows, stream_key in streams]
    for row in driver:
        k = key(row)
        yield (row, *(group.take(k) for group in groups))


def chunked(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Lists of up to `size` items in order (itertools.batched from Python 3.12 on)."""
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk
