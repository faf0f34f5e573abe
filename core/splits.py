"""Train/test splits by problem: what a trained verifier may learn from and what it is judged on.

Solutions of one problem share its answer, so a verifier evaluated on a problem it trained on
could recognise the problem instead of judging the solution: a split is always by problem,
never by solution. A synthetic problem (core/synth.py) carries its split in its meta ("train" or
"test", drawn from the hash of its template instance); any other problem is split by the hash
of its question text, so the same question lands on the same side in every dataset and every
run, and two datasets that share a question never straddle the split.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Mapping, Sequence

from core.errors import StepScopeError

SPLITS = ("train", "test")
DEFAULT_TEST_FRACTION = 0.5
_BUCKETS = 2**32  # the first 32 bits of the hash decide


def check_test_fraction(test_fraction: float) -> None:
    if not 0 < test_fraction < 1:
        raise StepScopeError(f"the test fraction is between 0 and 1 (exclusive), not {test_fraction:g}")


def question_split(question: str, test_fraction: float = DEFAULT_TEST_FRACTION) -> str:
    digest = hashlib.sha256(question.strip().encode("utf-8")).hexdigest()
    return "test" if int(digest[:8], 16) < test_fraction * _BUCKETS else "train"


def problem_split(problem: Mapping, test_fraction: float = DEFAULT_TEST_FRACTION) -> str:
    """"train" or "test": the split the problem's meta names, else by its question's hash."""
    meta = problem.get("meta") or {}
    named = meta.get("split") if isinstance(meta, Mapping) else None
    if named in SPLITS:
        return named
    return question_split(problem["question"], test_fraction)


def split_source(problem: Mapping) -> str:
    """Where `problem_split` took the split from: "meta" or "hash"."""
    meta = problem.get("meta") or {}
    return "meta" if isinstance(meta, Mapping) and meta.get("split") in SPLITS else "hash"


@dataclass
class Split:
    """Trajectories on each side of the split, and the problems they come from."""

    train: list[int]  # trajectory ids
    test: list[int]
    problems: dict[str, list[int]]  # "train" / "test" -> problem ids
    sources: dict[str, int]  # "meta" / "hash" -> problems split that way
    test_fraction: float

    def as_dict(self) -> dict:
        return {"test_fraction": self.test_fraction, "sources": self.sources,
                "train_problems": self.problems["train"], "test_problems": self.problems["test"],
                "train_trajectories": self.train, "test_trajectories": self.test}  # fmt: skip


def split_trajectories(store, trajectory_ids: Sequence[int], test_fraction: float = DEFAULT_TEST_FRACTION) -> Split:
    """The trajectories by their problem's split: never a problem on both sides."""
    check_test_fraction(test_fraction)
    split = Split([], [], {"train": [], "test": []}, {"meta": 0, "hash": 0}, test_fraction)
    side_of: dict[int, str] = {}
    for trajectory_id in dict.fromkeys(int(t) for t in trajectory_ids):
        trajectory = store.get_trajectory(trajectory_id)
        if trajectory is None:
            raise StepScopeError(f"trajectory {trajectory_id} does not exist")
        problem_id = trajectory["problem_id"]
        if problem_id not in side_of:
            problem = store.get_problem(problem_id)
            side_of[problem_id] = problem_split(problem, test_fraction)
            split.problems[side_of[problem_id]].append(problem_id)
            split.sources[split_source(problem)] += 1
        (split.train if side_of[problem_id] == "train" else split.test).append(trajectory_id)
    return split
