"""The generic trajectory JSONL, which is also StepScope's complete dump format.

A dump holds one JSON object per line, of these kinds:

    {"job": {"key", "kind", "status", "manifest", "planned", "done", "tokens", "error",
             "created_at", "started_at", "finished_at", "heartbeat_at", and where set:
             "compute", "ids_as_keys"}}
    {"problem": {"dataset", "question", "gold", "meta", "created_at"},
     "trajectory": {"source", "model", "policy_prompt", "solution", "final_answer", "correct",
                    "meta", "created_at", "current_segmentation": <index>,
                    "segmentations": [{"rule", "created_at",
                        "steps": [{"text", "start", "end",
                                   "annotations": [{"annotator", "rating", "first_error",
                                                    "flagged", "note", "created_at",
                                                    "updated_at", and where set: "confidence",
                                                    "rationale", "category", "dwell_ms",
                                                    "rating_order"}],
                                   "rollouts": [{"key", "job", "text", "answer", "correct",
                                                 "num_tokens", "finish_reason", "seed",
                                                 "model", "created_at"}],
                                   "verdicts": [{"key", "job", "judge", "verifier_kind",
                                                 "kind", "p_yes", "mass", "raw", "template",
                                                 "template_hash", "created_at"}]}]}],
                    "verdicts": [<whole-solution verdicts, as above>],
                    "labels": [{"annotator", "flawed_process", "dwell_ms", "created_at"}]}}

    {"problem": {...as above}, "tree": {
        "nodes": [{"key", "parent", "text"}],
        "rollouts": [{<a rollout's fields, as above>, "node"}],
        "marks": [{"rollout", "selected", "first_error", "branch", "job", "updated_at"}],
        "branches": [{"trajectory", "node", "rollout"}]}}

    {"problem": {...as above}, "search": {
        "key", "job", "policy", "strategy", "config", "scorer", "scorer_kind",
        "scorer_fingerprint", "status", "stopped", "answer", "correct", "compute", "created_at",
        "finished_at",
        "events": [<the journal's events, in order, as core.search.journal.event_to_dict wrote them>],
        "candidates": [{"candidate", "parent", "node", "depth", "call", "text", "num_tokens",
                        "finish_reason", "finished", "score", "rank", "mark", "subtree", "prior",
                        "visits", "value_sum", "trajectory"}]}}

Jobs come first (rollouts and verdicts name their job by key). A problem without trajectories
has a line without "trajectory"; a problem with several has one line per trajectory. Steps
are spans of the solution (`solution[start:end] == text`). Empty lists are left out. Lines are
in the order the rows were stored, so exporting, importing into a fresh database and
exporting again gives the same file byte for byte. `verifier_kind` (judge, prm, probe, orm, ...)
is what the verifier named by `judge` is; a dump without it is read as the store's migration
classifies old rows (by the job that wrote the verdict, else the old default name's prefix).

Row ids differ from one database to another, so nothing in a dump names a row by id:

- The rollout tree. A problem's "tree" line follows its trajectory lines, and only where it has
  something beyond them: the nodes no step ends at (an import recreates the others, and the root,
  from the segmentations), by content key, with their parent's key, parents first and by key
  within a depth; the rollouts sampled at a node outside any trajectory's steps (step_id NULL),
  with their node's key, oldest first; the tree search's marks by rollout key, with the branch
  trajectory's key, by rollout key; and the trajectories sampled from the tree (branches) by key,
  with their parent node's and rollout's keys, by key. A branch's meta names its rollout and node
  ("rollout", "node": ids in the database) by key too; the import puts the new ids back.
- Searches (core.store.searches). A problem's "search" lines, one per search by id, follow its
  trajectory and tree lines: the search's job by key, each candidate's node by its content key
  (a node a step ends at, or one of the tree line's) and a final beam's trajectory by key (one of
  the problem's trajectory lines, source "search"). The MC scorer's rollouts are the tree line's
  stepless rollouts at their nodes. Searches have no key column: "key" is
  core.store.searches.search_key (problem key, job key, created_at), and a final beam's meta
  names its search ("search") and that search's job ("job_id") by these keys; the import puts
  the new ids back, on the trajectories it adds. A search stored already (the same job and
  problem) is left as it is. Events are the journal (search_events) in seq order, so an
  unfinished search imported with its job resumes, and shows, as it would have.
- Job manifests. The fields of records.MANIFEST_ID_FIELDS (trajectory_ids, trajectory_id,
  problem_ids, node_id and the training split's lists) hold keys in a dump: trajectories',
  problems' and nodes' content keys, null for an id whose row was gone. The job's "ids_as_keys"
  lists the fields rewritten, and the import turns them back into the ids the rows got in the
  importing database, for the jobs it adds (a job stored before keeps its manifest). Until the
  import finishes, a job it added shows the keys.

Where an import renames the dataset (--dataset), every key below a problem changes; the keys in
the file are translated. A dump written before the tree and keyed manifests imports as it did:
without a tree, its manifests with the ids of the database it came from; one written before
searches (and job compute) were dumped imports without them, a final beam's meta with the ids
it had, and exports again to the same bytes (no search line, no "compute"). Node rows' created_at
is not in a dump (an import stamps its own). A mark the import adds to a rollout that was stored
before stays if the import is undone (marks are keyed by their rollout, not by a row id of their
own); every other row it adds goes.

A hand-written trajectory can use the short form instead:

    {"question": "...", "gold": "7", "steps": ["...", "..."]}        (pre-split, joined by
                                                                      "separator", default "\\n")
    {"question": "...", "gold": "7", "solution": "...", "rule": "line"}
    {"question": "...", "gold": "7"}                                  (a problem alone)

with optional "dataset", "source" (default "jsonl"), "model", "policy_prompt",
"final_answer", "correct" and "meta".
"""

