"""Every exporter reads set-wise (issue 22): a few streaming queries ordered by trajectory (or
problem), merged in one pass, whatever the number of trajectories; and writes the same bytes as
the per-trajectory readers did. The old readers are kept below as the reference, copied from
core/formats before the change (labelled_rows and page_labels from labels.py, the dump from
jsonl.py, prm800k.rows, tree.label_rows and preference_pairs); each export of a varied seeded
store (two datasets, several sources, models and segmentations, labels by two annotators with
latents, verdicts of two verifiers with in-sample rows, rollouts at steps and at nodes, marks,
branches, gold items, trajectory labels, jobs) is compared byte for byte with the reference's.
The labelled formats (trl, trl-parquet, math-shepherd, processbench) format what their reader
yields; their reference run feeds the old labelled_rows to the same formatting code."""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import replace
from itertools import combinations
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from core.errors import StepScopeError
from core.formats import export_file, jsonl, math_shepherd, processbench, tree, trl
from core.formats.labels import (
    MAJORITY, MC_SOURCES, ProvenanceTally, agreed_label, human_label, majority_label, mc_labels, parse_label_source,
    resolve_label_source,
)
from core.formats.output import write_jsonl
from core.formats.records import LATENT_FIELDS
from core.steps import StepSpan
from core.store import Store

STAMP = "2026-01-02T03:04:05.000+00:00"

# --- the per-trajectory readers as they were (the reference) ----------------------------------


def old_page_labels(store, steps, source):
    ids = [step["id"] for step in steps]
    if source.kind in MC_SOURCES:
        found = mc_labels(store, ids, source)
        return found.label_list(), None, found
    if source.is_verifier:
        latest = store.latest_step_scores(source.name, ids)
        cut = 0.5 if source.threshold is None else source.threshold
        return [None if latest.get(i) is None else latest[i] >= cut for i in ids], None, None
    by_step = defaultdict(list)
    mine = {}
    annotator = source.name if source.kind == "human" else None
    for step_id, _, rating, first_error, confidence, category in store.step_annotations(ids, annotator=annotator):
        by_step[step_id].append(human_label(rating, bool(first_error)))
        mine[step_id] = (confidence, category)
    pooled = source.kind == MAJORITY or (source.kind == "human" and source.name is None)
    combine = majority_label if pooled else agreed_label
    labels = [combine(by_step.get(i, [])) for i in ids]
    if source.kind != "human" or source.name is None:
        return labels, None, None
    latents = {
        "confidences": [mine.get(i, (None, None))[0] for i in ids],
        "categories": [mine.get(i, (None, None))[1] for i in ids],
    }
    return labels, latents, None


def _trajectory_page(store, after_id, limit, dataset):
    """core.store.export's trajectory_page as it was."""
    where, params = ("AND p.dataset = ?", [dataset]) if dataset is not None else ("", [])
    cursor = store.conn.execute(
        f"""SELECT t.id, t.key, t.problem_id, t.source, t.model, t.correct, p.dataset, p.question, p.gold,
                   t.current_segmentation_id AS segmentation_id
            FROM trajectories t JOIN problems p ON p.id = t.problem_id
            WHERE t.id > ? {where} ORDER BY t.id LIMIT ?""",
        [after_id, *params, limit],
    )
    names = [column[0] for column in cursor.description]
    rows = [dict(zip(names, row)) for row in cursor.fetchall()]
    for row in rows:
        row["correct"] = None if row["correct"] is None else bool(row["correct"])
    return rows


def old_labelled_rows(store, options, *, page=2000):
    source = resolve_label_source(store, options.labels)
    after = 0
    while trajectories := _trajectory_page(store, after, page, options.dataset):
        after = trajectories[-1]["id"]
        steps = store.current_steps([t["id"] for t in trajectories])
        flat = [step for t in trajectories for step in steps[t["id"]]]
        labels, latents, mc = old_page_labels(store, flat, source)
        at = 0
        for trajectory in trajectories:
            n = len(steps[trajectory["id"]])
            mine = labels[at : at + n]
            if any(label is not None for label in mine):
                own = {name: values[at : at + n] for name, values in latents.items()} if latents else None
                marks = None if mc is None else tuple(
                    column[at : at + n] for column in (mc.provenance, mc.rule, mc.n, mc.correct))
                yield trajectory, steps[trajectory["id"]], mine, own, marks
            at += n


