"""A verifier's identity is data (core.store.verifiers): the migration that classifies the
verdicts of a store made before it, the kind a writer gives, and a name one kind holds."""

from __future__ import annotations

import sqlite3

import pytest
from sqlite_utils import Database

from core.errors import StepScopeError
from core.store import MIGRATIONS, Store


def release_store(path):
    """A store as the release before verifier kinds leaves it: the schema up to migration 0005,
    the sample set, and verdicts under the names and job kinds that release wrote."""
    db = Database(sqlite3.connect(path))
    MIGRATIONS.apply(db, stop_before="0006_verifier_identity")
    conn = db.conn
    conn.execute("INSERT INTO trajectories (key, problem_id, source, solution, created_at)"
                 " VALUES ('t', 1, 'reference', 'a\nb', 'x')")  # fmt: skip
    conn.execute("INSERT INTO segmentations (trajectory_id, rule, key, created_at) VALUES (1, 'line', 's', 'x')")
    conn.execute("UPDATE trajectories SET current_segmentation_id = 1")
    conn.execute("INSERT INTO steps (segmentation_id, trajectory_id, idx, text, start_char, end_char)"
                 " VALUES (1, 1, 0, 'a', 0, 1)")  # fmt: skip
    # (stored name, the job kind that wrote it and its mode, the kind it must be classified as):
    # every verdict writer of that release, with its default names and with --name.
    written = [
        ("smollm2-135m", "judge", "logprob", "judge"),
        ("smollm2-135m:generative", "judge", "generative", "judge"),
        ("my-judge", "judge", "logprob", "judge"),
        ("prm:math-shepherd", "prm-score", None, "prm"),
        ("foo", "prm-score", None, "prm"),  # `stepscope prm score --name foo`
        ("probe-orm:smollm2-135m", "train-verifier", None, "probe"),
        ("probe-prm-mc-hard:smollm2-135m", "probe-judge", "probe", "probe"),
        ("old-probe", "judge", "probe", "probe"),  # probe judging before it had its own job kind
        ("orm:random-init", "train-orm", None, "orm"),
        ("orm-scores", "orm-score", None, "orm"),
        ("prm:imported", None, None, "prm"),  # imported without its job: the old default name's prefix
        ("imported-judge", None, None, "judge"),
    ]
    for i, (name, job_kind, mode, _) in enumerate(written):
        job_id = None
        if job_kind:
            manifest = '{"mode": "%s"}' % mode if mode else "{}"
            job_id = conn.execute("INSERT INTO jobs (key, kind, status, manifest, created_at) VALUES (?, ?, 'done', ?, 'x')",
                                  [f"job{i}", job_kind, manifest]).lastrowid  # fmt: skip
        conn.execute("INSERT INTO verdicts (key, trajectory_id, step_id, job_id, judge, kind, p_yes, created_at)"
                     " VALUES (?, 1, 1, ?, ?, 'step', 0.5, 'x')", [f"v{i}", job_id, name])  # fmt: skip
    conn.commit()
    conn.close()
    return {name: kind for name, _, _, kind in written}


def test_the_migration_classifies_every_verdict_of_a_release_store(tmp_path):
    path = tmp_path / "release.db"
    expected = release_store(path)
    store = Store.open(path)
    assert store.verifier_kinds() == expected
    unclassified = store._scalar("SELECT COUNT(*) FROM verdicts WHERE judge NOT IN (SELECT name FROM verifiers)")
    assert unclassified == 0
    assert [v["verifier_kind"] for v in store.verdicts(1) if v["judge"] == "foo"] == ["prm"]


def test_a_name_holds_one_kind_and_the_refusal_writes_nothing(tmp_path):
    store = Store.open(tmp_path / "s.db")
    problem = store.add_problem("d", "1 + 1?", "2")
    trajectory = store.add_trajectory(problem, "one\ntwo", source="reference")
    step = store.steps(trajectory)[0]["id"]
    store.add_verdicts([{"step_id": step, "judge": "foo", "kind": "step", "p_yes": 0.7}], verifier_kind="prm",
                       fingerprint="f1")  # fmt: skip
    with pytest.raises(StepScopeError, match="'foo' already names a prm verifier"):
        store.add_verdicts([{"step_id": step, "judge": "foo", "kind": "step", "p_yes": 0.1},
                            {"step_id": step, "judge": "bar", "kind": "step", "p_yes": 0.1}])  # a judge's
    assert [v["p_yes"] for v in store.verdicts(trajectory)] == [0.7]  # nothing of the refused call
    assert store.verifiers() == [{"name": "foo", "kind": "prm", "fingerprint": "f1"}]
    with pytest.raises(StepScopeError, match="a verifier kind is one of"):
        store.add_verdicts([{"step_id": step, "judge": "baz", "kind": "step"}], verifier_kind="oracle")
    assert store.judges() == ["foo"]


def test_a_dump_keeps_each_verifier_kind_and_an_old_dump_is_classified(tmp_path):
    import json

    from core.formats import export_file, import_file

    store = Store.open(tmp_path / "a.db")
    problem = store.add_problem("d", "1 + 1?", "2")
    trajectory = store.add_trajectory(problem, "one\ntwo", source="reference")
    step = store.steps(trajectory)[0]["id"]
    store.add_verdicts([{"step_id": step, "judge": "foo", "kind": "step", "p_yes": 0.7}], verifier_kind="prm")
    store.add_verdicts([{"trajectory_id": trajectory, "judge": "orm:x", "kind": "outcome", "p_yes": 0.2}],
                       verifier_kind="orm")  # fmt: skip
    dump = tmp_path / "dump.jsonl"
    export_file(store, "jsonl", dump, dataset="d")
    copy = Store.open(tmp_path / "b.db")
    import_file(copy, dump, "jsonl")
    assert copy.verifier_kinds() == {"foo": "prm", "orm:x": "orm"}

    # A dump written before kinds were stored has no verifier_kind: read as the migration reads.
    lines = [json.loads(line) for line in dump.read_text().splitlines()]
    for line in lines:
        for v in [*line.get("trajectory", {}).get("verdicts", []),
                  *[v for s in line.get("trajectory", {}).get("segmentations", [{}])[0].get("steps", [])
                    for v in s.get("verdicts", [])]]:  # fmt: skip
            v.pop("verifier_kind")
    old = tmp_path / "old.jsonl"
    old.write_text("".join(json.dumps(line) + "\n" for line in lines))
    legacy = Store.open(tmp_path / "c.db")
    import_file(legacy, old, "jsonl")
    assert legacy.verifier_kinds() == {"foo": "judge", "orm:x": "orm"}  # no job, so foo's kind was lost with it