from __future__ import annotations

import copy
from operator import itemgetter
from pathlib import Path
from typing import Any, Iterator

from core.formats.base import Exporter, ExportOptions, Importer, ImportOptions
from core.formats.output import write_jsonl
from core.formats.records import (
    LATENT_FIELDS, MANIFEST_ID_FIELDS, Annotation, Branch, Item, Job, Problem, RecordError, Rollout, Search,
    SearchCandidate, Segmentation, Step, Trajectory, TrajectoryLabel, Tree, TreeMark, TreeNode, TreeRollout,
    Verdict, cut, each_dict, manifest_id_fields, nested, opt_bool, opt_dict, opt_float, opt_int, opt_list,
    opt_str, presplit, rating, req_bool, req_dict, req_int, req_list, req_str, str_list,
)
from core.formats.sorted_streams import SortedGroups, chunked, join_sorted
from core.steps import SPLITTERS, StepSpan, is_rule
from core.store import JOB_STATUSES, VERDICT_KINDS, VERIFIER_KINDS, Store, problem_key

DEFAULT_DATASET = "jsonl"
DEFAULT_SOURCE = "jsonl"
_PAGE = 500  # problems whose trees and searches the dump reads together
_SEARCH_STATUSES = ("running", "done")  # the searches table's CHECKs
_CANDIDATE_MARKS = ("chosen", "pruned", "pending")


# --- import -----------------------------------------------------------------------------------


def parse(obj: dict, options: ImportOptions) -> list[Item | Job]:
    if "job" in obj:
        return [nested("job", lambda: _job(req_dict(obj, "job")))]
    if "problem" in obj:
        problem = nested("problem", lambda: _problem(req_dict(obj, "problem"), options))
        file_key = None
        if options.dataset:  # keys in the file (tree, manifests) are of the dataset it names
            raw = req_dict(obj, "problem")
            file_key = problem_key(opt_str(raw, "dataset") or DEFAULT_DATASET, problem.question, problem.gold)
        if obj.get("tree") is not None:
            tree = nested("tree", lambda: _tree(req_dict(obj, "tree")))
            return [Item(problem, tree=tree, file_problem_key=file_key)]
        if obj.get("search") is not None:
            search = nested("search", lambda: _search(req_dict(obj, "search")))
            return [Item(problem, searches=[search], file_problem_key=file_key)]
        if obj.get("trajectory") is None:
            return [Item(problem, file_problem_key=file_key)]
        trajectory = nested("trajectory", lambda: _trajectory(req_dict(obj, "trajectory")))
        return [Item(problem, [trajectory], file_problem_key=file_key)]
    return [_short_form(obj, options)]


