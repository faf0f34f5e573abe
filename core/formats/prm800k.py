"""PRM800K label files (one labelled solution per record; JSON lines or pretty-printed).

The trajectory is rebuilt from the chosen completions as the PRM800K README describes: step i
is `completions[chosen_completion]["text"]`, or the `human_completion` text when no completion
was chosen. Steps are joined with a newline (rule "pre-split").

A step with neither a chosen nor a human completion ends the labelling (phase 2 stops at the
first error). If one of its completions is rated -1, the first such completion becomes the
last step of the trajectory: it is the error the labeler found. Otherwise the step is left out.
Every completion that did not become a step is kept in the trajectory's meta under
`alternatives`, keyed by step index, with its rating and flag.

The labeler's ratings of the chosen steps become annotations under the labeler id (the first
step rated -1 is marked as the first error); a human-written step carries no rating unless
the file gives one. Outcome: `finish_reason` "solution" is correct, "found_error" is not,
anything else (give_up, bad_problem) is unknown. `total_time` becomes the labeler's dwell time on
the trajectory; labeler, timestamp, generation and the quality-control and screening flags are
kept in the trajectory's meta.

Export (`prm800k`): one record per (trajectory, annotator) with ratings on its current steps;
`labeler`, `total_time` (the annotator's dwell time on the trajectory), and the flags
round-trip; a gold item made in the app is exported as a quality-control question.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path
from typing import Iterator

from core.formats.base import Exporter, ExportOptions, Importer, ImportOptions
from core.formats.output import write_jsonl
from core.formats.records import (
    Annotation, Item, Problem, RecordError, Trajectory, TrajectoryLabel, each_dict, nested, opt_bool,
    opt_int, opt_list, opt_str, presplit, rating, req_dict, req_list, req_str, text,
)
from core.formats.sorted_streams import join_sorted
from core.store import Store

SOURCE = "prm800k"
SEPARATOR = "\n"
_OUTCOMES = {"solution": True, "found_error": False}
_ANSWER = re.compile(r"#\s*Answer\s*\n+(.+?)\s*$", re.DOTALL)
# Question fields that describe the pre-generated solution, not the problem.
_SOLUTION_FIELDS = ("pre_generated_steps", "pre_generated_answer", "pre_generated_verifier_score")
_LABEL_FIELDS = ("labeler", "timestamp", "generation", "is_quality_control_question",
                 "is_initial_screening_question")


@dataclass
class _Candidate:
    text: str
    rating: int | None
    flagged: bool

    def as_meta(self) -> dict:
        return {"text": self.text, "rating": self.rating, "flagged": self.flagged}


def _completion(value: dict) -> _Candidate:
    return _Candidate(
        req_str(value, "text"), rating(value.get("rating"), "rating"),
        bool(opt_bool(value, "flagged")),
    )


def _human_completion(value: object) -> _Candidate | None:
    # The README shows null; the files hold {"text": ..., "rating": null, "source": "human", ...}.
    if value is None:
        return None
    if isinstance(value, str):
        return _Candidate(text(value, "human_completion"), None, False)
    if isinstance(value, dict):
        return _completion(value)
    raise RecordError("human_completion must be null, a string or an object")


@dataclass
class _Rebuilt:
    steps: list[_Candidate]
    human_steps: list[int]
    alternatives: dict[str, list[dict]]
    dropped_steps: int


def _rebuild(raw_steps: list) -> _Rebuilt:
    rebuilt = _Rebuilt([], [], {}, 0)
    for i, step in enumerate(each_dict(raw_steps, "label.steps")):
        where = f"label.steps[{i}]"
        completions = nested(where, lambda: [
            nested(f"completions[{j}]", lambda: _completion(c))
            for j, c in enumerate(each_dict(opt_list(step, "completions"), "completions"))
        ])
        chosen = nested(where, lambda: opt_int(
            step, "chosen_completion", low=0, high=len(completions) - 1
        ))
        human = nested(where, lambda: _human_completion(step.get("human_completion")))
        if chosen is not None:
            pick = completions[chosen]
        elif human is not None:
            pick = human
            rebuilt.human_steps.append(i)
        else:
            pick = next((c for c in completions if c.rating == -1), None)
        others = [c.as_meta() for c in completions if c is not pick]
        if others:
            rebuilt.alternatives[str(i)] = others
        if pick is not None:
            rebuilt.steps.append(pick)
        if chosen is None and human is None:
            rebuilt.dropped_steps = len(raw_steps) - i - 1
            break
    return rebuilt


def _problem(obj: dict, options: ImportOptions) -> Problem:
    question = req_dict(obj, "question")
    problem = nested("question", lambda: req_str(question, "problem", nonempty=True))
    gold = nested("question", lambda: opt_str(question, "ground_truth_answer"))
    meta = {k: v for k, v in question.items()
            if k not in ("problem", "ground_truth_answer", *_SOLUTION_FIELDS)}
    return Problem(options.dataset_or(SOURCE), problem, gold, meta)


def _annotations(
    steps: list[_Candidate], labeler: str, stamp: str | None
) -> list[list[Annotation]]:
    first_error = next((k for k, c in enumerate(steps) if c.rating == -1), None)
    return [
        [Annotation(labeler, c.rating, first_error=(k == first_error), flagged=c.flagged,
                    created_at=stamp)]
        if c.rating is not None or c.flagged else []
        for k, c in enumerate(steps)
    ]


def parse(obj: dict, options: ImportOptions) -> list[Item]:
    problem = _problem(obj, options)
    label = req_dict(obj, "label")
    rebuilt = _rebuild(nested("label", lambda: req_list(label, "steps")))
    labeler = opt_str(obj, "labeler") or options.annotator or SOURCE
    stamp = opt_str(obj, "timestamp")
    finish_reason = nested("label", lambda: opt_str(label, "finish_reason"))
    if not rebuilt.steps:
        return [Item(problem, [])]  # nothing was chosen: the problem alone

    solution, segmentation = presplit([c.text for c in rebuilt.steps], SEPARATOR)
    for step, annotations in zip(segmentation.steps, _annotations(rebuilt.steps, labeler, stamp)):
        step.annotations = annotations
    question = obj["question"]
    meta = {
        **{k: obj[k] for k in _LABEL_FIELDS if k in obj},
        **{k: question[k] for k in _SOLUTION_FIELDS if k in question},
        "finish_reason": finish_reason,
        "total_time": label.get("total_time"),
        "alternatives": rebuilt.alternatives,
        "human_steps": rebuilt.human_steps,
        "dropped_steps": rebuilt.dropped_steps,
    }
    answer = _ANSWER.search(solution)
    total_time = nested("label", lambda: opt_int(label, "total_time", low=0))
    trajectory = Trajectory(
        source=SOURCE, solution=solution, segmentations=[segmentation],
        final_answer=answer.group(1) if answer else None,
        correct=_OUTCOMES.get(finish_reason or ""), meta=meta,
        labels=[TrajectoryLabel(labeler, dwell_ms=total_time, created_at=stamp)] if total_time is not None else [],
    )
    return [Item(problem, [trajectory])]


# --- export --------------------------------------------------------------------------------


def _record(trajectory: dict, steps: list[tuple], annotator: str, labels: dict[int, dict],
            dwell_ms: int | None) -> dict:  # fmt: skip
    """One PRM800K record: the annotator's ratings of the trajectory's current steps (rows of
    core.store.export.STEP_COLUMNS), each step as its chosen completion (alternatives kept from
    an import follow it, unchosen); `dwell_ms` is the annotator's time on the trajectory."""
    meta = trajectory.get("meta") or {}
    alternatives = meta.get("alternatives") or {}
    human_steps = set(meta.get("human_steps") or [])
    completions = []
    for _, step_id, _, idx, step_text in steps:
        mine = labels.get(step_id) or {}
        chosen = {"text": step_text, "rating": mine.get("rating"), "flagged": bool(mine.get("flagged"))}
        others = [{"text": a["text"], "rating": a.get("rating"), "flagged": bool(a.get("flagged"))}
                  for a in alternatives.get(str(idx), [])]  # fmt: skip
        if idx in human_steps:
            completions.append({"completions": others, "human_completion": chosen, "chosen_completion": None})
        else:
            completions.append({"completions": [chosen, *others], "human_completion": None, "chosen_completion": 0})
    total_time = dwell_ms
    if total_time is None:
        dwell = [x["dwell_ms"] for x in labels.values() if x.get("dwell_ms") is not None]
        total_time = sum(dwell) if dwell else meta.get("total_time")
    record = {
        "labeler": annotator,
        **{k: meta[k] for k in ("timestamp", "generation") if k in meta},
        # Quality-control and screening flags: as imported; a gold item made here is quality control.
        "is_quality_control_question": bool(meta.get("is_quality_control_question") or trajectory["gold_item"]),
        "is_initial_screening_question": bool(meta.get("is_initial_screening_question")),
        "question": {"problem": trajectory["question"], "ground_truth_answer": trajectory.get("gold"),
                     **{k: meta[k] for k in _SOLUTION_FIELDS if k in meta}},
        "label": {"steps": completions, "total_time": total_time,
                  "finish_reason": meta.get("finish_reason") or _finish_reason(labels)},
    }
    return record


