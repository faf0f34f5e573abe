"""Searches in the jsonl dump (issue 25/24): a store with real search jobs (beam with the MC
scorer, MCTS with the random one, and a search killed part-way, its journal only) dumps, imports
into an empty file and dumps again to the same bytes; imported into a file whose ids differ (or
under another dataset name) its candidates still name the same nodes and final beams, and the
Search page's view data of each imported search is the original's. A malformed search record is
refused with its line, nothing stored; a dump from before searches were dumped imports as it did.

The searches are run by the job runner with the simulated stepped policy (tests/simulated_steps.py),
as test_search_job does; the few lines of setup are copied here, not imported from it."""

from __future__ import annotations

import json
from dataclasses import asdict

import pytest
from simulated_steps import KilledAt, SteppedPolicy

from core.errors import StepScopeError
from core.formats import export_file, import_file
from core.formats.ingest import BATCH_ROWS_ENV
from core.jobs.runner import EngineCache, claim_job, queue, run_job
from core.jobs.search import SearchSpec
from core.search.config import SearchConfig
from core.store import Store
from core.views.search import problem_searches, search_label, search_page_params
from core.views.search_tree import chart_rows, depth_rows, node_detail, search_view

POLICY = "simulated-steps"
SEARCH_TABLES = ("searches", "search_events", "search_candidates")


def _run(store: Store, engine, job_id: int) -> str:
    return run_job(store, claim_job(store, job_id, stale_after=0), EngineCache(loader=lambda *args, **kwargs: engine))


def _spec(problem_ids, scorer: str = "mc:2", **config) -> SearchSpec:
    settings = {"strategy": "beam", "n": 4, "beam_width": 2, "max_steps": 3, "seed": 7, **config}
    return SearchSpec(policy=POLICY, problem_ids=tuple(problem_ids), config=SearchConfig(**settings), scorer=scorer)


def _q(store: Store, sql: str, params=()) -> list[tuple]:
    return store.conn.execute(sql, params).fetchall()


def _counts(store: Store) -> dict[str, int]:
    tables = (*SEARCH_TABLES, "problems", "trajectories", "nodes", "rollouts", "jobs", "verifiers")
    return {table: _q(store, f"SELECT COUNT(*) FROM {table}")[0][0] for table in tables}


class _Content:
    """A store's rows by content, never by id or key (keys change under another dataset name):
    a problem by its question, a node by its problem's question and step path, a trajectory by source and solution, a
    job by its key, a search by its problem, job and start."""

    def __init__(self, store: Store) -> None:
        self.problems = dict(_q(store, "SELECT id, question FROM problems"))
        self.trajectories = {i: (s, t) for i, s, t in _q(store, "SELECT id, source, solution FROM trajectories")}
        self.jobs = dict(_q(store, "SELECT id, key FROM jobs"))
        nodes = {i: (p, t, q) for i, p, t, q in _q(store, "SELECT id, parent_id, text, problem_id FROM nodes")}
        self.nodes = {}
        for node_id in nodes:
            path, at = [], node_id
            while nodes[at][0] is not None:
                path.append(nodes[at][1])
                at = nodes[at][0]
            self.nodes[node_id] = (self.problems[nodes[node_id][2]], *reversed(path))
        self.searches = {i: (self.problems[p], self.jobs.get(j), c) for i, p, j, c in
                         _q(store, "SELECT id, problem_id, job_id, created_at FROM searches")}  # fmt: skip

    def __call__(self, table: str, row_id: int | None):
        return None if row_id is None else getattr(self, table)[row_id]


def _searches(store: Store) -> dict[tuple, dict]:
    """Every search by content: its row, journal and candidates, and its final beams' meta (which
    names this store's search and job by id: checked, then read as content)."""
    of = _Content(store)
    out = {}
    for (search_id,) in _q(store, "SELECT id FROM searches"):
        search = store.get_search(search_id)
        row = {k: v for k, v in search.items() if k not in ("id", "job_id", "problem_id")}
        candidates = [{**c, "search_id": None, "node_id": of("nodes", c["node_id"]),
                       "trajectory_id": of("trajectories", c["trajectory_id"])}
                      for c in store.search_candidates(search_id)]  # fmt: skip
        metas = []
        for c in store.search_candidates(search_id):
            if c["trajectory_id"] is not None:
                meta = store.get_trajectory(c["trajectory_id"])["meta"]
                # The ids of this store's rows: a search (the one that stored the beam first) and its job.
                assert meta["job_id"] == store.get_search(meta["search"])["job_id"], meta
                metas.append({**meta, "search": of("searches", meta["search"]), "job_id": of("jobs", meta["job_id"])})
        out[of("searches", search_id)] = {"row": row, "events": store.search_events(search_id),
                                          "candidates": candidates, "beam_meta": metas}  # fmt: skip
    return out