def _job(obj: dict) -> Job:
    status = req_str(obj, "status")
    if status not in JOB_STATUSES:
        raise RecordError(f"status must be one of {', '.join(JOB_STATUSES)}, not {status!r}")
    return Job(
        key=req_str(obj, "key", nonempty=True), kind=req_str(obj, "kind"), status=status,
        manifest=obj.get("manifest"), planned=opt_int(obj, "planned") or 0,
        done=opt_int(obj, "done") or 0, tokens=opt_int(obj, "tokens") or 0,
        error=opt_str(obj, "error"), created_at=opt_str(obj, "created_at"),
        started_at=opt_str(obj, "started_at"), finished_at=opt_str(obj, "finished_at"),
        heartbeat_at=opt_str(obj, "heartbeat_at"), ids_as_keys=_ids_as_keys(obj),
        compute=_opt_object(obj, "compute"),
    )


def _opt_object(obj: dict, key: str) -> dict | None:
    """An object, or None where the field is absent or null (not {}: a dump keeps the difference)."""
    return None if obj.get(key) is None else opt_dict(obj, key)


def _ids_as_keys(obj: dict) -> list[str]:
    paths = str_list(obj, "ids_as_keys", nonempty=False) if obj.get("ids_as_keys") is not None else []
    keyed = {path for path, *_ in manifest_id_fields(obj.get("manifest"), ids=False)}
    for path in paths:
        if path not in MANIFEST_ID_FIELDS:
            raise RecordError(f"ids_as_keys: {path!r} is not a manifest id field ({', '.join(MANIFEST_ID_FIELDS)})")
        if path not in keyed:
            raise RecordError(f"ids_as_keys: the manifest's {path!r} is not a key, a list of keys or null")
    return paths


def _tree(obj: dict) -> Tree:
    def parts(name: str, read) -> list:
        return [nested(f"{name}[{i}]", lambda: read(x)) for i, x in enumerate(each_dict(opt_list(obj, name), name))]

    return Tree(
        nodes=parts("nodes", lambda x: TreeNode(key=req_str(x, "key", nonempty=True), parent=opt_str(x, "parent"),
                                                text=req_str(x, "text"))),
        rollouts=parts("rollouts", lambda x: TreeRollout(**vars(_rollout(x)), node=req_str(x, "node", nonempty=True))),
        marks=parts("marks", lambda x: TreeMark(
            rollout=req_str(x, "rollout", nonempty=True), selected=bool(opt_bool(x, "selected")),
            first_error=opt_int(x, "first_error"), branch=opt_str(x, "branch"), job=opt_str(x, "job"),
            updated_at=opt_str(x, "updated_at"))),
        branches=parts("branches", lambda x: Branch(
            trajectory=req_str(x, "trajectory", nonempty=True), node=opt_str(x, "node"), rollout=opt_str(x, "rollout"))),
    )  # fmt: skip


