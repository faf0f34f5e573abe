"""Keys and stamps: content keys that make imports idempotent, random keys, UTC timestamps.

Problems, trajectories and segmentations have a content key (a hash of what they are), so
importing the same file twice finds the existing rows instead of adding copies. Rollouts,
verdicts and jobs have a random key assigned when they are created; a full dump carries it, so
re-importing a dump is also a no-op.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import datetime, timezone
from typing import Any, Sequence

from core.steps import StepSpan


def now() -> str:
    """UTC timestamp as ISO 8601 text; sorts correctly as a string."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def new_key() -> str:
    return uuid.uuid4().hex


def content_key(*parts: Any) -> str:
    """Stable hash of JSON-serialisable parts (ASCII-escaped, so any str hashes)."""
    blob = json.dumps(parts, ensure_ascii=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode("ascii")).hexdigest()


def problem_key(dataset: str, question: str, gold: str | None) -> str:
    return content_key("problem", dataset, question, gold)


def segmentation_key(rule: str, spans: Sequence[StepSpan]) -> str:
    return content_key("segmentation", rule, [[s.start, s.end] for s in spans])