def _views(store: Store) -> dict:
    """What the Search page shows of every search, by content: each problem's list of searches
    (core/views/search.py, newest first, with its label), each search's view (depths, beams,
    chart, answer path) and every candidate's node detail; a final beam's page address."""
    of = _Content(store)
    out = {}
    for problem_id, question in of.problems.items():
        listed = problem_searches(store, problem_id)
        if not listed:
            continue
        out[question] = [(of("searches", s["id"]), search_label(s).replace(f"#{s['id']} ", "# "), s["interrupted"])
                         for s in listed]  # fmt: skip
        for s in listed:
            view = search_view(store, s["id"])
            details = []
            for candidate in view.candidates:
                if candidate.node_id is None:
                    continue
                d = asdict(node_detail(store, view, candidate))
                d["node_id"] = of("nodes", d["node_id"])
                d["trajectories"] = [of("trajectories", t) for t in d["trajectories"]]
                d["anchor"] = of("trajectories", d["anchor"])
                d["search_scores"] = [{**x, "search_id": of("searches", x["search_id"])} for x in d["search_scores"]]
                d["verdicts"] = [{**v, "trajectory_id": of("trajectories", v["trajectory_id"])} for v in d["verdicts"]]
                details.append(d)
            out[of("searches", s["id"])] = {
                "search": {**view.search, "id": None, "job_id": of("jobs", view.search["job_id"]),
                           "problem_id": of("problems", view.search["problem_id"])},
                "candidates": [{**asdict(c), "node_id": of("nodes", c.node_id),
                                "trajectory_id": of("trajectories", c.trajectory_id)} for c in view.candidates],
                "beams": [{**b, "trajectory_id": of("trajectories", b["trajectory_id"])} for b in view.beams],
                "live": view.live, "calls": view.calls, "counts": view.counts(),
                "depths": {depth: depth_rows(cs) for depth, cs in view.depths.items()},
                "chart": chart_rows(view), "details": details,
                "addresses": [{**(p := search_page_params(store.get_trajectory(b["trajectory_id"]))),
                               "problem": of("problems", int(p["problem"])),
                               "search": of("searches", int(p["search"]))} for b in view.beams],
            }  # fmt: skip
    return out


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    """Two problems searched by a beam job with the MC scorer (final beams, MC rollouts at nodes),
    one of them again by an MCTS with the random scorer, and a third searched by a job killed after
    two policy calls (its search running: a journal, no candidates); a plain problem beside them."""
    folder = tmp_path_factory.mktemp("searched")
    store = Store.open(folder / "searched.db")
    plain = store.add_problem("plain", "What is 2 + 2?", "4")
    store.add_trajectory(plain, "2 + 2 = 4\nThe answer is 4", source="hand", correct=True)
    problems = [store.add_problem("search-dump", f"What is the number, case {i}?", "42") for i in range(3)]
    # A reference solution whose first step some candidate reads too: a node with a step and a search.
    store.add_trajectory(problems[0], "step 1: ok\nThe answer is 42.", source="reference", final_answer="42",
                         correct=True, rule="line")  # fmt: skip
    assert _run(store, SteppedPolicy([0.7] * 3), queue(store, _spec(problems[:2]))) == "done"
    assert _run(store, SteppedPolicy([0.7] * 3), queue(store, _spec(problems[:1], scorer="random:3", strategy="mcts",
                                                                    expansions=6))) == "done"  # fmt: skip
    killed = queue(store, _spec(problems[2:], scorer="random:5"))
    with pytest.raises(KeyboardInterrupt):
        _run(store, KilledAt(SteppedPolicy([0.7] * 3), 2), killed)
    counts = _counts(store)
    assert counts["searches"] == 4 and counts["search_candidates"] > 0 and counts["search_events"] > 0, counts
    statuses = sorted(s["status"] for p in problems for s in store.problem_searches(p))
    assert statuses == ["done", "done", "done", "running"]
    assert any(c["visits"] for (i,) in _q(store, "SELECT id FROM searches WHERE strategy = 'mcts'")
               for c in store.search_candidates(i))  # fmt: skip
    out = folder / "dump.jsonl"
    export_file(store, "jsonl", out)
    return store, out