def _search(obj: dict) -> Search:
    status = req_str(obj, "status")
    if status not in _SEARCH_STATUSES:
        raise RecordError(f"status must be one of {', '.join(_SEARCH_STATUSES)}, not {status!r}")
    scorer_kind = req_str(obj, "scorer_kind")
    if scorer_kind not in VERIFIER_KINDS:
        raise RecordError(f"scorer_kind must be one of {', '.join(VERIFIER_KINDS)}, not {scorer_kind!r}")
    events = each_dict(opt_list(obj, "events"), "events")
    candidates = [nested(f"candidates[{i}]", lambda: _search_candidate(c))
                  for i, c in enumerate(each_dict(opt_list(obj, "candidates"), "candidates"))]  # fmt: skip
    numbers: set[int] = set()
    for i, c in enumerate(candidates):
        if c.candidate in numbers:
            raise RecordError(f"candidates[{i}]: candidate {c.candidate} is listed twice")
        numbers.add(c.candidate)
    for i, c in enumerate(candidates):
        if c.parent is not None and c.parent not in numbers:
            raise RecordError(f"candidates[{i}]: parent {c.parent} is no candidate of this search")
    return Search(
        key=req_str(obj, "key", nonempty=True), job=opt_str(obj, "job"), policy=req_str(obj, "policy"),
        strategy=req_str(obj, "strategy", nonempty=True), scorer=req_str(obj, "scorer", nonempty=True),
        scorer_kind=scorer_kind, status=status, created_at=req_str(obj, "created_at", nonempty=True),
        config=opt_dict(obj, "config"), scorer_fingerprint=opt_dict(obj, "scorer_fingerprint"),
        stopped=opt_str(obj, "stopped"), answer=opt_str(obj, "answer"), correct=opt_bool(obj, "correct"),
        compute=_opt_object(obj, "compute"), finished_at=opt_str(obj, "finished_at"), events=events,
        candidates=candidates,
    )  # fmt: skip


def _search_candidate(obj: dict) -> SearchCandidate:
    mark = req_str(obj, "mark")
    if mark not in _CANDIDATE_MARKS:
        raise RecordError(f"mark must be one of {', '.join(_CANDIDATE_MARKS)}, not {mark!r}")
    return SearchCandidate(
        candidate=req_int(obj, "candidate", low=0), node=req_str(obj, "node", nonempty=True),
        depth=req_int(obj, "depth", low=0), call=req_int(obj, "call"), text=req_str(obj, "text"),
        num_tokens=req_int(obj, "num_tokens", low=0), mark=mark, finished=bool(opt_bool(obj, "finished")),
        parent=opt_int(obj, "parent", low=0), finish_reason=opt_str(obj, "finish_reason"),
        score=opt_float(obj, "score"), rank=opt_int(obj, "rank"), subtree=opt_int(obj, "subtree"),
        prior=opt_float(obj, "prior"), visits=opt_int(obj, "visits", low=0) or 0,
        value_sum=opt_float(obj, "value_sum") or 0.0, trajectory=opt_str(obj, "trajectory"),
    )  # fmt: skip


def _problem(obj: dict, options: ImportOptions) -> Problem:
    return Problem(
        dataset=options.dataset or opt_str(obj, "dataset") or DEFAULT_DATASET,
        question=req_str(obj, "question", nonempty=True), gold=opt_str(obj, "gold"),
        meta=opt_dict(obj, "meta"), created_at=opt_str(obj, "created_at"),
    )


def _trajectory(obj: dict) -> Trajectory:
    solution = req_str(obj, "solution")
    raw = each_dict(req_list(obj, "segmentations", nonempty=True), "segmentations")
    segmentations = [
        nested(f"segmentations[{i}]", lambda: _segmentation(s, solution)) for i, s in enumerate(raw)
    ]
    current = obj.get("current_segmentation")
    current = len(segmentations) - 1 if current is None else req_int(
        obj, "current_segmentation", low=0, high=len(segmentations) - 1
    )
    return Trajectory(
        source=req_str(obj, "source", nonempty=True), solution=solution,
        segmentations=segmentations, model=opt_str(obj, "model"),
        policy_prompt=opt_str(obj, "policy_prompt"), final_answer=opt_str(obj, "final_answer"),
        correct=opt_bool(obj, "correct"), meta=opt_dict(obj, "meta"),
        verdicts=_verdicts(obj, whole_solution=True), current=current,
        created_at=opt_str(obj, "created_at"),
        labels=[nested(f"labels[{i}]", lambda: _trajectory_label(x))
                for i, x in enumerate(each_dict(opt_list(obj, "labels"), "labels"))],
    )


