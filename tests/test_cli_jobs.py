"""The job commands end to end on the tiny model, as a user runs them: `stepscope estimate` with
each strategy, `stepscope generate` interrupted and resumed, `jobs list` and `jobs cancel`, and
the bounds the CLI shares with the app."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli_runner import assert_one_line_error, run_cli
from core.grading import grade
from core.jobs.estimate import EstimateSpec, default_sampling
from core.jobs.runner import queue
from core.mcpe import Adaptive, Counts, FirstErrorSearch
from core.policy import DEFAULT_TEMPLATE, load_template
from core.store import Store

ONE_THREAD = {"OMP_NUM_THREADS": "1"}
# Correct, wrong, wrong: a correct final answer settles first-error search without sampling.
SOLUTIONS = [
    ("Tom has 8 + 5 = 13 apples.\nThe answer is 13.", "13"),
    ("First, 6 * 4 = 24.\nThen 24 - 4 = 20.\nThe answer is 20.", "21"),
    ("The baker sells 24 - 9 = 15.\nSo 15 muffins are left.\nThe answer is 15.", "16"),
]


def seeded(db: Path) -> list[int]:
    store = Store.open(db)
    ids = []
    for i, (solution, gold) in enumerate(SOLUTIONS):
        problem = store.add_problem("cli-jobs", f"Problem {i}?", gold)
        ids.append(store.add_trajectory(problem, solution, source="test", rule="line"))
    store.close()
    return ids


def stored_counts(store: Store, trajectory_id: int, policy: str) -> list[Counts]:
    steps = [s["id"] for s in store.steps(trajectory_id)]
    counts = store.step_value_counts(steps, model=policy)
    return [Counts(*counts[s]) for s in steps]


def estimate(db: Path, policy: str, ids: list[int], *args: str):
    return run_cli("estimate", "--policy", policy, "--trajectories", ",".join(map(str, ids)), "--max-new-tokens",
                   "8", "--device", "cpu", "--db", str(db), *args, env=ONE_THREAD)  # fmt: skip


def test_estimate_says_when_its_table_shows_only_the_first_trajectories(tmp_path, tiny_model_dir):
    db = tmp_path / "many.db"
    store = Store.open(db)
    # Correct solutions: the first-error search needs no rollout for them, so the job ends at once.
    ids = [store.add_trajectory(store.add_problem("many", f"What is {i} + 1?", str(i + 1)),
                                f"{i} + 1 = {i + 1}.\nThe answer is {i + 1}.", source="test", rule="line")
           for i in range(11)]  # fmt: skip
    result = estimate(db, str(tiny_model_dir), ids, "--strategy", "first-error")
    assert result.returncode == 0, result.stderr
    assert "the first 10 of 11 trajectories shown" in " ".join(result.stdout.split())


@pytest.mark.parametrize("strategy", [FirstErrorSearch(round_size=4, max_per_step=8),
                                      Adaptive(round_size=4, max_per_step=8)], ids=lambda s: s.name)  # fmt: skip
def test_estimate_with_a_strategy_ends_where_the_strategy_is_satisfied(strategy, tmp_path, tiny_model_dir):
    db, policy = tmp_path / "estimate.db", str(tiny_model_dir)
    ids = seeded(db)
    result = estimate(db, policy, ids, "--strategy", strategy.name, "--n", "8", "--round-size", "4")
    assert result.returncode == 0, result.stderr
    store = Store.open(db)
    [job] = store.list_jobs()
    assert job["status"] == "done" and job["manifest"]["strategy"] == strategy.describe()
    spent = 0
    for trajectory_id in ids:
        counts = stored_counts(store, trajectory_id, policy)
        trajectory = store.get_trajectory(trajectory_id)
        outcome = grade(trajectory["solution"], trajectory["gold"]).correct
        # Finished means the strategy asks for nothing more given what is stored, and no step got
        # more than its most, in whole rounds.
        assert strategy.request(counts, outcome) == [0] * len(counts), (trajectory_id, counts)
        assert all(c.n <= 8 and c.n % 4 == 0 for c in counts), counts
        spent += sum(c.n for c in counts)
    assert job["done"] == job["planned"] == spent > 0
    if strategy.name == "first-error":
        # The correct trajectory needs no rollout; a wrong one is searched, not sampled everywhere.
        assert sum(c.n for c in stored_counts(store, ids[0], policy)) == 0
        assert spent < 8 * sum(len(store.steps(t)) for t in ids[1:])
    else:
        # With the hard label, a step is done after one success or after all 8 failures.
        for trajectory_id in ids:
            assert all(c.correct > 0 or c.n == 8 for c in stored_counts(store, trajectory_id, policy))
    assert f"job {job['id']} done" in result.stdout


def test_n_out_of_bounds_is_refused_by_the_cli_as_by_the_app(tmp_path, tiny_model_dir):
    from core.errors import StepScopeError
    from core.views.jobs import EstimateRequest, queue_estimate

    db = tmp_path / "bounds.db"
    ids = seeded(db)
    with pytest.raises(StepScopeError) as app_error:
        queue_estimate(Store.open(db), EstimateRequest(policy=str(tiny_model_dir), n=257), ids)
    line = assert_one_line_error(estimate(db, str(tiny_model_dir), ids, "--n", "257"), "256", "257")
    assert line == f"error: {app_error.value}"
    assert Store.open(db).list_jobs() == []  # refused before anything was queued


def test_jobs_list_and_cancel(tmp_path, tiny_model_dir):
    db = tmp_path / "cancel.db"
    ids = seeded(db)
    store = Store.open(db)
    job_id = queue(store, EstimateSpec(policy=str(tiny_model_dir), trajectory_ids=tuple(ids), n=2,
                                       sampling=default_sampling(8)))  # fmt: skip
    listed = run_cli("jobs", "list", "--db", str(db))
    assert listed.returncode == 0, listed.stderr
    [row] = [line for line in listed.stdout.splitlines() if f" {job_id} " in line]
    assert "estimate" in row and "queued" in row and "0/" in row

    cancelled = run_cli("jobs", "cancel", str(job_id), "--db", str(db))
    assert cancelled.returncode == 0, cancelled.stderr
    assert f"job {job_id} cancelled" in cancelled.stdout
    assert store.get_job(job_id)["status"] == "cancelled"
    assert "cancelled" in run_cli("jobs", "list", "--db", str(db)).stdout
    for again in (str(job_id), "999"):  # already cancelled; no such job
        assert_one_line_error(run_cli("jobs", "cancel", again, "--db", str(db)), f"job {again} is not queued or running")

    # A cancelled job resumes to its end from the CLI.
    resumed = run_cli("jobs", "resume", str(job_id), "--db", str(db), env=ONE_THREAD)
    assert resumed.returncode == 0, resumed.stderr
    assert store.get_job(job_id)["status"] == "done"


def solutions_by_problem(store: Store, policy: str) -> dict[int, set[int]]:
    found: dict[int, set[int]] = {}
    for row in store.list_trajectories(dataset="generate-test", source="policy", model=policy):
        found.setdefault(row["problem_id"], set()).add(row["id"])
    return found


def engine_calls(log: Path, interrupt_at: int | None = None) -> str:
    """A prelude for the CLI's subprocess: every engine call appends its prompts to `log` (a JSON
    list a line), and call number `interrupt_at` sends the process SIGINT first, a Ctrl-C that
    lands while the model works.

    A control point, not a race: the test used to send SIGINT once the first solutions were
    stored, and the tiny model could finish the whole job before the signal landed. The hook
    lives in the test, not in core/, because only a test needs to interrupt a job at a chosen call.
    """
    return f"""
