"""Model solutions with outcome labels, as in GSM8K's `example_model_solutions.jsonl`.

Each line holds `question`, `ground_truth` (the worked reference solution, whose last line is
`A: n`, or `#### n` as in the main GSM8K files) and any number of named model solutions: every
other key whose value is an object with `solution` (text) and `is_correct` (true/false), e.g.
`"6b_verification": {"solution": "...", "is_correct": true}` or `"model_solution_1": {...}`.
The key becomes the trajectory's model name and `is_correct` its outcome label. Other keys are
kept in the problem's meta. Solutions are segmented by line; the reference solution becomes a
"reference" trajectory. Problems go to dataset "gsm8k" by default, the same dataset (and so
the same problems) as a GSM8K import of the same questions.
"""

from __future__ import annotations

import re

from core.errors import StepScopeError
from core.formats.base import Importer, ImportOptions
from core.formats.gsm8k import reference_trajectory
from core.formats.records import (
    Item, Problem, RecordError, Trajectory, cut, nested, req_bool, req_str,
)
from core.grading import extract_answer, gold_from_gsm8k

SOURCE = "model-solutions"
_A_LINE = re.compile(r"^A:[ \t]*(\S[^\n]*?)\s*$", re.MULTILINE)


def stated_answer(text: str) -> str | None:
    """The answer a GSM8K-style solution states: `#### n`, else a last `A: n` line."""
    if "####" in text:
        try:
            return gold_from_gsm8k(text)
        except StepScopeError:  # a '####' without a number: try the 'A:' form
            pass
    matches = _A_LINE.findall(text)
    return matches[-1].replace(",", "") if matches else None


def _model_solution(name: str, value: dict) -> Trajectory:
    solution = nested(name, lambda: req_str(value, "solution", nonempty=True))
    correct = nested(name, lambda: req_bool(value, "is_correct"))
    final = stated_answer(solution) or extract_answer(solution).value
    return Trajectory(
        source=SOURCE, model=name, solution=solution, segmentations=[cut(solution, "line")],
        final_answer=final, correct=correct,
    )


def parse(obj: dict, options: ImportOptions) -> list[Item]:
    question = req_str(obj, "question", nonempty=True)
    ground_truth = req_str(obj, "ground_truth", nonempty=True)
    gold = stated_answer(ground_truth)
    if gold is None:
        raise RecordError("ground_truth states no final answer (a last line 'A: n' or '#### n')")
    trajectories = [reference_trajectory(ground_truth, gold)]
    meta = {}
    for key, value in obj.items():
        if key in ("question", "ground_truth"):
            continue
        if isinstance(value, dict) and "solution" in value:
            trajectories.append(_model_solution(key, value))
        else:
            meta[key] = value
    return [Item(Problem(options.dataset_or("gsm8k"), question, gold, meta), trajectories)]


IMPORTER = Importer(
    name="model-solutions",
    description="question + ground_truth + named model solutions {solution, is_correct}",
    default_dataset="gsm8k",
    parse=parse,
)