def _trajectory_label(obj: dict) -> TrajectoryLabel:
    return TrajectoryLabel(
        annotator=req_str(obj, "annotator", nonempty=True),
        flawed_process=bool(opt_bool(obj, "flawed_process")), dwell_ms=opt_int(obj, "dwell_ms", low=0),
        created_at=opt_str(obj, "created_at"),
    )


def _segmentation(obj: dict, solution: str) -> Segmentation:
    rule = req_str(obj, "rule")
    if not is_rule(rule):
        raise RecordError(f"rule must be one of {', '.join(SPLITTERS)}, not {rule!r}")
    steps, previous_end = [], 0
    for i, raw in enumerate(each_dict(req_list(obj, "steps"), "steps")):
        step = nested(f"steps[{i}]", lambda: _step(raw, solution, previous_end))
        steps.append(step)
        previous_end = step.span.end
    return Segmentation(rule, steps, created_at=opt_str(obj, "created_at"))


def _step(obj: dict, solution: str, previous_end: int) -> Step:
    text = req_str(obj, "text")
    start = req_int(obj, "start", low=previous_end, high=len(solution))
    end = req_int(obj, "end", low=start, high=len(solution))
    if solution[start:end] != text:
        raise RecordError(f"text is not the solution's text at [{start}:{end}]")
    annotations = [
        nested(f"annotations[{i}]", lambda: _annotation(a))
        for i, a in enumerate(each_dict(opt_list(obj, "annotations"), "annotations"))
    ]
    rollouts = [
        nested(f"rollouts[{i}]", lambda: _rollout(r))
        for i, r in enumerate(each_dict(opt_list(obj, "rollouts"), "rollouts"))
    ]
    verdicts = _verdicts(obj, whole_solution=False)
    return Step(StepSpan(text, start, end), annotations, rollouts, verdicts)


def _annotation(obj: dict) -> Annotation:
    return Annotation(
        annotator=req_str(obj, "annotator", nonempty=True),
        rating=rating(obj.get("rating"), "field 'rating'"),
        first_error=bool(opt_bool(obj, "first_error")), flagged=bool(opt_bool(obj, "flagged")),
        note=opt_str(obj, "note"), created_at=opt_str(obj, "created_at"),
        updated_at=opt_str(obj, "updated_at"),
        confidence=opt_int(obj, "confidence", low=1, high=5), rationale=opt_str(obj, "rationale"),
        category=opt_str(obj, "category"), dwell_ms=opt_int(obj, "dwell_ms", low=0),
        rating_order=opt_int(obj, "rating_order", low=1),
    )


def _rollout(obj: dict) -> Rollout:
    return Rollout(
        key=req_str(obj, "key", nonempty=True), text=req_str(obj, "text"),
        correct=req_bool(obj, "correct"), answer=opt_str(obj, "answer"),
        num_tokens=opt_int(obj, "num_tokens", low=0), finish_reason=opt_str(obj, "finish_reason"),
        seed=opt_int(obj, "seed"), model=opt_str(obj, "model"), job=opt_str(obj, "job"),
        created_at=opt_str(obj, "created_at"),
    )


def _verdicts(obj: dict, *, whole_solution: bool) -> list[Verdict]:
    return [
        nested(f"verdicts[{i}]", lambda: _verdict(v, whole_solution))
        for i, v in enumerate(each_dict(opt_list(obj, "verdicts"), "verdicts"))
    ]