_ROLLOUT_COLUMNS = ("key", "text", "answer", "correct", "num_tokens", "finish_reason", "seed", "model", "created_at")
_VERDICT_COLUMNS = ("key", "judge", "verifier_kind", "kind", "p_yes", "mass", "raw", "template", "template_hash",
                    "created_at")  # fmt: skip
_JOB_COLUMNS = ("key", "kind", "status", "manifest", "planned", "done", "tokens", "error", "created_at", "started_at",
                "finished_at", "heartbeat_at")  # fmt: skip


def old_dump_records(store, dataset=None):
    jobs = list(reversed(store.list_jobs()))
    keyed = jsonl._keyed_manifests(store, jobs)
    for job in jobs:
        record = {column: job[column] for column in _JOB_COLUMNS}
        if job["id"] in keyed:
            record["manifest"], record["ids_as_keys"] = keyed[job["id"]]
        yield {"job": record}
    offset = 0
    while page := store.list_problems(dataset=dataset, limit=500, offset=offset):
        offset += len(page)
        trees = store.tree_dump([problem["id"] for problem in page])
        for problem in page:
            yield from _old_problem_records(store, problem, trees.get(problem["id"], {}))


def _old_problem_records(store, problem, tree):
    head = {"problem": {k: problem[k] for k in ("dataset", "question", "gold", "meta", "created_at")}}
    trajectories = store.list_trajectories(problem_id=problem["id"])
    if not trajectories:
        yield head
    branches = {b["trajectory"]: b for b in tree.get("branches", ())}
    for row in trajectories:
        yield {**head, "trajectory": _old_trajectory_record(store, row["id"], branches)}
    if tree:
        yield {**head, "tree": {kind: tree[kind] for kind in ("nodes", "rollouts", "marks", "branches") if tree.get(kind)}}


def _old_keyed(row, columns):
    record = {column: row[column] for column in columns}
    record["job"] = row["job_key"]
    return record


def _old_trajectory_record(store, trajectory_id, branches):
    t = store.get_trajectory(trajectory_id)
    annotations = {}
    for a in store.annotations(trajectory_id):
        annotations.setdefault(a["step_id"], []).append(
            {k: a[k] for k in ("annotator", "rating", "first_error", "flagged", "note", "created_at", "updated_at")}
            | {k: a[k] for k in LATENT_FIELDS if a[k] is not None})  # fmt: skip
    rollouts = {}
    for r in store.trajectory_rollouts(trajectory_id):
        rollouts.setdefault(r["step_id"], []).append(_old_keyed(r, _ROLLOUT_COLUMNS))
    verdicts = {}
    for v in store.verdicts(trajectory_id):
        verdicts.setdefault(v["step_id"], []).append(_old_keyed(v, _VERDICT_COLUMNS))
    segmentations = store.segmentations(trajectory_id)
    record = {k: t[k] for k in ("source", "model", "policy_prompt", "solution", "final_answer", "correct", "meta",
                                "created_at")}  # fmt: skip
    branch = branches.get(t["key"])
    if branch is not None and isinstance(t["meta"], dict):
        meta = dict(t["meta"])
        for name, column in (("rollout", "parent_rollout_id"), ("node", "parent_node_id")):
            if branch[name] is not None and meta.get(name) == t[column]:
                meta[name] = branch[name]
        record["meta"] = meta
    record["current_segmentation"] = next((i for i, s in enumerate(segmentations) if s["current"]),
                                          len(segmentations) - 1)  # fmt: skip
    record["segmentations"] = [
        {"rule": s["rule"], "created_at": s["created_at"],
         "steps": [_old_step_record(step, annotations, rollouts, verdicts) for step in store.steps(trajectory_id, s["id"])]}
        for s in segmentations
    ]  # fmt: skip
    if verdicts.get(None):
        record["verdicts"] = verdicts[None]
    labels = [{"annotator": x["annotator"], "flawed_process": x["flawed_process"], "dwell_ms": x["dwell_ms"],
               "created_at": x["created_at"]} for x in store.trajectory_labels(trajectory_id)]  # fmt: skip
    if labels:
        record["labels"] = labels
    return record


