"""The SQLite store on real database files: schema, sample set, queries, threads."""

from __future__ import annotations

import re
import sqlite3
import threading

import pytest

from core.errors import StepScopeError
from core.steps import join_steps
from core.store import SAMPLE_DATASET, Store, default_db_path


@pytest.fixture
def store(tmp_path) -> Store:
    s = Store(tmp_path / "db" / "stepscope.db")
    yield s
    s.close()


def add_example(store: Store, solution: str = "2 + 3 = 5.\nThen 5 * 4 = 20.\nThe answer is 20.") -> int:
    problem_id = store.add_problem("unit", "What is (2 + 3) * 4?", "20")
    return store.add_trajectory(problem_id, solution, source="policy", model="m", rule="line",
                                final_answer="20", correct=True)


# --- opening and the sample set ---------------------------------------------------------------


def test_fresh_database_has_the_sample_set(store):
    problems = store.list_problems(dataset=SAMPLE_DATASET)
    assert len(problems) == 60
    kinds = [p["meta"]["steps"] for p in problems]
    assert kinds.count(1) == 40 and kinds.count(2) == 20
    assert all(re.fullmatch(r"-?\d+", p["gold"]) for p in problems)
    assert len({p["question"] for p in problems}) == 60
    assert store.datasets() == [{"dataset": "sample", "problems": 60}]


def test_sample_gold_answers_are_right():
    # A few spot checks written out by hand; the set is small enough to trust the rest by review.
    from core.samples import load_sample_problems

    by_question = {p.question: p.gold for p in load_sample_problems()}
    assert by_question["A baker has 24 muffins and sells 9. How many muffins are left?"] == "15"
    assert by_question["A toy costs 8 dollars. Nora buys 4 toys and pays with a 50-dollar bill. "
                       "How many dollars of change does she get?"] == "18"


def test_policy_prompt_has_question_placeholder_and_multi_step_examples():
    from importlib import resources

    prompt = resources.files("core").joinpath("prompts/policy_fewshot.txt").read_text("utf-8")
    assert prompt.count("{question}") == 1
    assert prompt.count("The answer is ") == 4  # the instruction and three worked examples
    # Worked examples of 1, 2 and 3 calculations: with one-step examples only, the policy
    # answered after its first calculation whatever the problem.
    answers = [a.split("\nThe answer is")[0] for a in prompt.split("Answer:")[1:-1]]
    assert [a.count(" = ") for a in answers] == [1, 2, 3]
    assert prompt.endswith("Question: {question}\nAnswer:")


def test_reopen_applies_nothing_twice(tmp_path):
    path = tmp_path / "x.db"
    first = Store(path)
    first.conn.execute("DELETE FROM problems WHERE dataset = 'sample'")
    applied = first.applied_migrations()
    first.close()
    again = Store(path)
    assert applied[:2] == ["0001_schema", "0002_sample_set"] and again.applied_migrations() == applied
    assert again.counts()["problems"] == 0  # a deleted sample set stays deleted


def test_wal_foreign_keys_and_busy_timeout(store):
    assert store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert store.conn.execute("PRAGMA busy_timeout").fetchone()[0] >= 1000
    with pytest.raises(sqlite3.IntegrityError):
        store.conn.execute(
            "INSERT INTO steps (segmentation_id, trajectory_id, idx, text, start_char, end_char)"
            " VALUES (999, 999, 0, 'x', 0, 1)"
        )


def test_not_a_database_is_a_clear_error(tmp_path):
    path = tmp_path / "notes.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StepScopeError, match="cannot open database"):
        Store(path)


def test_default_path_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("STEPSCOPE_DB", str(tmp_path / "env.db"))
    assert default_db_path() == tmp_path / "env.db"
    monkeypatch.delenv("STEPSCOPE_DB")
    assert str(default_db_path()) == "data/stepscope.db"


# --- problems, trajectories, steps ------------------------------------------------------------


def test_trajectory_steps_are_exact_spans(store):
    solution = "2 + 3 = 5.\nThen 5 * 4 = 20.\nThe answer is 20."
    trajectory_id = add_example(store, solution)
    steps = store.steps(trajectory_id)
    assert [s["text"] for s in steps] == ["2 + 3 = 5.", "Then 5 * 4 = 20.", "The answer is 20."]
    assert all(solution[s["start_char"]:s["end_char"]] == s["text"] for s in steps)
    assert [s["idx"] for s in steps] == [0, 1, 2]
    t = store.get_trajectory(trajectory_id)
    assert t["rule"] == "line" and t["correct"] is True and t["question"] == "What is (2 + 3) * 4?"


def test_adding_the_same_things_twice_adds_nothing(store):
    first = add_example(store)
    before = store.counts()
    assert add_example(store) == first
    assert store.counts() == before


def test_pre_split_trajectory(store):
    problem_id = store.add_problem("unit", "q", None)
    solution, spans = join_steps(["a", "b c"], separator="\n\n")
    trajectory_id = store.add_trajectory(problem_id, solution, source="x", rule="pre-split", spans=spans)
    assert store.step_spans(trajectory_id) == spans
    with pytest.raises(StepScopeError, match="pre-split"):
        store.add_trajectory(problem_id, "other", source="x", rule="pre-split")


