"""The sample set StepScope ships: small arithmetic word problems written for the project.

One-step problems are the ones the embedded 135M model solves some of the time under the
few-shot prompt in core/prompts/policy_fewshot.txt, so Monte Carlo step values on them are
informative; two-step problems are there to show where it fails. Every gold answer is an
integer. A fresh database loads this set as dataset "sample".
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

SAMPLE_FILE = "sample_problems.jsonl"


@dataclass(frozen=True)
class SampleProblem:
    question: str
    gold: str
    meta: dict[str, Any] = field(default_factory=dict)


def load_sample_problems() -> list[SampleProblem]:
    text = resources.files(__package__).joinpath(SAMPLE_FILE).read_text(encoding="utf-8")
    problems = []
    for line in text.splitlines():
        if line.strip():
            record = json.loads(line)
            meta = {"id": record["id"], "steps": record["steps"]}
            problems.append(SampleProblem(record["question"], str(record["gold"]), meta))
    return problems
