"""What an importer produces: plain records, validated, before anything touches the store.

Every format module turns one JSON object from the file into `Item`s (a problem with its
trajectories) or `Job`s; `core.formats.ingest` writes them. Field checks raise `RecordError`
with a message about the field; the reader adds the file name and line number.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from core.steps import StepSpan, join_steps, segment

# SQLite integers are signed 64-bit.
_INT_MIN, _INT_MAX = -(2**63), 2**63 - 1


class RecordError(ValueError):
    """A record does not have the shape its format requires (message names the field)."""


@dataclass
class Annotation:
    annotator: str
    rating: int | None = None
    first_error: bool = False
    flagged: bool = False
    note: str | None = None
    created_at: str | None = None
    updated_at: str | None = None
    # Human latents (issue 13): optional, None when the source has none.
    confidence: int | None = None
    rationale: str | None = None
    category: str | None = None
    dwell_ms: int | None = None
    rating_order: int | None = None


LATENT_FIELDS = ("confidence", "rationale", "category", "dwell_ms", "rating_order")


@dataclass
class TrajectoryLabel:
    """An annotator's label on a whole trajectory: the right-answer-flawed-process mark and the
    total dwell time (PRM800K's total_time, in milliseconds)."""

    annotator: str
    flawed_process: bool = False
    dwell_ms: int | None = None
    created_at: str | None = None


@dataclass
class Rollout:
    key: str
    text: str
    correct: bool
    answer: str | None = None
    num_tokens: int | None = None
    finish_reason: str | None = None
    seed: int | None = None
    model: str | None = None
    job: str | None = None  # a job key, resolved to an id when written
    created_at: str | None = None


@dataclass
class Verdict:
    key: str
    judge: str
    kind: str
    p_yes: float | None = None
    mass: float | None = None
    raw: str | None = None
    template: str | None = None
    template_hash: str | None = None
    job: str | None = None
    created_at: str | None = None
    verifier_kind: str | None = None  # None in dumps written before kinds were stored


@dataclass
class Step:
    span: StepSpan
    annotations: list[Annotation] = field(default_factory=list)
    rollouts: list[Rollout] = field(default_factory=list)
    verdicts: list[Verdict] = field(default_factory=list)


@dataclass
class Segmentation:
    rule: str
    steps: list[Step]
    created_at: str | None = None


@dataclass
class Trajectory:
    source: str
    solution: str
    segmentations: list[Segmentation]
    model: str | None = None
    policy_prompt: str | None = None
    final_answer: str | None = None
    correct: bool | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    verdicts: list[Verdict] = field(default_factory=list)  # whole-solution verdicts
    current: int = 0  # index into segmentations
    created_at: str | None = None
    labels: list[TrajectoryLabel] = field(default_factory=list)


@dataclass
class Problem:
    dataset: str
    question: str
    gold: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    created_at: str | None = None


@dataclass
class TreeNode:
    """A node of the rollout tree no step ends at, by content key; the root has parent None."""

    key: str
    parent: str | None
    text: str


@dataclass
class TreeRollout(Rollout):
    """A rollout sampled at a node outside any trajectory's steps (step_id NULL)."""

    node: str = ""  # the node's key


@dataclass
class TreeMark:
    rollout: str  # the marked rollout's key
    selected: bool = False
    first_error: int | None = None
    branch: str | None = None  # the branch trajectory's key
    job: str | None = None
    updated_at: str | None = None


@dataclass
class Branch:
    """A trajectory sampled from the tree: its parent node and rollout, all by key."""

    trajectory: str
    node: str | None = None
    rollout: str | None = None


@dataclass
class Tree:
    nodes: list[TreeNode] = field(default_factory=list)
    rollouts: list[TreeRollout] = field(default_factory=list)
    marks: list[TreeMark] = field(default_factory=list)
    branches: list[Branch] = field(default_factory=list)


@dataclass
class SearchCandidate:
    """A candidate a search considered (core.store.searches), its node and final-beam trajectory by key."""

    candidate: int
    node: str  # the rollout tree node's key
    depth: int
    call: int
    text: str
    num_tokens: int
    mark: str
    finished: bool = False
    parent: int | None = None
    finish_reason: str | None = None
    score: float | None = None
    rank: int | None = None
    subtree: int | None = None
    prior: float | None = None
    visits: int = 0
    value_sum: float = 0.0
    trajectory: str | None = None  # a final beam's trajectory key


@dataclass
class Search:
    """One problem searched by one job (named by key): its row, its journal (events, in order) and
    its candidates. `key` links the final beams' meta ("search") to it within a dump."""

    key: str
    policy: str
    strategy: str
    scorer: str
    scorer_kind: str
    status: str
    created_at: str
    job: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    scorer_fingerprint: dict[str, Any] = field(default_factory=dict)
    stopped: str | None = None
    answer: str | None = None
    correct: bool | None = None
    compute: dict[str, Any] | None = None
    finished_at: str | None = None
    events: list[dict] = field(default_factory=list)
    candidates: list[SearchCandidate] = field(default_factory=list)


@dataclass
class Item:
    problem: Problem
    trajectories: list[Trajectory] = field(default_factory=list)
    tree: Tree | None = None
    searches: list[Search] = field(default_factory=list)
    # The problem's key as the file wrote it (its own dataset), where that can differ from the
    # key it is stored under (an import with --dataset): keys in the file are translated.
    file_problem_key: str | None = None


@dataclass
class Job:
    key: str
    kind: str
    status: str
    manifest: Any
    planned: int = 0
    done: int = 0
    tokens: int = 0
    error: str | None = None
    created_at: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    heartbeat_at: str | None = None
    compute: dict[str, Any] | None = None  # what the job spent (search jobs); None in older dumps
    # The manifest fields (MANIFEST_ID_FIELDS paths) that hold keys instead of ids; an import
    # turns them back into the ids the rows get in the importing database.
    ids_as_keys: list[str] = field(default_factory=list)


# Manifest fields that hold row ids, by dotted path -> the keyed table the ids are of. A dump
# writes them as keys (ids differ from one database to another); a new id-bearing manifest field
# belongs here. A value qualifies when it is an id, None, or a list of those.
MANIFEST_ID_FIELDS = {
    "trajectory_ids": "trajectories", "trajectory_id": "trajectories", "problem_ids": "problems",
    "node_id": "nodes", "split.train_trajectories": "trajectories", "split.test_trajectories": "trajectories",
    "split.train_problems": "problems", "split.test_problems": "problems",
}  # fmt: skip


def _is_id(value: Any) -> bool:
    return value is None or (isinstance(value, int) and not isinstance(value, bool))


def manifest_id_fields(manifest: Any, ids: bool = True) -> list[tuple[str, str, dict, str]]:
    """(path, table, the dict holding the field, its name) for each id-bearing field present in
    the manifest whose value qualifies (as ids, or with ids=False as keys: strings or None)."""
    found = []
    for path, table in MANIFEST_ID_FIELDS.items():
        *parents, name = path.split(".")
        holder = manifest
        for parent in parents:
            holder = holder.get(parent) if isinstance(holder, dict) else None
        if not isinstance(holder, dict) or name not in holder:
            continue
        value = holder[name]
        ok = _is_id if ids else (lambda v: v is None or isinstance(v, str))
        if ok(value) or (isinstance(value, list) and all(ok(v) for v in value)):
            found.append((path, table, holder, name))
    return found


# --- building segmentations -------------------------------------------------------------------


def cut(solution: str, rule: str) -> Segmentation:
    """A segmentation of `solution` by a text rule (line, sentence, ...)."""
    return Segmentation(rule, [Step(span) for span in segment(solution, rule)])


def presplit(steps: Sequence[str], separator: str) -> tuple[str, Segmentation]:
    """The solution text and segmentation of steps that arrive already split."""
    solution, spans = join_steps(list(steps), separator)
    return solution, Segmentation("pre-split", [Step(span) for span in spans])


# --- field checks -----------------------------------------------------------------------------

_MISSING = object()


def _type_name(value: Any) -> str:
    names = {bool: "boolean", int: "integer", float: "number", str: "string", list: "list",
             dict: "object"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def text(value: Any, where: str) -> str:
    """A string SQLite can store: JSON allows lone surrogates (\\ud800), UTF-8 does not."""
    if not isinstance(value, str):
        raise RecordError(f"{where} must be a string, got {_type_name(value)}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise RecordError(f"{where} contains an invalid unicode escape") from None
    return value


def _get(obj: dict, key: str, required: bool) -> Any:
    value = obj.get(key, _MISSING)
    if value is _MISSING or (value is None and required):
        if required:
            raise RecordError(f"missing field {key!r}")
        return None
    return value


def req_str(obj: dict, key: str, *, nonempty: bool = False) -> str:
    value = text(_get(obj, key, True), f"field {key!r}")
    if nonempty and not value.strip():
        raise RecordError(f"field {key!r} is empty")
    return value


def opt_str(obj: dict, key: str) -> str | None:
    value = _get(obj, key, False)
    return None if value is None else text(value, f"field {key!r}")


def req_bool(obj: dict, key: str) -> bool:
    value = _get(obj, key, True)
    if not isinstance(value, bool):
        raise RecordError(f"field {key!r} must be true or false, got {_type_name(value)}")
    return value


def opt_bool(obj: dict, key: str) -> bool | None:
    value = _get(obj, key, False)
    if value is not None and not isinstance(value, bool):
        raise RecordError(f"field {key!r} must be true, false or null, got {_type_name(value)}")
    return value


def integer(value: Any, where: str, *, low: int = _INT_MIN, high: int = _INT_MAX) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise RecordError(f"{where} must be an integer, got {_type_name(value)}")
    if not low <= value <= high:
        raise RecordError(f"{where} is {value}, outside {low}..{high}")
    return value


def req_int(obj: dict, key: str, **bounds: int) -> int:
    return integer(_get(obj, key, True), f"field {key!r}", **bounds)


def opt_int(obj: dict, key: str, **bounds: int) -> int | None:
    value = _get(obj, key, False)
    return None if value is None else integer(value, f"field {key!r}", **bounds)


def opt_float(obj: dict, key: str) -> float | None:
    value = _get(obj, key, False)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise RecordError(f"field {key!r} must be a finite number, got {_type_name(value)}")
    return float(value)


def rating(value: Any, where: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or value not in (-1, 0, 1) or not isinstance(value, int):
        raise RecordError(f"{where} must be -1, 0, 1 or null, got {value!r}")
    return value


def req_dict(obj: dict, key: str) -> dict:
    value = _get(obj, key, True)
    if not isinstance(value, dict):
        raise RecordError(f"field {key!r} must be an object, got {_type_name(value)}")
    return value


def opt_dict(obj: dict, key: str) -> dict:
    value = _get(obj, key, False)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise RecordError(f"field {key!r} must be an object, got {_type_name(value)}")
    return value


def req_list(obj: dict, key: str, *, nonempty: bool = False) -> list:
    value = _get(obj, key, True)
    if not isinstance(value, list):
        raise RecordError(f"field {key!r} must be a list, got {_type_name(value)}")
    if nonempty and not value:
        raise RecordError(f"field {key!r} is an empty list")
    return value


def opt_list(obj: dict, key: str) -> list:
    value = _get(obj, key, False)
    if value is None:
        return []
    if not isinstance(value, list):
        raise RecordError(f"field {key!r} must be a list, got {_type_name(value)}")
    return value


def str_list(obj: dict, key: str, *, nonempty: bool = True) -> list[str]:
    return [text(v, f"{key}[{i}]") for i, v in enumerate(req_list(obj, key, nonempty=nonempty))]


def each_dict(values: list, where: str) -> list[dict]:
    for i, value in enumerate(values):
        if not isinstance(value, dict):
            raise RecordError(f"{where}[{i}] must be an object, got {_type_name(value)}")
    return values


def nested(where: str, check: Callable[[], Any]) -> Any:
    """Run a check, prefixing any RecordError with where in the record it happened."""
    try:
        return check()
    except RecordError as error:
        raise RecordError(f"{where}: {error}") from None