def _old_step_record(step, annotations, rollouts, verdicts):
    record = {"text": step["text"], "start": step["start_char"], "end": step["end_char"]}
    for name, by_step in (("annotations", annotations), ("rollouts", rollouts), ("verdicts", verdicts)):
        if by_step.get(step["id"]):
            record[name] = by_step[step["id"]]
    return record


def _old_prm800k_record(store, trajectory, annotator, labels):
    meta = trajectory.get("meta") or {}
    alternatives = meta.get("alternatives") or {}
    human_steps = set(meta.get("human_steps") or [])
    steps = []
    for step in store.steps(trajectory["id"]):
        mine = labels.get(step["id"]) or {}
        chosen = {"text": step["text"], "rating": mine.get("rating"), "flagged": bool(mine.get("flagged"))}
        others = [{"text": a["text"], "rating": a.get("rating"), "flagged": bool(a.get("flagged"))}
                  for a in alternatives.get(str(step["idx"]), [])]  # fmt: skip
        if step["idx"] in human_steps:
            steps.append({"completions": others, "human_completion": chosen, "chosen_completion": None})
        else:
            steps.append({"completions": [chosen, *others], "human_completion": None, "chosen_completion": 0})
    mark = store.trajectory_label(annotator, trajectory["id"]) or {}
    total_time = mark.get("dwell_ms")
    if total_time is None:
        dwell = [x["dwell_ms"] for x in labels.values() if x.get("dwell_ms") is not None]
        total_time = sum(dwell) if dwell else meta.get("total_time")
    fields = ("pre_generated_steps", "pre_generated_answer", "pre_generated_verifier_score")
    return {
        "labeler": annotator,
        **{k: meta[k] for k in ("timestamp", "generation") if k in meta},
        "is_quality_control_question": bool(meta.get("is_quality_control_question")
                                            or store.gold_labels(trajectory["id"])),
        "is_initial_screening_question": bool(meta.get("is_initial_screening_question")),
        "question": {"problem": trajectory["question"], "ground_truth_answer": trajectory.get("gold"),
                     **{k: meta[k] for k in fields if k in meta}},
        "label": {"steps": steps, "total_time": total_time,
                  "finish_reason": meta.get("finish_reason")
                  or ("found_error" if any(x.get("rating") == -1 for x in labels.values()) else "solution")},
    }  # fmt: skip


def old_prm800k_rows(store, options):
    for trajectory in store.list_trajectories(dataset=options.dataset, limit=None):
        steps = store.steps(trajectory["id"])
        segmentation = steps[0]["segmentation_id"] if steps else None
        by_annotator = {}
        for label in store.annotations(trajectory["id"], segmentation_id=segmentation):
            by_annotator.setdefault(label["annotator"], {})[label["step_id"]] = label
        full = store.get_trajectory(trajectory["id"])
        for annotator in sorted(by_annotator):
            yield _old_prm800k_record(store, full, annotator, by_annotator[annotator])


def _old_tree(store, problem_id, model):
    nodes = {node["id"]: node for node in store.problem_nodes(problem_id)}
    counts = store.node_counts(problem_id, model)
    children = {}
    for node in nodes.values():
        children.setdefault(node["parent_id"], []).append(node["id"])
    return nodes, counts, children


def old_tree_label_rows(store, options, model=None):
    source = options.labels
    for problem in store.tree_problems(options.dataset):
        nodes, counts, children = _old_tree(store, problem["id"], model)
        has_labelled_below = set()
        for node_id in sorted(nodes, key=lambda i: -nodes[i]["depth"]):
            if node_id in counts or node_id in has_labelled_below:
                parent = nodes[node_id]["parent_id"]
                if parent is not None:
                    has_labelled_below.add(parent)
        for leaf in sorted(counts):
            if leaf in has_labelled_below or nodes[leaf]["depth"] == 0:
                continue
            path = []
            node_id = leaf
            while node_id is not None and nodes[node_id]["depth"] > 0:
                path.append(nodes[node_id])
                node_id = nodes[node_id]["parent_id"]
            path.reverse()
            completions, labels, values, pending = [], [], [], []
            for node in path:
                pending.append(node["text"])
                if node["id"] in counts:
                    n, correct = counts[node["id"]]
                    completions.append("\n".join(pending))
                    labels.append(correct > 0 if source.kind == "mc-hard" else correct / n >= source.threshold)
                    values.append(correct / n)
                    pending = []
            yield {"prompt": problem["question"], "completions": completions, "labels": labels, "values": values}