def test_spans_that_do_not_match_the_text_are_refused(store):
    from core.steps import StepSpan

    problem_id = store.add_problem("unit", "q", None)
    with pytest.raises(StepScopeError, match="does not match"):
        store.add_trajectory(problem_id, "abc", source="x", rule="pre-split", spans=[StepSpan("abd", 0, 3)])
    assert store.count_trajectories() == 0  # the failed add left nothing behind


def test_list_trajectories_filters(store):
    trajectory_id = add_example(store)
    other = store.add_problem("other", "q2", "1")
    store.add_trajectory(other, "1", source="reference", rule="line", correct=False)
    assert [t["id"] for t in store.list_trajectories(dataset="unit")] == [trajectory_id]
    assert [t["n_steps"] for t in store.list_trajectories(source="policy")] == [3]
    assert len(store.list_trajectories(correct=False)) == 1
    assert store.count_trajectories(model="m") == 1
    assert len(store.list_trajectories(limit=1, offset=1)) == 1


# --- annotations ------------------------------------------------------------------------------


def test_save_annotation_upserts_and_keeps_untouched_fields(store, tmp_path):
    trajectory_id = add_example(store)
    step = store.steps(trajectory_id)[1]
    saved = store.save_annotation("alice", step["id"], rating=1, note="checked")
    assert saved["rating"] == 1 and saved["note"] == "checked" and saved["flagged"] is False
    updated = store.save_annotation("alice", step["id"], rating=-1)
    assert updated["rating"] == -1 and updated["note"] == "checked"
    assert updated["created_at"] == saved["created_at"] and updated["updated_at"] >= saved["updated_at"]
    cleared = store.save_annotation("alice", step["id"], rating=None, flagged=True)
    assert cleared["rating"] is None and cleared["flagged"] is True
    assert len(store.annotations(trajectory_id)) == 1
    # Committed before returning: a second, independent connection sees it.
    other = Store(store.path)
    assert other.annotation("alice", step["id"])["flagged"] is True
    other.close()


def test_first_error_is_one_step_per_annotator(store):
    trajectory_id = add_example(store)
    steps = store.steps(trajectory_id)
    store.save_annotation("alice", steps[0]["id"], first_error=True)
    store.save_annotation("bob", steps[0]["id"], first_error=True)
    store.save_annotation("alice", steps[2]["id"], first_error=True)
    marks = {(a["annotator"], a["idx"]): a["first_error"] for a in store.annotations(trajectory_id)}
    assert marks == {("alice", 0): False, ("alice", 2): True, ("bob", 0): True}


def test_bad_annotations_are_refused(store):
    trajectory_id = add_example(store)
    step_id = store.steps(trajectory_id)[0]["id"]
    with pytest.raises(StepScopeError, match="rating"):
        store.save_annotation("alice", step_id, rating=2)
    with pytest.raises(StepScopeError, match="rating"):
        store.save_annotation("alice", step_id, rating=True)
    with pytest.raises(StepScopeError, match="does not exist"):
        store.save_annotation("alice", 10_000, rating=1)
    with pytest.raises(StepScopeError, match="name"):
        store.save_annotation("  ", step_id, rating=1)
    assert store.counts()["annotations"] == 0


def test_resegmenting_keeps_old_annotations_on_old_steps(store):
    solution = "First we add 2 and 3. That gives 5.\nThen 5 * 4 = 20.\nThe answer is 20."
    trajectory_id = add_example(store, solution)
    old_steps = store.steps(trajectory_id)
    store.save_annotation("alice", old_steps[0]["id"], rating=-1, first_error=True, note="wrong")

    new_segmentation = store.resegment(trajectory_id, "sentence")
    new_steps = store.steps(trajectory_id)
    assert [s["segmentation_id"] for s in new_steps] == [new_segmentation] * len(new_steps)
    assert [s["text"] for s in new_steps][:2] == ["First we add 2 and 3.", "That gives 5."]
    # The label stays on the step (and the exact text) it was made on.
    (annotation,) = store.annotations(trajectory_id)
    assert annotation["step_id"] == old_steps[0]["id"]
    assert store.get_step(annotation["step_id"])["text"] == "First we add 2 and 3. That gives 5."
    assert store.annotations(trajectory_id, segmentation_id=new_segmentation) == []
    assert store.steps(trajectory_id, old_steps[0]["segmentation_id"]) == old_steps
    assert [s["current"] for s in store.segmentations(trajectory_id)] == [False, True]
    # Going back to the first rule reuses that segmentation instead of a copy.
    assert store.resegment(trajectory_id, "line") == old_steps[0]["segmentation_id"]
    assert len(store.segmentations(trajectory_id)) == 2


# --- rollouts, values, verdicts, jobs ---------------------------------------------------------


