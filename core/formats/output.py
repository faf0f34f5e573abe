"""Writing export files: all or nothing, so a failed export never leaves half a file behind."""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

from core.errors import StepScopeError


@contextmanager
def atomic_path(out: Path) -> Iterator[Path]:
    """A temporary path next to `out` that replaces `out` only if the block succeeds."""
    out = Path(out)
    if out.is_dir():
        raise StepScopeError(f"cannot write {out}: it is a folder")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise StepScopeError(f"cannot create the folder for {out}: {error}") from None
    temporary = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        yield temporary
        os.replace(temporary, out)
    except OSError as error:
        raise StepScopeError(f"cannot write {out}: {error.strerror or error}") from None
    finally:
        temporary.unlink(missing_ok=True)


def write_jsonl(out: Path, records: Iterable[dict]) -> int:
    count = 0
    with atomic_path(out) as temporary, open(temporary, "w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
            count += 1
    return count