def old_preference_pairs(store, margin=0.3, *, model=None, dataset=None):
    for problem in store.tree_problems(dataset):
        nodes, counts, children = _old_tree(store, problem["id"], model)
        for parent_id, kids in children.items():
            if parent_id is None:
                continue
            valued = [(counts[k][1] / counts[k][0], k) for k in sorted(kids) if k in counts]
            if len(valued) < 2:
                continue
            steps = []
            node_id = parent_id
            while nodes[node_id]["depth"] > 0:
                steps.append(nodes[node_id]["text"])
                node_id = nodes[node_id]["parent_id"]
            prompt = problem["question"] + "\n\n" + "".join(f"{step}\n" for step in reversed(steps))
            for (value_a, a), (value_b, b) in combinations(valued, 2):
                if abs(value_a - value_b) <= margin or nodes[a]["text"] == nodes[b]["text"]:
                    continue
                (high, chosen), (low, rejected) = sorted([(value_a, a), (value_b, b)], reverse=True)
                yield {"prompt": prompt, "chosen": nodes[chosen]["text"], "rejected": nodes[rejected]["text"],
                       "chosen_value": high, "rejected_value": low, "problem_id": problem["id"]}  # fmt: skip


# --- a varied seeded store --------------------------------------------------------------------


def _lines(rng: random.Random, n: int, tag: str) -> str:
    return "\n".join(f"{tag} step {k}: {rng.randint(1, 99)} + {rng.randint(1, 99)}. Then more." for k in range(n))


