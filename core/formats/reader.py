"""Stream JSON records out of a file, each with the line it starts on.

Three layouts are accepted, told apart by the file's first record:
- JSON lines: one object per line (the first non-blank line is a complete JSON value);
- concatenated JSON objects, pretty-printed over many lines (as some PRM800K copies are);
- one JSON array of objects (as ProcessBench's release files are).

The file is read line by line, never whole, and no line or record may exceed
`MAX_RECORD_BYTES`: a 100 MB line is refused after reading the cap, not loaded. Every problem
is a `StepScopeError` naming the file and the line.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Iterator

from core.errors import StepScopeError
from core.formats.records import RecordError

MAX_RECORD_BYTES = 16 * 1024 * 1024
_BOM = b"\xef\xbb\xbf"
# A JSON string (strings never span lines in valid JSON) or a bracket. Scanning for these
# tracks nesting depth without parsing, so a pretty-printed record is parsed once, whole.
# An unterminated string runs to the end of its line instead of failing: a failed match would
# be retried from every later quote, which is quadratic on a long line of escaped quotes.
_TOKEN = re.compile(r'"(?:[^"\\\n]|\\.)*"?|[{}\[\]]')


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def loads(text: str) -> Any:
    """json.loads turning every failure (syntax, NaN, huge ints, deep nesting) into RecordError."""
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as error:
        failure = RecordError(f"not valid JSON ({error.msg} at column {error.colno})")
        failure.lineno = error.lineno  # within `text`; a multi-line record adds its start
        raise failure from None
    except RecursionError:
        raise RecordError("JSON nested too deeply") from None
    except ValueError as error:
        raise RecordError(f"not valid JSON ({error})") from None


class _Source:
    """Decoded lines of a file with their 1-based numbers, under the size cap."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.line = 0

    def error(self, message: str, line: int | None = None) -> StepScopeError:
        return StepScopeError(f"{self.path}, line {line or self.line}: {message}")

    def lines(self) -> Iterator[tuple[int, str]]:
        try:
            handle = open(self.path, "rb")
        except OSError as error:
            raise StepScopeError(f"cannot read {self.path}: {error.strerror or error}") from None
        with handle:
            while True:
                try:
                    raw = handle.readline(MAX_RECORD_BYTES + 1)
                except OSError as error:
                    reason = error.strerror or error
                    raise StepScopeError(f"cannot read {self.path}: {reason}") from None
                if not raw:
                    return
                self.line += 1
                if len(raw) > MAX_RECORD_BYTES:
                    raise self.error(f"line is longer than {MAX_RECORD_BYTES // 2**20} MiB")
                if self.line == 1 and raw.startswith(_BOM):
                    raw = raw[len(_BOM):]
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as error:
                    raise self.error(
                        f"not valid UTF-8 (byte {error.start + 1} of the line)"
                    ) from None
                yield self.line, text


def read_records(path: str | Path) -> Iterator[tuple[int, Any]]:
    """Yield (line number, parsed JSON value) for each record in the file."""
    source = _Source(Path(path))
    lines = source.lines()
    for number, line in lines:
        if line.strip():
            break
    else:
        raise StepScopeError(f"{source.path} is empty: no JSON records in it")

    if line.lstrip().startswith("["):
        yield from _scan(source, lines, number, line, in_array=True)
        return
    try:
        first = loads(line)
    except RecordError:
        yield from _scan(source, lines, number, line, in_array=False)
        return
    yield number, first
    yield from _json_lines(source, lines)


def _json_lines(source: _Source, lines: Iterator[tuple[int, str]]) -> Iterator[tuple[int, Any]]:
    for number, line in lines:
        if line.strip():
            try:
                value = loads(line)
            except RecordError as error:
                raise source.error(str(error), number) from None
            yield number, value


def _scan(
    source: _Source, lines: Iterator[tuple[int, str]], number: int, line: str, *, in_array: bool
) -> Iterator[tuple[int, Any]]:
    """Records of a concatenated or array layout, delimited by bracket depth.

    Depth 0 is outside everything; in the array layout the array itself is depth 1, so a
    record always starts when depth goes from `base` to `base + 1` and ends when it returns.
    """
    base = 1 if in_array else 0
    depth = 0
    closed = False  # the array's closing bracket was seen
    pieces: list[str] = []
    size = 0
    start_line = number

    def between_records(gap: str, number: int) -> None:
        # Only whitespace between records, plus commas between the elements of the array.
        if in_array and depth == 1:
            gap = gap.replace(",", "")
        if gap.strip():
            raise source.error(f"expected a JSON object, found {gap.strip()[:20]!r}", number)

    def feed(number: int, line: str) -> Iterator[tuple[int, Any]]:
        nonlocal depth, closed, size, start_line
        cursor = 0  # start of this line's text not yet assigned to a record or a gap
        for match in _TOKEN.finditer(line):
            token = match.group()
            if closed:
                raise source.error("unexpected data after the end of the JSON array", number)
            if depth <= base:
                between_records(line[cursor : match.start()], number)
                if token[0] == '"':
                    raise source.error("expected a JSON object, found a string", number)
            if token[0] == '"':
                continue
            if token in "{[":
                if depth == base:
                    start_line, cursor, size = number, match.start(), 0
                    pieces.clear()
                depth += 1
                if in_array and depth == 1:
                    cursor = match.end()  # the array's own bracket belongs to no record
                continue
            depth -= 1
            if depth < 0:
                raise source.error("unexpected closing bracket", number)
            if depth == base:
                pieces.append(line[cursor : match.end()])
                cursor = match.end()
                yield start_line, _parse(source, "".join(pieces), start_line)
            elif in_array and depth == 0:
                if token != "]":
                    raise source.error("the JSON array is closed with '}'", number)
                closed, cursor = True, match.end()
        if depth > base:
            pieces.append(line[cursor:])
            size += len(line) - cursor
            if size > MAX_RECORD_BYTES:
                limit = MAX_RECORD_BYTES // 2**20
                raise source.error(f"record is larger than {limit} MiB", start_line)
        else:
            between_records(line[cursor:], number)

    yield from feed(number, line)
    for number, line in lines:
        yield from feed(number, line)
    if depth > base:
        raise source.error("the file ends inside this record (truncated?)", start_line)
    if in_array and not closed:
        raise source.error("the file ends inside the JSON array (truncated?)")


def _parse(source: _Source, text: str, line: int) -> Any:
    try:
        return loads(text)
    except RecordError as error:
        raise source.error(str(error), line + getattr(error, "lineno", 1) - 1) from None