def _verdict(obj: dict, whole_solution: bool) -> Verdict:
    kind = req_str(obj, "kind")
    allowed = [k for k in VERDICT_KINDS if k != ("step" if whole_solution else "outcome")]
    if kind not in allowed:
        raise RecordError(f"kind must be one of {', '.join(allowed)} here, not {kind!r}")
    return Verdict(
        key=req_str(obj, "key", nonempty=True), judge=req_str(obj, "judge", nonempty=True),
        kind=kind, p_yes=opt_float(obj, "p_yes"), mass=opt_float(obj, "mass"),
        raw=opt_str(obj, "raw"), template=opt_str(obj, "template"),
        template_hash=opt_str(obj, "template_hash"), job=opt_str(obj, "job"),
        created_at=opt_str(obj, "created_at"), verifier_kind=_verifier_kind(obj),
    )


def _verifier_kind(obj: dict) -> str | None:
    kind = opt_str(obj, "verifier_kind")
    if kind is not None and kind not in VERIFIER_KINDS:
        raise RecordError(f"verifier_kind must be one of {', '.join(VERIFIER_KINDS)}, not {kind!r}")
    return kind


def _short_form(obj: dict, options: ImportOptions) -> Item:
    problem = Problem(
        dataset=options.dataset or opt_str(obj, "dataset") or DEFAULT_DATASET,
        question=req_str(obj, "question", nonempty=True), gold=opt_str(obj, "gold"),
    )
    if obj.get("steps") is not None:
        separator = opt_str(obj, "separator")
        separator = "\n" if separator is None else separator
        solution, segmentation = presplit(str_list(obj, "steps"), separator)
    elif obj.get("solution") is not None:
        solution = req_str(obj, "solution", nonempty=True)
        rule = opt_str(obj, "rule") or "line"
        if not is_rule(rule) or rule == "pre-split":
            splitters = ", ".join(s for s in SPLITTERS if s != "pre-split")
            raise RecordError(f"rule must be a text splitter ({splitters}), not {rule!r}")
        segmentation = cut(solution, rule)
    else:
        return Item(problem)
    trajectory = Trajectory(
        source=opt_str(obj, "source") or DEFAULT_SOURCE, solution=solution,
        segmentations=[segmentation], model=opt_str(obj, "model"),
        policy_prompt=opt_str(obj, "policy_prompt"), final_answer=opt_str(obj, "final_answer"),
        correct=opt_bool(obj, "correct"), meta=opt_dict(obj, "meta"),
    )
    return Item(problem, [trajectory])


# --- export -----------------------------------------------------------------------------------

_JOB_COLUMNS = ("key", "kind", "status", "manifest", "planned", "done", "tokens", "error",
                "created_at", "started_at", "finished_at", "heartbeat_at")
_ROLLOUT_COLUMNS = ("key", "text", "answer", "correct", "num_tokens", "finish_reason", "seed",
                    "model", "created_at")
_TREE_PARTS = ("nodes", "rollouts", "marks", "branches")
_VERDICT_COLUMNS = ("key", "judge", "verifier_kind", "kind", "p_yes", "mass", "raw", "template",
                    "template_hash", "created_at")


def dump_records(store: Store, dataset: str | None = None) -> Iterator[dict]:
    """Every job, problem and trajectory (with everything hanging off it), each problem's
    rollout tree beyond its trajectories, and its searches, in stored order.

    Set-wise (issue 22): one query per table, each ordered by problem and trajectory
    (core.store.export), merged in one pass, holding one problem's trajectories at a time; the
    trees and searches are read a page of problems at a time (core.store.tree.tree_dump,
    core.store.searches.search_dump)."""
    jobs = list(reversed(store.list_jobs()))
    keyed = _keyed_manifests(store, jobs)
    for job in jobs:
        record = {column: job[column] for column in _JOB_COLUMNS}
        if job.get("compute") is not None:  # what a search job spent (older dumps stay byte-identical)
            record["compute"] = job["compute"]
        if job["id"] in keyed:
            record["manifest"], record["ids_as_keys"] = keyed[job["id"]]
        yield {"job": record}
    by_trajectory = itemgetter("problem_id", "trajectory_id")
    trajectories = join_sorted(
        store.dump_trajectories(dataset=dataset), by_trajectory,
        *((rows, by_trajectory) for rows in (
            store.dump_segmentations(dataset=dataset), store.dump_steps(dataset=dataset),
            store.dump_annotations(dataset=dataset), store.dump_rollouts(dataset=dataset),
            store.dump_verdicts(dataset=dataset), store.dump_trajectory_labels(dataset=dataset))),
    )  # fmt: skip
    by_problem = SortedGroups(trajectories, lambda joined: joined[0]["problem_id"])
    for page in chunked(store.dump_problems(dataset=dataset), _PAGE):
        ids = [problem["id"] for problem in page]
        trees, searches = store.tree_dump(ids), store.search_dump(ids)  # one query per table a page
        for problem in page:
            yield from _problem_records(problem, by_problem.take(problem["id"]), trees.get(problem["id"], {}),
                                        searches.get(problem["id"], []))  # fmt: skip