def _finish_reason(labels: dict[int, dict]) -> str:
    return "found_error" if any(x.get("rating") == -1 for x in labels.values()) else "solution"


def rows(store: Store, options: ExportOptions) -> Iterator[dict]:
    """A record per (trajectory, annotator) with ratings on its current steps: four streams
    ordered by trajectory (core.store.export: the trajectories, their current steps, the labels
    on them and the trajectory labels), merged in one pass."""
    dataset = options.dataset
    by_trajectory = itemgetter("trajectory_id")
    for trajectory, steps, labels, marks in join_sorted(
        store.export_trajectories(dataset=dataset, gold_item=True), itemgetter("id"),
        (store.current_step_texts(dataset=dataset), itemgetter(0)),
        (store.prm800k_annotations(dataset=dataset), by_trajectory),
        (store.prm800k_trajectory_labels(dataset=dataset), by_trajectory),
    ):
        by_annotator: dict[str, dict[int, dict]] = {}
        for label in labels:
            by_annotator.setdefault(label["annotator"], {})[label["step_id"]] = label
        dwell = {mark["annotator"]: mark["dwell_ms"] for mark in marks}
        for annotator in sorted(by_annotator):
            yield _record(trajectory, steps, annotator, by_annotator[annotator], dwell.get(annotator))


def export(store: Store, out: Path, options: ExportOptions) -> int:
    return write_jsonl(out, rows(store, options))


EXPORTER = Exporter("prm800k", "PRM800K label records (labeler, total_time, quality-control flags)", False, export)


IMPORTER = Importer(
    name="prm800k",
    description="PRM800K labels: trajectories from the chosen completions, ratings as annotations",
    default_dataset="prm800k",
    parse=parse,
)
