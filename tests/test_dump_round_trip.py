"""The jsonl dump imports back identically (issue 24, item 3): a grown rollout tree (nodes outside
any trajectory, stepless rollouts, search marks, branches) and job manifests that name rows by
id survive export -> import, into an empty file (byte-identical second dump) and into a file
whose ids differ (renumbered: manifests and links still name the same rows, compared by key)."""

from __future__ import annotations

import json

import pytest
from simulated_tree import SimulatedReasoner
from test_tree_search_job import ReasonerEngine, _anchor, _run, _spec

from core.errors import StepScopeError
from core.formats import export_file, import_file
from core.jobs.runner import queue
from core.store import Store


def _q(store: Store, sql: str, params=()) -> list[tuple]:
    return store.conn.execute(sql, params).fetchall()


def _counts(store: Store) -> dict[str, int]:
    one = lambda sql: _q(store, sql)[0][0]
    return {
        "nodes": one("SELECT COUNT(*) FROM nodes"), "rollouts": one("SELECT COUNT(*) FROM rollouts"),
        "stepless": one("SELECT COUNT(*) FROM rollouts WHERE step_id IS NULL"),
        "marks": one("SELECT COUNT(*) FROM tree_marks"),
        "branches": one("SELECT COUNT(*) FROM trajectories WHERE parent_rollout_id IS NOT NULL"),
        "trajectories": one("SELECT COUNT(*) FROM trajectories"), "jobs": one("SELECT COUNT(*) FROM jobs"),
    }  # fmt: skip


def _keys(store: Store, table: str) -> dict[int, str]:
    return dict(_q(store, f"SELECT id, key FROM {table}"))


def _tree(store: Store) -> dict:
    """The tree by content key, never by id: what must come back after a move."""
    trajectories, nodes, rollouts = _keys(store, "trajectories"), _keys(store, "nodes"), _keys(store, "rollouts")
    jobs = _keys(store, "jobs")
    key = lambda ids, i: None if i is None else ids[i]
    branch_meta = {}
    for tid, node, rollout, meta in _q(store, "SELECT id, parent_node_id, parent_rollout_id, meta FROM trajectories"
                                              " WHERE parent_rollout_id IS NOT NULL"):  # fmt: skip
        meta = json.loads(meta)
        # The meta names the parent by id: the ids of this store's rows, whatever they are.
        assert meta["rollout"] == rollout and meta.get("node", node) == node
        branch_meta[trajectories[tid]] = (key(nodes, node), key(rollouts, rollout))
    return {
        "nodes": sorted((k, key(nodes, p), d, t) for _, k, p, d, t in
                        _q(store, "SELECT id, key, parent_id, depth, text FROM nodes")),
        "rollouts": sorted((k, key(nodes, n), s is None, t, c, key(jobs, j)) for k, n, s, t, c, j in
                           _q(store, "SELECT key, node_id, step_id, text, correct, job_id FROM rollouts")),
        "marks": sorted((rollouts[r], s, f, key(trajectories, b), key(jobs, j)) for r, s, f, b, j in
                        _q(store, "SELECT rollout_id, selected, first_error, branch_id, job_id FROM tree_marks")),
        "branches": branch_meta,
    }


def _manifests(store: Store) -> dict[str, dict]:
    """Each job's manifest with the rows it names as solution texts, questions and a node's path
    of step texts, not ids (nor keys: an import under another dataset name changes those)."""
    solutions = dict(_q(store, "SELECT id, solution FROM trajectories"))
    questions = dict(_q(store, "SELECT id, question FROM problems"))
    out = {}
    for job in store.list_jobs():
        m = dict(job["manifest"])
        m["trajectory_ids"] = [solutions.get(t) for t in m.get("trajectory_ids", [])]
        if "trajectory_id" in m:
            m["trajectory_id"] = solutions[m["trajectory_id"]]
        if m.get("node_id") is not None:
            m["node_id"] = [node["text"] for node in store.node_path(m["node_id"])]
        if "problem_ids" in m:
            m["problem_ids"] = [questions.get(p) for p in m["problem_ids"]]
        if "split" in m:
            m["split"] = {name: [(solutions if name.endswith("trajectories") else questions)[i] for i in ids]
                          for name, ids in m["split"].items()}  # fmt: skip
        out[job["key"]] = m
    return out