def _keyed_manifests(store: Store, jobs: list[dict]) -> dict[int, tuple[Any, list[str]]]:
    """job id -> (its manifest with the ids of MANIFEST_ID_FIELDS as keys, the paths rewritten);
    an id whose row is gone becomes null (a wrong row after an import would be worse)."""
    manifests = {job["id"]: copy.deepcopy(job["manifest"]) for job in jobs}
    fields = {job_id: manifest_id_fields(m) for job_id, m in manifests.items()}
    wanted: dict[str, set[int]] = {}
    for found in fields.values():
        for _, table, holder, name in found:
            values = holder[name] if isinstance(holder[name], list) else [holder[name]]
            wanted.setdefault(table, set()).update(v for v in values if v is not None)
    keys = {table: store.keys_of(table, sorted(ids)) for table, ids in wanted.items()}
    out = {}
    for job_id, found in fields.items():
        for _, table, holder, name in found:
            value = holder[name]
            key = lambda v, t=table: None if v is None else keys[t].get(v)
            holder[name] = [key(v) for v in value] if isinstance(value, list) else key(value)
        if found:
            out[job_id] = (manifests[job_id], sorted(path for path, *_ in found))
    return out


def _problem_records(problem: dict, trajectories: list[tuple], tree: dict[str, list[dict]],
                     searches: list[tuple[dict, dict]]) -> Iterator[dict]:  # fmt: skip
    """The problem's lines: `trajectories` are join_sorted's rows (the trajectory, then its
    segmentations, steps, labels, rollouts, verdicts and trajectory labels); `searches` are
    search_dump's (ids, record) pairs."""
    fields = ("dataset", "question", "gold", "meta", "created_at")
    head = {"problem": {k: problem[k] for k in fields}}
    if not trajectories:
        yield head
    branches = {b["trajectory"]: b for b in tree.get("branches", ())}
    beams: dict[str, list[tuple]] = {}  # a final beam's trajectory key -> the searches that name it
    for ids, record in searches:
        for c in record.get("candidates", ()):
            if c["trajectory"] is not None:
                beams.setdefault(c["trajectory"], []).append((ids["id"], record["key"], ids["job_id"], record["job"]))
    for joined in trajectories:
        yield {**head, "trajectory": _trajectory_record(*joined, branches, beams)}
    # After the problem's trajectories: its marks and branch links name their rows by key.
    if tree:
        yield {**head, "tree": {kind: tree[kind] for kind in _TREE_PARTS if tree.get(kind)}}
    # Then its searches, one line each: their candidates name the nodes above and the beams by key.
    for _, record in searches:
        yield {**head, "search": record}