def test_rollouts_and_step_values(store):
    trajectory_id = add_example(store)
    steps = store.steps(trajectory_id)
    job_id = store.create_job("mcpe", {"model": "m", "n": 4}, planned=4)
    added = store.add_rollouts(
        [{"step_id": steps[0]["id"], "text": f"... {a}", "answer": a, "correct": a == "20",
          "num_tokens": 5, "finish_reason": "stop", "seed": i, "model": "m", "job_id": job_id, "key": f"r{i}"}
         for i, a in enumerate(["20", "19", "20", "7"])]
    )
    assert added == 4
    assert store.add_rollouts([{"step_id": steps[0]["id"], "text": "dup", "correct": True, "key": "r0"}]) == 0
    values = store.step_values(trajectory_id)
    assert values[0] == {"step_id": steps[0]["id"], "idx": 0, "n": 4, "n_correct": 2, "soft": 0.5, "hard": True}
    assert values[1]["n"] == 0 and values[1]["soft"] is None
    assert store.step_value_counts([steps[0]["id"]], model="other") == {steps[0]["id"]: (0, 0)}
    view = store.conn.execute("SELECT n, n_correct, soft, hard FROM step_values").fetchall()
    assert view == [(4, 2, 0.5, 1)]


def test_a_bad_rollout_batch_stores_nothing(store):
    trajectory_id = add_example(store)
    step_id = store.steps(trajectory_id)[0]["id"]
    with pytest.raises(StepScopeError, match="rollouts"):
        store.add_rollouts([{"step_id": step_id, "text": "ok", "correct": True},
                            {"step_id": 424242, "text": "no such step", "correct": False}])
    assert store.counts()["rollouts"] == 0


def test_verdicts(store):
    trajectory_id = add_example(store)
    steps = store.steps(trajectory_id)
    n = store.add_verdicts([
        {"step_id": steps[0]["id"], "judge": "j", "kind": "step", "p_yes": 0.8, "mass": 0.9,
         "template": "yn", "template_hash": "abc"},
        {"trajectory_id": trajectory_id, "judge": "j", "kind": "outcome", "p_yes": 0.1},
    ])
    assert n == 2
    rows = store.verdicts(trajectory_id)
    assert [(v["kind"], v["idx"]) for v in rows] == [("step", 0), ("outcome", None)]
    assert store.judges() == ["j"]
    with pytest.raises(StepScopeError):
        store.add_verdicts([{"trajectory_id": trajectory_id, "judge": "j", "kind": "step"}])
    with pytest.raises(StepScopeError):
        store.add_verdicts([{"step_id": steps[0]["id"], "judge": "j", "kind": "vibes"}])


def test_jobs(store):
    job_id = store.create_job("mcpe", {"seed": 1}, planned=10)
    store.update_job(job_id, status="running", done=3, heartbeat_at="t")
    job = store.get_job(job_id)
    assert job["status"] == "running" and job["done"] == 3 and job["manifest"] == {"seed": 1}
    assert [j["id"] for j in store.list_jobs(status="running")] == [job_id]
    with pytest.raises(ValueError):
        store.update_job(job_id, status="exploded")
    with pytest.raises(ValueError):
        store.update_job(job_id, id=5)


def test_counts_by_annotator(store):
    trajectory_id = add_example(store)
    for step in store.steps(trajectory_id):
        store.save_annotation("alice", step["id"], rating=1)
    store.save_annotation("bob", step["id"], rating=0)
    counts = store.counts()
    assert counts["annotations"] == 4 and counts["steps"] == 3 and counts["problems"] == 61
    assert counts["annotations_by_annotator"] == {"alice": 3, "bob": 1}


# --- threads ----------------------------------------------------------------------------------


def test_each_thread_has_its_own_connection(store):
    seen = []
    thread = threading.Thread(target=lambda: seen.append(store.conn))
    thread.start()
    thread.join()
    assert seen[0] is not store.conn


def test_concurrent_writers_wait_instead_of_failing(store):
    trajectory_id = add_example(store)
    step_ids = [s["id"] for s in store.steps(trajectory_id)]
    errors = []

    def annotate(name: str) -> None:
        try:
            for i in range(30):
                store.save_annotation(name, step_ids[i % 3], rating=(i % 3) - 1)
                store.add_rollouts([{"step_id": step_ids[0], "text": name, "correct": True}])
        except Exception as error:  # the test reports any failure, including "database is locked"
            errors.append(error)

    threads = [threading.Thread(target=annotate, args=(f"a{i}",)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert store.counts()["annotations"] == 6 * 3
    assert store.counts()["rollouts"] == 6 * 30


def test_nested_transaction_rolls_back_as_one(store):
    with pytest.raises(RuntimeError):
        with store.transaction():
            store.add_problem("unit", "inner", None)
            with store.transaction():
                store.add_problem("unit", "inner 2", None)
            raise RuntimeError("boom")
    assert store.list_problems(dataset="unit") == []


def test_a_writer_that_never_gets_the_lock_gets_a_clear_error(tmp_path):
    path = tmp_path / "busy.db"
    holder = Store(path)
    waiter = Store(path, timeout=0.2)
    with holder.transaction():
        with pytest.raises(StepScopeError, match="busy"):
            waiter.add_problem("unit", "q", None)
    assert waiter.add_problem("unit", "q", None)  # free again once the holder commits
    holder.close()
    waiter.close()
