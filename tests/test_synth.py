"""Synthetic problems: right answers, disjoint splits, determinism, gradeable references."""

from __future__ import annotations

import operator
import re
from pathlib import Path

import pytest

from core.errors import StepScopeError
from core.grading import grade
from core.steps import segment
from core.store import Store
from core.synth import SCENARIOS, generate, parse_steps_range, write_synth

# The test's own reading of each operation, written apart from the generator's: if the
# generator computed an answer wrongly, this disagrees with it.
_RECOMPUTE = {
    "add": operator.add,
    "sub": operator.sub,
    "times": operator.mul,
    "price": operator.mul,
    "share": operator.floordiv,
}
_EQUATION = re.compile(r"(\d+) ([-+*/]) (\d+) = (\d+)")
_ARITHMETIC = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv}


def _recomputed_answer(ops: list[list]) -> int:
    kind, *numbers = ops[0]
    value = numbers[0] * numbers[1] if kind == "groups" else numbers[0]
    for kind, n in ops[1:]:
        if kind == "share":
            assert value % n == 0, "a share must divide evenly"
        value = _RECOMPUTE[kind](value, n)
        assert value > 0
    return value


@pytest.fixture(scope="module")
def problems():
    return generate((1, 6), 240, seed=7)


def test_answers_recomputed_from_the_drawn_numbers(problems):
    for problem in problems:
        ops = problem.meta()["ops"]
        assert problem.gold == _recomputed_answer(ops), problem.question
        # The drawn numbers are the ones the question states, in order.
        numbers_in_question = [int(n) for n in re.findall(r"\d+", problem.question)]
        assert numbers_in_question == [n for op in ops for n in op[1:]], problem.question
        steps_in_ops = len(ops) - 1 + (ops[0][0] == "groups")
        assert steps_in_ops == problem.steps


def test_reference_solutions_are_true_step_by_step_and_grade_correct(problems):
    for problem in problems:
        lines = [span.text for span in segment(problem.solution, "line")]
        assert len(lines) == problem.steps + 1, problem.solution
        previous = None
        for line in lines[:-1]:
            (left, symbol, right, result), = _EQUATION.findall(line)
            assert _ARITHMETIC[symbol](int(left), int(right)) == int(result), line
            if previous is not None:  # each step builds on the one before
                assert int(left) == previous, problem.solution
            previous = int(result)
        assert previous == problem.gold
        assert lines[-1] == f"The answer is {problem.gold}."
        graded = grade(problem.solution, str(problem.gold))
        assert graded.correct and graded.method == "answer-is", (problem.solution, graded)


def test_step_counts_follow_the_request_and_cover_the_range(problems):
    counts = {steps: sum(p.steps == steps for p in problems) for steps in range(1, 7)}
    assert counts == {steps: 40 for steps in range(1, 7)}
    assert {p.template.split("/")[0] for p in problems} == {s.name for s in SCENARIOS}
    assert len(SCENARIOS) >= 8
    assert all(0 < p.gold < 10_000 for p in problems)


def test_splits_share_no_instance_even_across_seeds():
    first, second = generate((1, 3), 300, seed=1), generate((1, 3), 300, seed=2)
    for batch in (first, second):
        instances = [p.instance for p in batch]
        assert len(set(instances)) == len(instances), "no instance twice in one set"
        train = {p.instance for p in batch if p.split == "train"}
        test = {p.instance for p in batch if p.split == "test"}
        assert train and test and not train & test
        # The question is determined by the instance, so no question leaks either.
        assert not {p.question for p in batch if p.split == "train"} & {
            p.question for p in batch if p.split == "test"
        }
    # An instance drawn by two seeds lands in the same split both times.
    split_by_instance = {p.instance: p.split for p in first}
    shared = [p for p in second if p.instance in split_by_instance]
    assert shared, "one-step problems overlap between 300-problem draws"
    assert all(split_by_instance[p.instance] == p.split for p in shared)


def test_generation_is_deterministic_per_seed():
    assert generate((2, 4), 30, seed=11) == generate((2, 4), 30, seed=11)
    other = generate((2, 4), 30, seed=12)
    assert [p.question for p in other] != [p.question for p in generate((2, 4), 30, seed=11)]


def test_steps_range_parsing_and_bad_requests():
    assert parse_steps_range("1-4") == (1, 4)
    assert parse_steps_range(" 3 ") == (3, 3)
    for bad in ("0-2", "4-1", "1-7", "x", "1-2-3", ""):
        with pytest.raises(StepScopeError, match="steps must be"):
            parse_steps_range(bad)
    with pytest.raises(StepScopeError, match="count"):
        generate((1, 2), 0, seed=0)


def test_write_synth_stores_problems_and_reference_trajectories(tmp_path: Path):
    store = Store(tmp_path / "synth.db")
    written = write_synth(store, "synth-a", (1, 3), 24, seed=5)
    assert sum(written.values()) == 24
    problems = store.list_problems(dataset="synth-a")
    assert len(problems) == 24
    by_split = {"train": 0, "test": 0}
    for problem in problems:
        meta = problem["meta"]
        by_split[meta["split"]] += 1
        assert int(problem["gold"]) == _recomputed_answer(meta["ops"])
        (trajectory,) = store.list_trajectories(problem_id=problem["id"])
        full = store.get_trajectory(trajectory["id"])
        assert full["source"] == "reference" and full["correct"] is True
        assert full["meta"]["split"] == meta["split"]
        assert full["meta"]["steps"] == meta["steps"]
        assert len(store.steps(trajectory["id"])) == meta["steps"] + 1  # + the answer line
    assert by_split == written
    # Same arguments again: nothing new.
    write_synth(store, "synth-a", (1, 3), 24, seed=5)
    assert len(store.list_problems(dataset="synth-a")) == 24
    assert store.count_trajectories() == 24


def test_cli_writes_a_synthetic_dataset(tmp_path: Path):
    from cli_runner import assert_one_line_error, run_cli

    db = tmp_path / "cli.db"
    args = ("problems", "synth", "--steps", "2-3", "--count", "10", "--seed", "3",
            "--dataset", "synth-cli", "--db", str(db))  # fmt: skip
    result = run_cli(*args, timeout=180)
    assert result.returncode == 0, result.stderr
    assert "dataset synth-cli: 10 problems" in result.stdout
    store = Store(db)
    stored = sorted(p["question"] for p in store.list_problems(dataset="synth-cli"))
    assert stored == sorted(p.question for p in generate((2, 3), 10, seed=3))
    assert {p["meta"]["steps"] for p in store.list_problems(dataset="synth-cli")} == {2, 3}
    bad = run_cli("problems", "synth", "--steps", "0-9", "--db", str(tmp_path / "no.db"))
    assert_one_line_error(bad, "steps must be")
    assert not (tmp_path / "no.db").exists()