def varied_store(path: Path, trajectories: int = 24, seed: int = 7) -> Store:
    rng = random.Random(seed)
    store = Store.open(path)
    store.create_job("generate", {"trajectory_ids": [], "note": "first"})
    problems = []
    for p in range(max(3, trajectories // 3)):
        dataset = "alpha" if p % 3 else "beta"
        problems.append(store.add_problem(dataset, f"Question {p} of {seed}?", None if p % 5 == 4 else str(p),
                                          meta={"n": p} if p % 2 else None))  # fmt: skip
    store.add_problem("alpha", f"A question nobody answered ({seed})", "0")
    made = []
    for t in range(trajectories):
        problem = problems[t % len(problems)]
        source = ("policy", "hand", "prm800k")[t % 3]
        meta = {"i": t}
        if source == "prm800k":
            meta.update(alternatives={"1": [{"text": "an alternative", "rating": -1, "flagged": True}]},
                        human_steps=[2], finish_reason="found_error" if t % 2 else None, total_time=1000 + t,
                        timestamp=f"2023-{t:02d}", is_initial_screening_question=t % 4 == 0)  # fmt: skip
        solution = _lines(rng, 2 + t % 5, f"t{t}")
        tid = store.add_trajectory(problem, solution, source=source, model=(None, "m1", "m2")[t % 3],
                                   correct=(True, False, None)[t % 3 if t % 7 else 0], meta=meta,
                                   final_answer=str(t))  # fmt: skip
        if t % 4 == 1:  # a second segmentation that stays beside the current one
            other = store.add_segmentation(tid, "sentence", make_current=False)
            if t % 8 == 1:
                store.set_current_segmentation(tid, other)
        if t % 6 == 5:  # pre-split steps of its own, current
            parts = solution.split("\n")
            spans, at = [], 0
            for part in parts[:2]:
                spans.append(StepSpan(part, at, at + len(part)))
                at += len(part) + 1
            store.add_segmentation(tid, "pre-split", spans)
        made.append(tid)
    judge_rows, rollout_rows = [], []
    for tid in made:
        for segmentation in store.segmentations(tid):
            steps = store.steps(tid, segmentation["id"])
            for k, step in enumerate(steps):
                sid = step["id"]
                roll = rng.random()
                if roll < 0.75:
                    rating = rng.choice((-1, 0, 1, 1, None))
                    store.add_annotation("A", sid, rating=rating, first_error=rating is None or (rating == -1 and k == 1),
                                         flagged=rng.random() < 0.2, note="hm" if rng.random() < 0.2 else None,
                                         created_at=STAMP, updated_at=STAMP,
                                         confidence=rng.choice((None, 1, 5)), category=rng.choice((None, "math")),
                                         dwell_ms=rng.choice((None, 900)), rating_order=k + 1 if roll < 0.3 else None)  # fmt: skip
                if rng.random() < 0.5:
                    store.add_annotation("B", sid, rating=rng.choice((-1, 1, None)), first_error=rng.random() < 0.2,
                                         created_at=STAMP, updated_at=STAMP, dwell_ms=rng.choice((None, 300)))  # fmt: skip
                for j in range(rng.choice((0, 1, 2, 3))):
                    judge_rows.append({"judge": "j1", "kind": "step", "step_id": sid, "trajectory_id": tid,
                                       "p_yes": rng.choice((None, round(rng.random(), 3))), "created_at": STAMP,
                                       "in_sample": j == 1 and rng.random() < 0.5})  # fmt: skip
                for _ in range(rng.choice((0, 0, 1, 2, 4))):
                    rollout_rows.append({"step_id": sid, "text": "and so on", "answer": "1", "correct": rng.random() < 0.4,
                                         "model": rng.choice(("m1", "m2", None)), "num_tokens": 5, "seed": 3,
                                         "created_at": STAMP})  # fmt: skip
        judge_rows.append({"judge": "j1", "kind": "outcome", "trajectory_id": tid, "p_yes": 0.25, "created_at": STAMP})
        if rng.random() < 0.4:
            store.add_trajectory_label("A", tid, flawed_process=rng.random() < 0.5, dwell_ms=rng.choice((None, 4000)),
                                       created_at=STAMP)  # fmt: skip
    job = store.create_job("judge", {"trajectory_ids": made[:3], "problem_ids": problems[:2]})
    for row in judge_rows[::5]:
        row["job_id"] = job
    store.add_verdicts(judge_rows, verifier_kind="judge")
    store.add_verdicts([{"judge": "p1", "kind": "step", "step_id": row["step_id"], "trajectory_id": row["trajectory_id"],
                         "p_yes": round(rng.random(), 3), "created_at": STAMP} for row in judge_rows[::3]
                        if row["kind"] == "step"], verifier_kind="prm")  # fmt: skip
    store.add_rollouts(rollout_rows)
    # Rollouts at nodes no step ends at, marks and a branch (the rollout tree beyond trajectories).
    for problem in problems[:3]:
        path = store.ensure_node_path(problem, [f"lone step of {problem}", "and another", "and a third"])
        ids = store.add_node_rollouts(path[-1], [{"text": "so 7", "answer": "7", "correct": rng.random() < 0.5,
                                                  "model": "m1"} for _ in range(3)])  # fmt: skip
        ids += store.add_node_rollouts(path[1], [{"text": "so 8", "answer": "8", "correct": True, "model": "m2"}])
        store.mark_rollout(ids[0], selected=True, first_error=1)
        store.add_branch(ids[1], f"lone step of {problem}\nand another\nand a third\nso 7",
                         [StepSpan(f"lone step of {problem}", 0, len(f"lone step of {problem}"))], rule="pre-split",
                         model="m1", policy_prompt=None, final_answer="7", correct=False, meta={"node": path[-1]})  # fmt: skip
    gold = store.steps(made[2])
    store.set_gold(made[2], {gold[0]["id"]: 1})
    # Odd shapes: a labelled trajectory whose current segmentation has no steps, one with none.
    store.add_segmentation(made[3], "pre-split", [])
    store.insert_trajectory(problems[1], "never segmented", source="hand")
    return store


SOURCES = ("human:A", "human:B", "human", "consensus", "majority", "judge:j1", "prm:p1", "mc-hard", "mc-soft:0.5")
LABELLED = ("trl", "math-shepherd", "processbench")


@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
    return varied_store(tmp_path_factory.mktemp("varied") / "varied.db")


def old_rows_of_texts(store, options, **kwargs):
    """old_labelled_rows with each step as its text: the shape the exporters now read."""
    for trajectory, steps, labels, latents, provenance in old_labelled_rows(store, options, **kwargs):
        yield trajectory, [step["text"] for step in steps], labels, latents, provenance


def _both(monkeypatch, store, module, format_name, folder: Path, **kwargs) -> tuple[bytes, bytes, dict, dict]:
    """The export's bytes and provenance tally, with the new readers and with the reference."""
    new, old = folder / f"new-{format_name}", folder / f"old-{format_name}"
    tallies = ProvenanceTally(), ProvenanceTally()
    export_file(store, format_name, new, tally=tallies[0], **kwargs)
    with monkeypatch.context() as patch:
        patch.setattr(module, "labelled_rows", old_rows_of_texts)
        export_file(store, format_name, old, tally=tallies[1], **kwargs)
    return new.read_bytes(), old.read_bytes(), tallies[0].as_dict(), tallies[1].as_dict()


@pytest.mark.parametrize("dataset", [None, "alpha"])
@pytest.mark.parametrize("labels", SOURCES)
def test_labelled_exports_match_the_per_trajectory_reference(seeded, tmp_path, monkeypatch, labels, dataset):
    modules = {"trl": trl, "math-shepherd": math_shepherd, "processbench": processbench}
    for format_name in LABELLED:
        new, old, tally, old_tally = _both(monkeypatch, seeded, modules[format_name], format_name, tmp_path,
                                           labels=labels, dataset=dataset)  # fmt: skip
        assert new == old, (format_name, labels, dataset)
        assert tally == old_tally
        assert new, (format_name, labels)  # the store has something to export for every source


def test_sampled_only_and_parquet_match_the_reference(seeded, tmp_path, monkeypatch):
    for labels in ("mc-hard", "mc-soft:0.25"):
        new, old, tally, old_tally = _both(monkeypatch, seeded, trl, "trl", tmp_path, labels=labels, sampled_only=True)
        assert new == old and tally == old_tally
    for labels in ("human:A", "human:B", "mc-hard"):
        new_path, old_path = tmp_path / "new.parquet", tmp_path / "old.parquet"
        export_file(seeded, "trl-parquet", new_path, labels=labels)
        with monkeypatch.context() as patch:
            patch.setattr(trl, "labelled_rows", old_rows_of_texts)
            export_file(seeded, "trl-parquet", old_path, labels=labels)
        assert pq.read_table(new_path).equals(pq.read_table(old_path)), labels
        assert pq.read_table(new_path).num_rows > 0


def test_labelled_rows_match_the_reference_row_for_row(seeded):
    """Beyond the files: the rows labelled_rows yields (trajectory, step texts, labels, latents, provenance)."""
    from core.formats.base import ExportOptions
    from core.formats.labels import labelled_rows

    for labels in SOURCES:
        options = ExportOptions(labels=parse_label_source(labels))
        new = list(labelled_rows(seeded, options, page=5))
        old = list(old_rows_of_texts(seeded, options, page=7))
        assert [_comparable(row) for row in new] == [_comparable(row) for row in old], labels


def _comparable(row):
    trajectory, texts, labels, latents, provenance = row
    return trajectory, texts, labels, latents, None if provenance is None else [column.tolist() for column in provenance]


@pytest.mark.parametrize("dataset", [None, "alpha", "beta", "none such"])
def test_dump_matches_the_per_trajectory_reference(seeded, tmp_path, dataset):
    out, reference = tmp_path / "dump.jsonl", tmp_path / "reference.jsonl"
    count = export_file(seeded, "jsonl", out, dataset=dataset)
    assert count == write_jsonl(reference, old_dump_records(seeded, dataset))
    assert out.read_bytes() == reference.read_bytes()


@pytest.mark.parametrize("dataset", [None, "alpha"])
def test_prm800k_matches_the_per_trajectory_reference(seeded, tmp_path, dataset):
    from core.formats.base import ExportOptions

    out, reference = tmp_path / "prm800k.jsonl", tmp_path / "reference.jsonl"
    export_file(seeded, "prm800k", out, dataset=dataset)
    write_jsonl(reference, old_prm800k_rows(seeded, ExportOptions(dataset=dataset)))
    assert out.read_bytes() == reference.read_bytes() and out.stat().st_size > 0


@pytest.mark.parametrize("labels", ["mc-hard", "mc-soft:0.5"])
@pytest.mark.parametrize("dataset", [None, "beta"])
def test_tree_exports_match_the_per_problem_reference(seeded, tmp_path, labels, dataset):
    from core.formats.base import ExportOptions

    out, reference = tmp_path / "tree.jsonl", tmp_path / "reference.jsonl"
    export_file(seeded, "tree-trl", out, labels=labels, dataset=dataset)
    write_jsonl(reference, old_tree_label_rows(seeded, ExportOptions(labels=parse_label_source(labels), dataset=dataset)))
    assert out.read_bytes() == reference.read_bytes() and out.stat().st_size > 0
    for margin in (0.0, 0.3):
        for model in (None, "m1", "m2", "nobody"):
            assert list(tree.preference_pairs(seeded, margin, model=model, dataset=dataset)) == list(
                old_preference_pairs(seeded, margin, model=model, dataset=dataset)), (margin, model)


def test_a_store_without_rows_exports_what_the_reference_does(tmp_path, monkeypatch):
    store = Store.open(tmp_path / "empty.db")
    store.add_problem("alpha", "Nothing here?", "1")
    for format_name, module in (("trl", trl), ("processbench", processbench)):
        new, old, _, _ = _both(monkeypatch, store, module, format_name, tmp_path, labels="human")
        assert new == old == b""
    export_file(store, "jsonl", tmp_path / "dump.jsonl")
    write_jsonl(tmp_path / "reference.jsonl", old_dump_records(store))
    assert (tmp_path / "dump.jsonl").read_bytes() == (tmp_path / "reference.jsonl").read_bytes()
    with pytest.raises(StepScopeError):
        export_file(store, "trl", tmp_path / "x.jsonl", labels="human:nobody")


EXPORTS = [("trl", "human:A"), ("trl", "human"), ("trl", "judge:j1"), ("trl", "mc-hard"), ("trl-parquet", "human:A"),
           ("math-shepherd", "consensus"), ("processbench", "majority"), ("jsonl", None), ("prm800k", None),
           ("tree-trl", "mc-soft:0.5")]  # fmt: skip


def test_no_export_runs_a_query_per_trajectory(tmp_path):
    """The statements an export runs do not grow with the store: 8 trajectories or 40."""
    counted = {}
    for n in (8, 40):
        store = varied_store(tmp_path / f"count-{n}.db", trajectories=n, seed=n)
        statements: list[str] = []
        store.conn.set_trace_callback(statements.append)
        for format_name, labels in EXPORTS:
            statements.clear()
            export_file(store, format_name, tmp_path / f"{format_name}.out", labels=labels)
            counted.setdefault((format_name, labels), []).append(len(statements))
        store.close()
    assert all(small == large for small, large in counted.values()), counted


def test_a_sampled_only_source_is_kept_through_the_streams(seeded, tmp_path):
    """replace(source, sampled_only=True) reaches the MC arithmetic (nothing implied is written)."""
    from core.formats.base import ExportOptions
    from core.formats.labels import labelled_rows

    source = replace(parse_label_source("mc-hard"), sampled_only=True)
    for _, _, _, _, provenance in labelled_rows(seeded, ExportOptions(labels=source)):
        assert set(provenance[0].tolist()) <= {0, 1}


def test_reach_evidence_of_a_stream_is_the_stores_windowed_query(seeded):
    """labels.reach_evidence (array arithmetic on the current steps, trajectory by trajectory)
    gives core.store.label_provenance's windowed answer for the same steps."""
    import numpy as np

    from core.formats.labels import reach_evidence

    rows = list(seeded.current_steps_with_rollouts())
    owners, step_ids, _, _, _, n, correct, outcome = zip(*rows)
    streamed = reach_evidence(owners, n, correct, outcome)
    stored = seeded.step_reach_evidence(step_ids)
    assert set(streamed) == set(stored)
    for name in stored:
        assert np.array_equal(streamed[name], stored[name], equal_nan=True), name
    assert streamed["later_reached"].any() and streamed["earlier_failed"].any()
    assert {name: len(column) for name, column in reach_evidence([], [], [], []).items()} == dict.fromkeys(stored, 0)
