"""`stepscope trajectories` and `stepscope db info`'s breakdown (issue 24): what they show, and
that each is one query however many rows there are."""

from __future__ import annotations

import sys
from contextlib import contextmanager

import pytest

from cli_runner import run_cli
from core.cli import main
from core.store import Store


def _trajectory(store, dataset, question, source, model, correct, steps=3):
    problem = store.add_problem(dataset, question, "4")
    solution = "\n".join(f"step {i} of {question}" for i in range(steps))
    tid = store.add_trajectory(problem, solution, source=source, model=model, final_answer="4" if correct else "5",
                               correct=correct)  # fmt: skip
    return tid, [s["id"] for s in store.steps(tid)]


@pytest.fixture
def db(tmp_path):
    path = tmp_path / "s.db"
    store = Store.open(path)
    a, a_steps = _trajectory(store, "alpha", "What is 2 + 2?", "policy", "m1", True)
    b, b_steps = _trajectory(store, "alpha", "What is 1 + 3?", "policy", "m1", False, steps=2)
    c, c_steps = _trajectory(store, "alpha", "What is 3 + 1?", "policy", "m2", False)
    d, d_steps = _trajectory(store, "beta", "What is 0 + 4? " + "long " * 40, "gsm8k", None, None, steps=4)
    store.add_rollouts([{"step_id": a_steps[0], "text": "x", "correct": True}] * 3
                       + [{"step_id": c_steps[1], "text": "y", "correct": False}])  # fmt: skip
    store.add_verdicts([{"judge": "j", "kind": "step", "step_id": s, "trajectory_id": b, "p_yes": 0.5} for s in b_steps]
                       + [{"judge": "j", "kind": "outcome", "trajectory_id": d, "p_yes": 0.9}])  # fmt: skip
    store.save_annotation("ann", a_steps[0], rating=1)
    store.save_annotation("other", a_steps[0], rating=-1)  # the same step: labelled once
    store.save_annotation("ann", a_steps[1], first_error=True)
    store.save_annotation("ann", a_steps[2], note="only a note")  # not a label
    store.save_annotation("ann", d_steps[3], rating=0)
    store.close()
    return path, (a, b, c, d)


@contextmanager
def counted(store):
    statements = []
    store.conn.set_trace_callback(lambda sql: statements.append(sql) if sql.lstrip().upper().startswith(("SELECT", "WITH")) else None)
    try:
        yield statements
    finally:
        store.conn.set_trace_callback(None)


def test_the_breakdown_counts_per_dataset_source_and_model_in_one_query(db):
    path, _ = db
    store = Store.open(path)
    with counted(store) as statements:
        rows = store.breakdown()
    assert len(statements) == 1
    got = {(r["dataset"], r["source"], r["model"]):
           (r["trajectories"], r["steps"], r["labelled_steps"], r["rollouts"], r["verdicts"]) for r in rows}  # fmt: skip
    assert got == {
        ("alpha", "policy", "m1"): (2, 5, 2, 3, 2),
        ("alpha", "policy", "m2"): (1, 3, 0, 1, 0),
        ("beta", "gsm8k", None): (1, 4, 1, 0, 1),
    }


def test_db_info_shows_the_breakdown(db, tmp_path):
    path, _ = db
    result = run_cli("db", "info", "--db", str(path))
    assert result.returncode == 0, result
    assert "trajectories by dataset, source and model" in result.stdout
    line = next(ln for ln in result.stdout.splitlines() if "m2" in ln)
    assert [cell.strip() for cell in line.strip("│ ").split("│")] == ["alpha", "policy", "m2", "1", "3", "0", "1", "0"]


def _list(monkeypatch, capsys, *args):
    monkeypatch.setattr(sys, "argv", ["stepscope", "trajectories", *args])
    with pytest.raises(SystemExit) as exited:
        main()
    out, err = capsys.readouterr()
    assert exited.value.code == 0, err
    ids = [int(line.split("│")[1]) for line in out.splitlines() if line.startswith("│")]
    return ids, out, err


def test_trajectories_lists_with_filters_and_pages(db, monkeypatch, capsys):
    path, (a, b, c, d) = db
    monkeypatch.setenv("COLUMNS", "250")
    ids, out, _ = _list(monkeypatch, capsys, "--db", str(path))
    assert ids == [a, b, c, d]
    row = next(line for line in out.splitlines() if line.startswith(f"│ {d} "))
    cells = [cell.strip() for cell in row.strip("│ ").split("│")]
    assert cells[1:7] == ["beta", "gsm8k", "-", "4", "-", "5"]
    assert cells[7].startswith("What is 0 + 4? long") and cells[7].endswith("…") and len(cells[7]) == 60
    assert _list(monkeypatch, capsys, "--db", str(path), "--dataset", "alpha")[0] == [a, b, c]
    assert _list(monkeypatch, capsys, "--db", str(path), "--model", "m1")[0] == [a, b]
    assert _list(monkeypatch, capsys, "--db", str(path), "--source", "gsm8k")[0] == [d]
    assert _list(monkeypatch, capsys, "--db", str(path), "--correct")[0] == [a]
    assert _list(monkeypatch, capsys, "--db", str(path), "--incorrect")[0] == [b, c]
    ids, _, err = _list(monkeypatch, capsys, "--db", str(path), "--limit", "2", "--offset", "1")
    assert ids == [b, c] and "--offset 3" in err
    ids, _, err = _list(monkeypatch, capsys, "--db", str(path), "--dataset", "none")
    assert ids == [] and "no trajectories match" in err


def test_the_listing_is_one_query(db):
    path, _ = db
    store = Store.open(path)
    with counted(store) as statements:
        rows = store.list_trajectories(limit=50)
    assert len(rows) == 4 and len(statements) == 1
