"""GSM8K (`question`, `answer` ending in `#### n`): problems with their gold answers.

The worked `answer` also becomes a reference trajectory (source "reference", correct), kept
exactly as written, calculator annotations `<<3*4=12>>` and the final `#### n` line included,
and segmented by line.
"""

from __future__ import annotations

from core.formats.base import Importer, ImportOptions
from core.formats.records import Item, Problem, Trajectory, cut, req_str
from core.grading import gold_from_gsm8k

REFERENCE_SOURCE = "reference"


def reference_trajectory(solution: str, gold: str) -> Trajectory:
    return Trajectory(
        source=REFERENCE_SOURCE, solution=solution, segmentations=[cut(solution, "line")],
        final_answer=gold, correct=True,
    )


def parse(obj: dict, options: ImportOptions) -> list[Item]:
    question = req_str(obj, "question", nonempty=True)
    answer = req_str(obj, "answer", nonempty=True)
    gold = gold_from_gsm8k(answer)
    # Anything else on the line (an id, a split name) is kept with the problem.
    meta = {k: v for k, v in obj.items() if k not in ("question", "answer")}
    problem = Problem(options.dataset_or("gsm8k"), question, gold, meta)
    return [Item(problem, [reference_trajectory(answer, gold)])]


IMPORTER = Importer(
    name="gsm8k",
    description="GSM8K JSONL: question + worked answer ending in '#### n'",
    default_dataset="gsm8k",
    parse=parse,
)