import json, signal, threading
# Ctrl-C as in a terminal: a process started in the background (`pytest ... &` in a script, some
# CI runners) inherits SIGINT ignored, and Python then leaves it ignored.
signal.signal(signal.SIGINT, signal.default_int_handler)
from core.engines.transformers_engine import TransformersEngine
_generate, _calls = TransformersEngine.generate, [0]
def _logged_generate(self, prompts, params):
    _calls[0] += 1
    with open({str(log)!r}, "a", encoding="utf-8") as file:
        file.write(json.dumps(list(prompts)) + "\\n")
    if _calls[0] == {interrupt_at!r}:
        # Python runs signal handlers in the main thread only: elsewhere Ctrl-C would land later.
        assert threading.current_thread() is threading.main_thread(), "the engine ran off the main thread"
        signal.raise_signal(signal.SIGINT)  # the default handler raises KeyboardInterrupt right here
        raise AssertionError("SIGINT did not interrupt the engine call")
    return _generate(self, prompts, params)
TransformersEngine.generate = _logged_generate
"""


def asked(log: Path, problem_of: dict[str, int]) -> list[list[int]]:
    """The problems each engine call of a run was asked for, in order (no calls: no file)."""
    if not log.exists():
        return []
    return [[problem_of[prompt] for prompt in json.loads(line)] for line in log.read_text(encoding="utf-8").splitlines()]


def test_generate_interrupted_then_resumed_stores_no_duplicates(tmp_path, tiny_model_dir):
    db, policy, k = tmp_path / "generate.db", str(tiny_model_dir), 2
    store = Store.open(db)
    # 32 problems: four engine calls of 8 (run_generate's problems_per_call); Ctrl-C lands in the second.
    problems = [store.add_problem("generate-test", f"What is {i} + 1?", str(i + 1)) for i in range(32)]
    template = load_template(DEFAULT_TEMPLATE)
    problem_of = {template.render(store.get_problem(p)["question"]): p for p in problems}
    interrupted_log, resumed_log = tmp_path / "interrupted.jsonl", tmp_path / "resumed.jsonl"
    args = ["--policy", policy, "--dataset", "generate-test", "--k", str(k), "--max-new-tokens", "24",
            "--device", "cpu", "--db", str(db)]  # fmt: skip

    interrupted = run_cli("generate", *args, env=ONE_THREAD, python_prelude=engine_calls(interrupted_log, 2))
    # Ctrl-C's exit status (typer turns KeyboardInterrupt into exit 130) and one line saying so, not a crash.
    assert interrupted.returncode == 130 and "Traceback" not in interrupted.stderr, interrupted.stderr
    assert interrupted.stderr.strip().splitlines()[-1] == "aborted", interrupted.stderr
    calls = asked(interrupted_log, problem_of)
    assert len(calls) == 2, calls  # the interruption stopped the job in its second engine call
    before = solutions_by_problem(store, policy)
    [job] = store.list_jobs()
    # The first call's solutions are stored and counted; the interrupted call's are neither.
    assert before and set(before) <= set(calls[0]), (sorted(before), calls)
    assert job["status"] != "done" and job["done"] == k * len(calls[0]), job
    # The interrupted runner's last heartbeat is fresh, but its process is gone: resumed at once.

    resumed = run_cli("jobs", "resume", str(job["id"]), "--db", str(db), env=ONE_THREAD,
                      python_prelude=engine_calls(resumed_log), timeout=600)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    # Nothing redone: the resumed job asks the engine, once each, for exactly the problems that
    # have no stored solution (the interrupted call's, the rest, and any whose samples all came
    # back empty, since an empty sample is counted but not stored).
    asked_again = [p for call in asked(resumed_log, problem_of) for p in call]
    assert sorted(asked_again) == sorted(set(problems) - set(before)), (sorted(before), asked_again)
    after = solutions_by_problem(store, policy)
    finished = store.get_job(job["id"])
    # Every problem sampled once: k samples each, counted once (an empty sample is counted, not stored).
    assert (finished["status"], finished["done"], finished["planned"]) == ("done", k * len(problems), k * len(problems))
    assert set(after) <= set(problems)
    # What was stored before the interruption is kept as it was: those problems were not redone.
    assert {p: after[p] for p in before} == before
    for problem, trajectory_ids in after.items():
        assert len(trajectory_ids) <= k, problem
        samples = [store.get_trajectory(t)["meta"]["sample"] for t in trajectory_ids]
        assert len(set(samples)) == len(samples), (problem, samples)