@pytest.fixture(scope="module")
def grown(tmp_path_factory):
    """A searched and expanded tree, a node outside every trajectory with a marked rollout, and
    jobs whose manifests name trajectories, problems and a node by id."""
    folder = tmp_path_factory.mktemp("grown")
    store = Store.open(folder / "grown.db")
    other = store.add_problem("plain", "What is 2 + 2?", "4")
    plain = store.add_trajectory(other, "2 + 2 = 4\nThe answer is 4", source="hand", correct=True)
    reasoner = SimulatedReasoner(length=4, success=0.5)
    anchor = _anchor(store, reasoner)
    assert _run(store, ReasonerEngine(reasoner), queue(store, _spec(anchor, budget=120))) == "done"
    assert _run(store, ReasonerEngine(reasoner), queue(store, _spec(anchor, mode="expand", k=2, depth=2,
                                                                    budget=60))) == "done"  # fmt: skip
    problem = store.get_trajectory(anchor)["problem_id"]
    lone = store.ensure_node_path(problem, ["a step no trajectory takes", "and another"])
    [rollout] = store.add_node_rollouts(lone[-1], [{"text": "so 7", "answer": "7", "correct": False, "model": "x"}])
    store.mark_rollout(rollout, selected=True, first_error=1)
    branches = [row["id"] for row in store.list_trajectories(problem_id=problem) if row["id"] != anchor]
    store.create_job("train-prm", {"trajectory_ids": [anchor, *branches, 99999], "problem_ids": [problem, other],
                                   "split": {"train_trajectories": branches, "test_trajectories": [plain],
                                             "train_problems": [problem], "test_problems": [other]}})  # fmt: skip
    store.create_job("tree-search", {"trajectory_id": branches[-1], "trajectory_ids": [branches[-1]],
                                     "node_id": lone[1]})  # fmt: skip
    counts = _counts(store)
    assert counts["stepless"] > 0 and counts["marks"] > 0 and counts["branches"] > 1, counts
    out = folder / "dump.jsonl"
    export_file(store, "jsonl", out)
    return store, out


def test_dump_imports_into_an_empty_file_identically(grown, tmp_path):
    store, dump = grown
    copy = Store.open(tmp_path / "copy.db")
    import_file(copy, dump, "jsonl")
    again = tmp_path / "again.jsonl"
    export_file(copy, "jsonl", again)
    assert again.read_bytes() == dump.read_bytes()
    assert _counts(copy) == _counts(store)
    assert _tree(copy) == _tree(store)
    assert _manifests(copy) == _manifests(store)
    assert _manifests(copy)  # the 99999 that named no row reads null, not another trajectory
    assert None in next(m["trajectory_ids"] for m in _manifests(copy).values() if len(m["trajectory_ids"]) > 2)