def _lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_the_dump_carries_every_search_keyed(searched):
    store, dump = searched
    records = _lines(dump)
    searches = [r["search"] for r in records if "search" in r]
    assert len(searches) == 4
    assert sum(len(s.get("candidates", ())) for s in searches) == _counts(store)["search_candidates"]
    assert sum(len(s.get("events", ())) for s in searches) == _counts(store)["search_events"]
    node_keys, trajectory_keys = set(dict(_q(store, "SELECT key, id FROM nodes"))), set(
        dict(_q(store, "SELECT key, id FROM trajectories")))
    job_keys = {r["job"]["key"] for r in records if "job" in r}
    for search in searches:
        assert search["job"] in job_keys and not {"id", "job_id", "problem_id"} & set(search)
        for c in search.get("candidates", ()):
            assert c["node"] in node_keys and (c["trajectory"] is None or c["trajectory"] in trajectory_keys)
            assert not {"node_id", "trajectory_id", "search_id"} & set(c)
    # A final beam's meta names its search and job by key, never by id.
    beams = [r["trajectory"] for r in records if r.get("trajectory", {}).get("source") == "search"]
    assert beams and all(b["meta"]["search"] in {s["key"] for s in searches} for b in beams)
    assert all(b["meta"]["job_id"] in job_keys for b in beams)
    # The finished search jobs' compute comes with them (the killed one had recorded none).
    jobs = [r["job"] for r in records if "job" in r and r["job"]["kind"] == "search"]
    assert ["compute" in job for job in jobs] == [job["status"] == "done" for job in jobs] == [True, True, False]
    # Each search line follows its problem's trajectory and tree lines.
    for i, record in enumerate(records):
        if "search" in record:
            later = records[i + 1:]
            assert not any(r.get("problem") == record["problem"] and ("trajectory" in r or "tree" in r) for r in later)


def test_a_dump_with_searches_imports_into_an_empty_file_identically(searched, tmp_path):
    store, dump = searched
    copy = Store.open(tmp_path / "copy.db")
    report = import_file(copy, dump, "jsonl")
    assert report.added["searches"] == 4
    again = tmp_path / "again.jsonl"
    export_file(copy, "jsonl", again)
    assert again.read_bytes() == dump.read_bytes()
    assert _counts(copy) == _counts(store)
    assert _searches(copy) == _searches(store)
    views = _views(copy)
    assert views == _views(store)
    # Not vacuous: the running search replays its journal, the finished ones show beams and nodes.
    shown = [v for k, v in views.items() if isinstance(k, tuple)]
    assert [v["live"] for v in shown].count(True) == 1 and all(v["candidates"] for v in shown)
    assert sum(len(v["beams"]) for v in shown) > 0 and all(v["details"] for v in shown if not v["live"])
    assert [j["compute"] for j in copy.list_jobs()] == [j["compute"] for j in store.list_jobs()]


def test_into_a_file_whose_ids_differ_candidates_name_the_same_nodes_and_beams(searched, tmp_path):
    store, dump = searched
    busy = Store.open(tmp_path / "busy.db")
    earlier = [busy.add_problem("earlier", f"earlier question {i}?", "42") for i in range(3)]
    for i, problem in enumerate(earlier):
        busy.add_trajectory(problem, f"line one\nline {i}", source="hand")
    # A search of its own first: every imported search, node and beam gets another id than it had.
    assert _run(busy, SteppedPolicy([0.5] * 3), queue(busy, _spec(earlier[:2], scorer="random:1"))) == "done"
    before_searches, before_views = _searches(busy), _views(busy)
    report = import_file(busy, dump, "jsonl")
    assert report.added["searches"] == 4
    # The ids did move: every imported search, and the nodes its candidates name, has another id here.
    mine, theirs = _Content(busy), _Content(store)
    for table in ("searches", "nodes"):
        moved = {content: i for i, content in getattr(mine, table).items()}
        named = getattr(theirs, table).items() if table == "searches" else [
            (c["node_id"], theirs.nodes[c["node_id"]]) for (i,) in _q(store, "SELECT id FROM searches")
            for c in store.search_candidates(i)]  # fmt: skip
        assert named and all(moved[content] != i for i, content in named), table
    searches, views = _searches(busy), _views(busy)
    assert {k: v for k, v in searches.items() if k not in before_searches} == _searches(store)
    assert {k: v for k, v in before_searches.items()} == {k: searches[k] for k in before_searches}
    assert {k: v for k, v in views.items() if k not in before_views} == _views(store)
    counts = _counts(busy)
    again = import_file(busy, dump, "jsonl")  # again: nothing new, nothing changed
    assert not any(again.added.values()) and _counts(busy) == counts and _searches(busy) == searches