def _trajectory_record(t: dict, segmentations: list[dict], steps: list[dict], annotations: list[dict],
                       rollouts: list[dict], verdicts: list[dict], labels: list[dict],
                       branches: dict[str, dict], beams: dict[str, list[tuple]]) -> dict:  # fmt: skip
    by_step: dict[str, dict[int | None, list[dict]]] = {"annotations": {}, "rollouts": {}, "verdicts": {}}
    for a in annotations:
        by_step["annotations"].setdefault(a["step_id"], []).append(
            {k: a[k] for k in ("annotator", "rating", "first_error", "flagged", "note",
                               "created_at", "updated_at")}
            # The human latents, where the label has them (older dumps stay byte-identical).
            | {k: a[k] for k in LATENT_FIELDS if a[k] is not None}
        )
    for r in rollouts:
        by_step["rollouts"].setdefault(r["step_id"], []).append(_keyed(r, _ROLLOUT_COLUMNS))
    for v in verdicts:
        by_step["verdicts"].setdefault(v["step_id"], []).append(_keyed(v, _VERDICT_COLUMNS))

    record = {k: t[k] for k in ("source", "model", "policy_prompt", "solution", "final_answer",
                                "correct", "meta", "created_at")}
    branch = branches.get(t["key"])
    if branch is not None and isinstance(t["meta"], dict):
        # A branch's meta names the rollout and node it came from by id (core.store.tree,
        # core.jobs.tree_search): written as keys, and set back to ids where the import links it.
        meta = dict(t["meta"])
        for name, column in (("rollout", "parent_rollout_id"), ("node", "parent_node_id")):
            if branch[name] is not None and meta.get(name) == t[column]:
                meta[name] = branch[name]
        record["meta"] = meta
    for search_id, search_key, job_id, job_key in beams.get(t["key"], ()):
        # A final beam's meta names its search and that search's job by id (core.store.searches):
        # written as keys, and set back to ids where the import stores the search.
        meta = record["meta"]
        if isinstance(meta, dict) and _is_id(meta.get("search"), search_id):
            meta = {**meta, "search": search_key}
            if job_key is not None and _is_id(meta.get("job_id"), job_id):
                meta["job_id"] = job_key
            record["meta"] = meta
            break
    record["current_segmentation"] = next(
        (i for i, s in enumerate(segmentations) if s["id"] == t["current_segmentation_id"]), len(segmentations) - 1
    )
    steps_of: dict[int, list[dict]] = {}
    for step in steps:
        steps_of.setdefault(step["segmentation_id"], []).append(step)
    record["segmentations"] = [
        {
            "rule": s["rule"],
            "created_at": s["created_at"],
            "steps": [_step_record(step, by_step) for step in steps_of.get(s["id"], [])],
        }
        for s in segmentations
    ]
    if by_step["verdicts"].get(None):
        record["verdicts"] = by_step["verdicts"][None]
    if labels:
        record["labels"] = [{k: x[k] for k in ("annotator", "flawed_process", "dwell_ms", "created_at")} for x in labels]
    return record


def _is_id(value: Any, row_id: int | None) -> bool:
    return row_id is not None and isinstance(value, int) and not isinstance(value, bool) and value == row_id


def _keyed(row: dict, columns: tuple[str, ...]) -> dict:
    record = {column: row[column] for column in columns}
    record["job"] = row["job_key"]
    return record


def _step_record(step: dict, by_step: dict[str, dict[int | None, list[dict]]]) -> dict:
    record: dict[str, Any] = {
        "text": step["text"], "start": step["start_char"], "end": step["end_char"]
    }
    for name, rows in by_step.items():  # annotations, rollouts, verdicts: the dump's order
        if rows.get(step["id"]):
            record[name] = rows[step["id"]]
    return record


def export(store: Store, out: Path, options: ExportOptions) -> int:
    return write_jsonl(out, dump_records(store, options.dataset))


IMPORTER = Importer(
    name="jsonl",
    description="StepScope JSONL: the full dump, or hand-written trajectories (short form)",
    default_dataset=DEFAULT_DATASET,
    parse=parse,
)
EXPORTER = Exporter(
    name="jsonl",
    description="complete dump: problems, trajectories, segmentations, steps, labels, "
                "rollouts, verdicts, rollout trees, searches, jobs",
    needs_labels=False,
    write=export,
)