def test_dump_imports_into_a_file_whose_ids_differ(grown, tmp_path):
    store, dump = grown
    busy = Store.open(tmp_path / "busy.db")
    earlier = []
    for i in range(7):  # other rows first: every imported row gets another id than it had
        problem = busy.add_problem("earlier", f"earlier question {i}?", str(i))
        earlier.append(problem)
        trajectory = busy.add_trajectory(problem, f"line one\nline {i}", source="hand")
        busy.add_node_rollouts(busy.trajectory_nodes(trajectory)[1], [{"text": "r", "correct": True}])
    busy.create_job("generate", {"problem_ids": earlier[:2]})
    before = _tree(busy)
    import_file(busy, dump, "jsonl")
    # The ids did move: the same trajectory has another id here.
    moved = {k: i for i, k in _keys(busy, "trajectories").items()}
    assert any(moved[k] != i for i, k in _keys(store, "trajectories").items())
    tree, original = _tree(busy), _tree(store)
    for part in ("nodes", "rollouts", "marks"):
        assert sorted(set(tree[part]) - set(before[part])) == original[part], part
    assert tree["branches"] == original["branches"]
    manifests = _manifests(busy)
    assert {k: manifests[k] for k in _manifests(store)} == _manifests(store)
    assert manifests[next(k for k in manifests if k not in _manifests(store))]["problem_ids"] == [
        "earlier question 0?", "earlier question 1?"]  # the job stored before keeps its ids
    counts = _counts(busy)
    report = import_file(busy, dump, "jsonl")  # again: nothing new, nothing changed
    assert not any(report.added.values()) and _counts(busy) == counts and _manifests(busy) == manifests


def test_dump_under_another_dataset_name_keeps_the_tree(grown, tmp_path):
    store, dump = grown
    renamed = Store.open(tmp_path / "renamed.db")
    import_file(renamed, dump, "jsonl", dataset="moved")
    assert _counts(renamed) == _counts(store)
    assert len(_tree(renamed)["branches"]) == _counts(store)["branches"]  # their meta names their parents
    assert _manifests(renamed) == _manifests(store)


def test_a_dump_from_before_the_tree_still_imports(grown, tmp_path):
    store, dump = grown
    old = tmp_path / "old.jsonl"
    lines = []
    for line in dump.read_text().splitlines():
        record = json.loads(line)
        if "tree" in record:
            continue  # an old dump had no tree lines, and manifests with the ids of its database
        if "job" in record:
            record["job"].pop("ids_as_keys", None)
            record["job"]["manifest"] = {"trajectory_ids": [1]}
        lines.append(json.dumps(record))
    old.write_text("\n".join(lines) + "\n")
    copy = Store.open(tmp_path / "old.db")
    import_file(copy, old, "jsonl")
    assert _counts(copy)["trajectories"] == _counts(store)["trajectories"]
    assert _counts(copy)["stepless"] == _counts(copy)["marks"] == 0
    assert all(job["manifest"] == {"trajectory_ids": [1]} for job in copy.list_jobs())


def test_a_tree_naming_a_rollout_nowhere_in_the_file_is_refused_with_its_line(grown, tmp_path):
    _, dump = grown
    lines = dump.read_text().splitlines()
    at = next(i for i, line in enumerate(lines) if '"tree"' in line and '"marks"' in line)
    record = json.loads(lines[at])
    record["tree"]["marks"][0]["rollout"] = "no-such-rollout"
    lines[at] = json.dumps(record)
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(lines) + "\n")
    copy = Store.open(tmp_path / "bad.db")
    with pytest.raises(StepScopeError, match=f"line {at + 1}: .*no-such-rollout"):
        import_file(copy, bad, "jsonl")
    assert _counts(copy) == dict.fromkeys(_counts(copy), 0)  # all or nothing


def test_ids_as_keys_must_name_manifest_id_fields_that_hold_keys(tmp_path):
    store = Store.open(tmp_path / "jobs.db")
    job = {"key": "j1", "kind": "train-prm", "status": "done", "manifest": {"trajectory_ids": [3]},
           "ids_as_keys": ["trajectory_ids"]}  # fmt: skip
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"job": job}) + "\n")
    with pytest.raises(StepScopeError, match="line 1: .*'trajectory_ids' is not a key"):
        import_file(store, bad, "jsonl")
    bad.write_text(json.dumps({"job": {**job, "manifest": {"seed": "k"}, "ids_as_keys": ["seed"]}}) + "\n")
    with pytest.raises(StepScopeError, match="line 1: .*'seed' is not a manifest id field"):
        import_file(store, bad, "jsonl")
    assert store.list_jobs() == []