def test_under_another_dataset_name_the_searches_follow(searched, tmp_path):
    store, dump = searched
    renamed = Store.open(tmp_path / "renamed.db")
    import_file(renamed, dump, "jsonl", dataset="moved")
    ours = lambda counts: {k: v for k, v in counts.items() if k != "problems"}  # the sample set twice: two names
    assert ours(_counts(renamed)) == ours(_counts(store))
    assert _searches(renamed) == _searches(store)  # by content: questions, node paths, solutions
    assert _views(renamed) == _views(store)


def test_a_dump_from_before_searches_were_dumped_imports_as_it_did(searched, tmp_path):
    store, dump = searched
    ids = {key: i for i, key in _q(store, "SELECT id, key FROM jobs")}
    searches = {r["search"]["key"]: r for r in _lines(dump) if "search" in r}
    lines = []
    for record in _lines(dump):
        if "search" in record:
            continue  # no search lines; no job compute; a final beam's meta with the old file's ids
        if "job" in record:
            record["job"].pop("compute", None)
        meta = record.get("trajectory", {}).get("meta")
        if isinstance(meta, dict) and meta.get("search") in searches:
            meta["search"], meta["job_id"] = 3, ids[meta["job_id"]]
        lines.append(json.dumps(record, ensure_ascii=False))
    old = tmp_path / "old.jsonl"
    old.write_text("\n".join(lines) + "\n")
    copy = Store.open(tmp_path / "old.db")
    report = import_file(copy, old, "jsonl")
    assert report.added["searches"] == 0 and _counts(copy)["trajectories"] == _counts(store)["trajectories"]
    again = tmp_path / "again.jsonl"
    export_file(copy, "jsonl", again)
    assert again.read_bytes() == old.read_bytes()


def _broken(dump, tmp_path, change) -> tuple:
    """The dump with one search line changed; (the file, the line number)."""
    lines = dump.read_text().splitlines()
    at = next(i for i, line in enumerate(lines) if '"search": {' in line and '"candidates"' in line)
    record = json.loads(lines[at])
    change(record["search"])
    lines[at] = json.dumps(record, ensure_ascii=False)
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(lines) + "\n")
    return bad, at + 1


@pytest.mark.parametrize("change, message", [
    (lambda s: s["candidates"][0].update(mark="kept"), r"search: candidates\[0\]: mark must be one of"),
    (lambda s: s["candidates"][1].update(candidate=s["candidates"][0]["candidate"]), "is listed twice"),
    (lambda s: s.update(status="paused"), "search: status must be one of running, done"),
    (lambda s: s["candidates"][0].update(num_tokens="many"), "field 'num_tokens' must be an integer"),
    (lambda s: s["candidates"][-1].update(node="no-such-node"), "names a node 'no-such-node' that is neither stored"),
    (lambda s: s["candidates"][-1].update(trajectory="no-such-beam"), "names a trajectory 'no-such-beam'"),
    (lambda s: s.update(job="no-such-job"), "refers to job 'no-such-job', which is neither stored nor earlier"),
])  # fmt: skip
def test_a_malformed_search_is_refused_with_its_line_and_nothing_stored(searched, tmp_path, change, message):
    _, dump = searched
    bad, line = _broken(dump, tmp_path, change)
    copy = Store.open(tmp_path / "bad.db")
    before = _counts(copy)
    with pytest.raises(StepScopeError, match=f"line {line}: .*{message}"):
        import_file(copy, bad, "jsonl")
    assert _counts(copy) == before  # all or nothing


def test_a_refused_search_after_committed_batches_undoes_the_searches_before_their_nodes(searched, tmp_path,
                                                                                          monkeypatch):  # fmt: skip
    """Batches of one record: the searches before the bad line are committed (their candidates name
    nodes of earlier batches) and the undo takes them, events and candidates too, then the rest."""
    _, dump = searched
    lines = dump.read_text().splitlines()
    last = json.loads(next(line for line in reversed(lines) if '"search": {' in line))
    last["search"]["candidates"] = [{**last["search"].get("candidates", [{}])[0], "node": "nowhere", "candidate": 0,
                                     "depth": 1, "call": 0, "text": "x", "num_tokens": 1, "mark": "chosen"}]  # fmt: skip
    last["search"]["key"], last["search"]["job"] = "another", None
    bad = tmp_path / "late.jsonl"
    bad.write_text("\n".join([*lines, json.dumps(last)]) + "\n")
    monkeypatch.setenv(BATCH_ROWS_ENV, "1")
    copy = Store.open(tmp_path / "late.db")
    before = _counts(copy)
    with pytest.raises(StepScopeError, match=f"line {len(lines) + 1}: .*'nowhere'"):
        import_file(copy, bad, "jsonl")
    assert _counts(copy) == before
