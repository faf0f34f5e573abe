"""The app's page logic, tested directly on a real SQLite file (no Streamlit)."""

from __future__ import annotations

import json
import os

import pytest

from core.views.annotate import (
    KEYBOARD_ACTIONS, KEYS, ROW_FIELDS, QueueSpec, build_queue, key_codes, keyboard_bar_buttons, keyboard_caption,
    my_labels, parse_assigned, queue_progress, random_sample, row_buttons, save_label, saved_message,
)  # fmt: skip
from core.views.jobs import EstimateRequest, active_jobs, cancel, job_progress, job_table, queue_estimate, queue_top_up, retry
from core.views.inputs import (
    data_folder, database_files, escape_markdown, parse_deep_link, resolve_database, truncate, validate_annotator,
)  # fmt: skip
from core.views.data import export_bytes, import_upload
from core.errors import StepScopeError
from core.views.charts import SELECTION, chart_spec, picked_step
from core.views.explore import (
    TrajectoryFilter, chart_rows, count_trajectories, find_problems, find_trajectories, neighbour, rollout_rows,
    opening_trajectory, step_cards, step_prefix, trajectory_label, value_models,
)  # fmt: skip
from core.jobs.estimate import load_tasks
from core.policy import load_template
from core.sample_solutions import REFERENCE_SOLUTIONS, ensure_trajectories, featured_trajectory
from core.store import Store


@pytest.fixture
def store(tmp_path, monkeypatch) -> Store:
    monkeypatch.setenv("STEPSCOPE_DB", str(tmp_path / "data" / "app.db"))
    store = Store.open(tmp_path / "data" / "app.db")
    ensure_trajectories(store)
    return store


def add_rollouts(store: Store, step_id: int, outcomes: list[bool], model: str = "m") -> None:
    store.add_rollouts(
        {"step_id": step_id, "text": f" rollout {i}", "answer": "1", "correct": ok, "num_tokens": 5, "model": model}
        for i, ok in enumerate(outcomes)
    )


# --- first start ----------------------------------------------------------------------------


def test_a_fresh_database_gets_reference_trajectories_once(store):
    rows = store.list_trajectories()
    assert len(rows) == len(REFERENCE_SOLUTIONS) == 10
    assert {r["dataset"] for r in rows} == {"sample"}
    # Seven are right, three carry a deliberate error and grade as wrong.
    assert sum(1 for r in rows if r["correct"]) == 7
    assert all(r["n_steps"] >= 2 for r in rows)
    assert ensure_trajectories(store) == 0 and store.count_trajectories() == 10


def test_a_first_visit_opens_on_the_featured_trajectory(store):
    featured = featured_trajectory(store)
    trajectory = store.get_trajectory(featured)
    # Reachable steps, then a real error: the story the first screen tells.
    assert trajectory["meta"]["deliberate_first_error"] == 2 and trajectory["correct"] is False
    assert [s["text"] for s in store.steps(featured)][2] == "Now she has 12 + 7 = 18 stickers."
    assert opening_trajectory(store, [1, 2, featured]) == featured
    assert opening_trajectory(store, [1, 2]) == 1  # filtered out of the list: the first listed
    assert opening_trajectory(store, []) is None


def test_a_database_with_trajectories_gets_none(tmp_path):
    store = Store.open(tmp_path / "other.db")
    problem = store.add_problem("mine", "1 + 1?", "2")
    store.add_trajectory(problem, "1 + 1 = 2.\nThe answer is 2.", source="test")
    assert ensure_trajectories(store) == 0 and store.count_trajectories() == 1


# --- sidebar and URL input ------------------------------------------------------------------


@pytest.mark.parametrize("name", ["alice", "A.b_c-9", "x" * 40])
def test_good_annotator_names(name):
    assert validate_annotator(f"  {name} ") == name


@pytest.mark.parametrize("name", ["", "   ", "x" * 41, "a b", "<script>", "../etc", "名前", "a;drop", "a\nb"])
def test_bad_annotator_names_are_refused(name):
    with pytest.raises(StepScopeError):
        validate_annotator(name)


def test_databases_are_file_names_inside_the_data_folder(store, tmp_path):
    folder = data_folder()
    assert folder == (tmp_path / "data").resolve()
    assert database_files() == ["app.db"]
    assert resolve_database("app.db") == folder / "app.db"
    assert resolve_database("new.sqlite", must_exist=False) == folder / "new.sqlite"
    (tmp_path / "outside.db").write_bytes(b"")
    for bad in ["../outside.db", "/etc/passwd", "sub/app.db", "app.txt", ".hidden.db", "", "app.db\x00", "~/x.db"]:
        with pytest.raises(StepScopeError):
            resolve_database(bad)
    with pytest.raises(StepScopeError, match="no database"):
        resolve_database("missing.db")


def test_a_link_inside_the_data_folder_that_leads_out_is_refused(store, tmp_path):
    (tmp_path / "secret.db").write_bytes(b"x")
    os.symlink(tmp_path / "secret.db", tmp_path / "data" / "link.db")
    with pytest.raises(StepScopeError):
        resolve_database("link.db")
    assert "link.db" in database_files()  # listed (it is there) but never opened


def test_deep_links_are_checked(store):
    assert parse_deep_link({"trajectory": "3", "step": "1"}, store).trajectory_id == 3
    assert parse_deep_link({"trajectory": "3", "step": "1"}, store).step_idx == 1
    assert parse_deep_link({}, store).problem == ""
    for params, cause in [
        ({"trajectory": "abc"}, "whole number"),
        ({"trajectory": "-1"}, "whole number"),
        ({"trajectory": "9999"}, "does not exist"),
        ({"trajectory": "1" * 40}, "whole number"),
        ({"trajectory": "3", "step": "99"}, "has 3 steps"),
        ({"trajectory": "3", "step": "1.5"}, "whole number"),
        ({"step": "1"}, "no trajectory"),
        ({"trajectory": "../../etc/passwd"}, "whole number"),
    ]:
        link = parse_deep_link(params, store)
        assert cause in link.problem, (params, link)
        assert link.step_idx is None
    # A good trajectory with a bad step still opens the trajectory.
    assert parse_deep_link({"trajectory": "3", "step": "99"}, store).trajectory_id == 3


def test_escaped_markdown_forms_no_link_image_html_or_math():
    text = "![x](http://evil.example/a.png) <script>alert(1)</script> $x$ :red[hi] **b** [l](https://e.example)"
    escaped = escape_markdown(text)
    for raw in ("![", "](", "$x$", ":red[", "**"):
        assert raw not in escaped
    # Every punctuation mark is escaped, so "<" can never open a tag.
    assert all(escaped[i - 1] == "\\" for i, ch in enumerate(escaped) if ch in "<>[]()!$:*")
    assert escaped.replace("\\", "").replace("\u200b", "") == text
    # Bare URLs, www. names and e-mail addresses would become links (GFM) even when escaped.
    for bare in ("http://evil.example/x", "HTTPS://e.example", "www.e.example", "me@e.example"):
        assert "\u200b" in escape_markdown(bare)


def test_truncate_cuts_long_text_only():
    assert truncate("short", 10) == ("short", False)
    shown, cut = truncate("line one\n" * 200, 100)
    assert cut and len(shown) <= 102 and shown.endswith("…")


# --- explore ------------------------------------------------------------------------------


def test_filters_count_page_and_neighbours(store):
    everything = TrajectoryFilter()
    assert count_trajectories(store, everything) == 10
    assert [r["id"] for r in find_trajectories(store, everything, limit=3, offset=2)] == [3, 4, 5]
    wrong = TrajectoryFilter(correct=False)
    assert [r["id"] for r in find_trajectories(store, wrong)] == [8, 9, 10]
    assert neighbour(store, wrong, 8, 1) == 9 and neighbour(store, wrong, 8, -1) is None
    assert neighbour(store, wrong, 2, 1) == 8  # from outside the filter: the next one inside it
    searched = TrajectoryFilter(search="cookies")
    assert [r["question"] for r in find_trajectories(store, searched)] == [
        "A baker makes 4 trays of 12 cookies and sells 30 of them. How many cookies are left?"]
    assert count_trajectories(store, TrajectoryFilter(search="100%_")) == 0  # LIKE wildcards are literal
    step = store.steps(8)[0]
    store.save_annotation("bob", step["id"], rating=-1)
    assert [r["id"] for r in find_trajectories(store, TrajectoryFilter(labelled=True))] == [8]
    assert 8 not in [r["id"] for r in find_trajectories(store, TrajectoryFilter(labelled=False))]
    problems = find_problems(store, "sample")
    assert len(problems) == 10  # only problems that have trajectories
    label = trajectory_label(find_trajectories(store, wrong)[0])
    assert label.startswith("#8 · handwritten · wrong · ")


def test_filter_where_labels_disagree(store):
    def found(kind: str, policy: str | None = "m") -> list[int]:
        filters = TrajectoryFilter(disagree=kind, policy=policy)
        ids = [r["id"] for r in find_trajectories(store, filters)]
        assert count_trajectories(store, filters) == len(ids)
        return ids

    assert found("anything") == []
    # Trajectory 2: alice calls step 0 wrong, but a rollout of policy m reached the answer.
    s2 = store.steps(2)[0]["id"]
    add_rollouts(store, s2, [False, True])
    store.save_annotation("alice", s2, rating=-1)
    # Trajectory 3: a judge's latest verdict (0.2 after 0.9) calls a step alice rated 0 wrong.
    s3 = store.steps(3)[1]["id"]
    store.add_verdicts([{"step_id": s3, "judge": "j", "kind": "step", "p_yes": 0.9}])
    store.add_verdicts([{"step_id": s3, "judge": "j", "kind": "step", "p_yes": 0.2}])
    store.save_annotation("alice", s3, rating=0)
    # Trajectory 4: two annotators, +1 against -1 (0 against +1 on another step is agreement).
    s4a, s4b = (s["id"] for s in store.steps(4)[:2])
    store.save_annotation("alice", s4a, rating=1)
    store.save_annotation("bob", s4a, rating=-1)
    store.save_annotation("alice", s4b, rating=0)
    store.save_annotation("bob", s4b, rating=1)
    # Trajectory 5: everything agrees (labelled, MC hard fine, judge fine).
    s5 = store.steps(5)[0]["id"]
    add_rollouts(store, s5, [True])
    store.add_verdicts([{"step_id": s5, "judge": "j", "kind": "step", "p_yes": 0.8}])
    store.save_annotation("alice", s5, rating=1)
    assert found("mc-hard") == [2]
    assert found("mc-hard", policy="other-policy") == []  # another policy's rollouts say nothing
    assert found("judge") == [3]
    assert found("annotators") == [4]
    assert found("anything") == [2, 3, 4]
    combined = TrajectoryFilter(disagree="anything", policy="m", labelled=True, search="Jack")
    assert [r["id"] for r in find_trajectories(store, combined)] == [
        r["id"] for r in find_trajectories(store, TrajectoryFilter(search="Jack")) if r["id"] in (2, 3, 4)]
    assert neighbour(store, TrajectoryFilter(disagree="anything", policy="m"), 2, 1) == 3
    with pytest.raises(ValueError):
        find_trajectories(store, TrajectoryFilter(disagree="nonsense"))


def test_step_cards_show_values_verdicts_and_labels(store):
    steps = store.steps(1)
    add_rollouts(store, steps[0]["id"], [True, True, False, True])
    add_rollouts(store, steps[1]["id"], [True], model="other")
    store.add_verdicts([{"step_id": steps[0]["id"], "judge": "judge-a", "kind": "step", "p_yes": 0.8}])
    store.save_annotation("bob", steps[0]["id"], rating=1)
    store.save_annotation("eve", steps[1]["id"], rating=-1, first_error=True)
    cards = step_cards(store, 1, "m")
    assert [c.idx for c in cards] == [0, 1, 2]
    assert (cards[0].value.n, cards[0].value.correct) == (4, 3)
    assert 0 < cards[0].value.low < 0.75 < cards[0].value.high <= 1
    assert cards[0].value_text.startswith("MC 0.75")
    assert cards[1].value.n == 0 and cards[1].value_text == "no rollouts yet"  # other policy not pooled
    assert cards[0].verdicts == {"judge-a": 0.8}
    assert [label["annotator"] for label in cards[1].labels] == ["eve"]
    values, verdicts, labels = chart_rows(cards)
    assert [v["step"] for v in values] == [0] and values[0]["value"] == 0.75
    assert verdicts == [{"step": 0, "judge": "judge-a", "p_yes": 0.8}]
    assert {(row["annotator"], row["y"]) for row in labels} == {("bob", 1.0), ("eve", 0.0)}
    assert value_models(store, 1) == ["m", "other"]
    assert [r["correct"] for r in rollout_rows(store, steps[0]["id"], "m")] == [True, True, False, True]
    assert rollout_rows(store, steps[0]["id"], "other") == []


def test_chart_spec_carries_the_rows_and_a_click_selection(store):
    add_rollouts(store, store.steps(1)[0]["id"], [True, False])
    cards = step_cards(store, 1, "m")
    spec = chart_spec(len(cards), 2, *chart_rows(cards))
    assert spec["datasets"]["values"] == [{"step": 0, "value": 0.5, "low": cards[0].value.low,
                                           "high": cards[0].value.high, "n": 2}]
    assert spec["datasets"]["selected"] == [{"step": 2}]
    assert [c["step"] for c in spec["datasets"]["columns"]] == [0, 1, 2]
    params = spec["params"]
    assert [p["name"] for p in params] == [SELECTION] and params[0]["select"]["fields"] == ["step"]
    # The template is shared between renders: filling one spec leaves the next one clean.
    assert chart_spec(len(cards), 0, [], [], [])["datasets"]["values"] == []
    assert picked_step({"selection": {SELECTION: [{"step": 1}]}}) == 1
    for event in (None, {}, {"selection": {}}, {"selection": {SELECTION: [{"step": "x"}]}}):
        assert picked_step(event) is None


def test_the_prefix_shown_is_the_prefix_a_job_samples_from(store):
    for trajectory_id in (1, 7, 10):
        tasks = load_tasks(store, [trajectory_id], load_template())  # the estimate job's own code path
        for idx in range(len(store.steps(trajectory_id))):
            assert step_prefix(store, trajectory_id, idx) == tasks[0].steps[idx].prompt
    prefix = step_prefix(store, 1, 0)
    assert prefix.endswith("Answer: 4 trays of 12 cookies make 4 * 12 = 48 cookies.\n")


# --- jobs ---------------------------------------------------------------------------------


def test_queue_estimate_top_up_cancel_retry(store):
    request = EstimateRequest(policy="tiny", n=4, max_new_tokens=16)
    job_id = queue_estimate(store, request, [1])
    job = store.get_job(job_id)
    assert job["status"] == "queued" and job["manifest"]["strategy"] == {"strategy": "fixed", "n": 4}
    assert job["manifest"]["sampling"]["max_new_tokens"] == 16
    assert [j["id"] for j in active_jobs(store, 1)] == [job_id] and active_jobs(store, 2) == []
    assert job_progress(job).text.startswith("queued")
    add_rollouts(store, store.steps(1)[0]["id"], [True] * 4, model="tiny")
    top_up = store.get_job(queue_top_up(store, request, 1, extra=3))
    assert top_up["manifest"]["strategy"] == {"strategy": "fixed", "n": 7}
    assert top_up["manifest"]["sampling"]["seed"] != job["manifest"]["sampling"]["seed"]
    assert "cancelled" in cancel(store, job_id)
    with pytest.raises(StepScopeError, match="not queued or running"):
        cancel(store, job_id)
    assert "queued again" in retry(store, job_id)
    with pytest.raises(StepScopeError, match="only failed or cancelled"):
        retry(store, job_id)
    table = job_table(store)
    assert [row["id"] for row in table] == [top_up["id"], job_id] and table[0]["strategy"] == "fixed"
    assert table[0]["policy tokens"] is None and table[0]["TFLOPs (est.)"] is None  # not run: nothing counted


def test_the_jobs_table_shows_what_a_job_spent(store):
    from core.search.compute import ComputeRecord

    job_id = queue_estimate(store, EstimateRequest(policy="tiny", n=4, max_new_tokens=16), [1])
    spent = ComputeRecord(policy_tokens=120, prompt_tokens=900, prompt_tokens_cached=600, engine_seconds=2.5,
                          total_seconds=2.7, policy_parameters=135_000_000)  # fmt: skip
    store.update_job(job_id, compute=spent.as_manifest())
    [row] = job_table(store)
    assert (row["policy tokens"], row["prompt tokens"], row["cached prompt tokens"]) == (120, 900, 600)
    assert row["verifier tokens"] == 0 and row["engine s"] == 2.5
    assert row["TFLOPs (est.)"] == round(2 * 135e6 * (120 + 900) / 1e12, 4)


def test_bad_job_requests_are_refused_with_their_cause(store):
    with pytest.raises(StepScopeError, match="policy"):
        queue_estimate(store, EstimateRequest(policy=" "), [1])
    with pytest.raises(StepScopeError, match="N is between"):
        queue_estimate(store, EstimateRequest(policy="p", n=0), [1])
    with pytest.raises(StepScopeError, match="does not exist"):
        queue_estimate(store, EstimateRequest(policy="p"), [999])
    problem = store.add_problem("nogold", "What?", None)
    trajectory = store.add_trajectory(problem, "Something.", source="test")
    with pytest.raises(StepScopeError, match="no gold answer"):
        queue_estimate(store, EstimateRequest(policy="p"), [trajectory])
    assert store.list_jobs() == []


def test_progress_reports_tokens_per_second():
    job = {"kind": "estimate", "status": "running", "planned": 10, "done": 5, "tokens": 100, "error": None,
           "started_at": "2025-01-01T00:00:00.000+00:00", "finished_at": "2025-01-01T00:00:10.000+00:00"}
    progress = job_progress(job)
    assert progress.fraction == 0.5 and progress.tokens_per_second == 10.0
    assert "5/10 rollouts" in progress.text and "10.0 tokens/s" in progress.text


# --- annotate -----------------------------------------------------------------------------


def test_unlabelled_first_queue_and_progress(store):
    for step in store.steps(1):
        save_label(store, "alice", step["id"], rating=1)
    save_label(store, "alice", store.steps(2)[0]["id"], rating=0)
    queue = build_queue(store, "alice", QueueSpec())
    assert queue[:3] == [3, 4, 5] and queue[-2:] == [1, 2]
    assert build_queue(store, "bob", QueueSpec())[:3] == [1, 2, 3]
    progress = queue_progress(store, "alice", queue)
    assert (progress.complete, progress.total) == (1, 10)
    assert progress.text == "1 of 10 trajectories fully labelled"


def test_the_key_map_gives_every_element_its_part():
    """core.views.annotate.KEYS is the one key map: the keyboard bar, the rows and the client
    script's keys are read from it (pages/_step_controls.py, pages/_annotate_hints.py)."""
    assert len({key.button for key in KEYS}) == len(KEYS)
    assert len({(key.code, key.shift) for key in KEYS}) == len(KEYS)  # one button a key
    codes = key_codes()
    assert codes["plain"]["Digit3"] == "ann_key_r1" and codes["shift"]["Digit4"] == "ann_key_c4"
    assert codes["plain"]["KeyN"] == "ann_next"  # a page button: pressed, not on the bar
    assert sorted([*codes["plain"].values(), *codes["shift"].values()]) == sorted(key.button for key in KEYS)
    bar = keyboard_bar_buttons()
    assert [button for button, *_ in bar] == list(KEYBOARD_ACTIONS) and "ann_next" not in KEYBOARD_ACTIONS
    assert bar[0] == ["ann_key_r-1", "−1", "1", "rate −1 on the highlighted step and move on (1)"]
    assert ["ann_key_c5", "c5", "⇧5", "confidence 5 on the highlighted step (Shift+5)"] in bar
    rows = row_buttons()
    assert [field for field, *_ in rows] == ["rating", "rating", "rating", "first_error", "flagged"]
    assert {field for field, *_ in rows} == set(ROW_FIELDS)
    assert rows[3] == ["first_error", None, "1st err", "first error on this step (E on the highlighted step)"]
    assert "(step 4)" in keyboard_caption(4) and "N next" in keyboard_caption(4)


def test_random_sample_overlap_between_annotators():
    ids = list(range(1, 101))
    a = random_sample(ids, 20, seed=7, overlap=50, annotator="a")
    b = random_sample(ids, 20, seed=7, overlap=50, annotator="b")
    assert len(a) == len(set(a)) == 20 and len(b) == 20
    assert len(set(a) & set(b)) >= 10
    assert random_sample(ids, 20, seed=7, overlap=50, annotator="a") == a  # reproducible
    full = random_sample(ids, 20, seed=7, overlap=100, annotator="a")
    assert set(full) == set(random_sample(ids, 20, seed=7, overlap=100, annotator="b"))
    assert len(random_sample(ids[:5], 20, seed=1, overlap=0, annotator="a")) == 5


def test_assigned_lists(store):
    assert parse_assigned("3, 7, 5-6, 3") == [3, 7, 5, 6]
    assert build_queue(store, "a", QueueSpec(mode="assigned list", assigned="2,4-5")) == [2, 4, 5]
    for bad in ["x", "5-2", "1-99999999"]:
        with pytest.raises(StepScopeError):
            parse_assigned(bad)
    with pytest.raises(StepScopeError, match="no trajectory with id 99"):
        build_queue(store, "a", QueueSpec(mode="assigned list", assigned="1, 99"))


def test_every_click_is_saved_and_reported(store, tmp_path):
    step = store.steps(1)[1]
    row = save_label(store, "alice", step["id"], rating=-1)
    assert saved_message(1, row, "rating").startswith("saved: step 1 −1 at ")
    save_label(store, "alice", step["id"], first_error=True)
    save_label(store, "alice", step["id"], flagged=True)
    save_label(store, "alice", step["id"], note="unit slip")
    # Read back through a separate connection: committed, not just held in this one.
    other = Store.open(tmp_path / "data" / "app.db")
    label = my_labels(other, "alice", 1)[step["id"]]
    assert (label["rating"], label["first_error"], label["flagged"], label["note"]) == (-1, True, True, "unit slip")
    with pytest.raises(StepScopeError):
        save_label(store, "bad name!", step["id"], rating=1)
    with pytest.raises(StepScopeError):
        save_label(store, "alice", step["id"], rating=2)


# --- import and export --------------------------------------------------------------------


def test_import_an_upload_then_export_it(store, tmp_path):
    record = {"question": "What is 2 + 2?", "answer": "2 + 2 = 4\n#### 4"}
    content = (json.dumps(record) + "\n").encode()
    result = import_upload(store, data_folder(), "mine.jsonl", content, "gsm8k", dataset="imported")
    assert "mine.jsonl" in result.summary and "added" in result.summary
    assert list((data_folder() / "uploads").iterdir()) == []  # the temporary file is gone
    assert {d["dataset"] for d in store.datasets()} >= {"imported"}
    data, written, name = export_bytes(store, data_folder(), "jsonl")
    assert written > 0 and name == "stepscope-jsonl.jsonl" and b"What is 2 + 2?" in data


def test_a_bad_upload_names_the_cause_and_changes_nothing(store):
    before = store.counts()
    with pytest.raises(StepScopeError) as caught:
        import_upload(store, data_folder(), "broken.jsonl", b'{"question": "x"}\n{not json\n', "gsm8k")
    message = str(caught.value)
    assert message.startswith("broken.jsonl, line") and "uploads" not in message
    assert store.counts() == before
    with pytest.raises(StepScopeError, match="unknown import format"):
        import_upload(store, data_folder(), "a.jsonl", b"{}", "nope")
    with pytest.raises(StepScopeError, match="dataset name"):
        import_upload(store, data_folder(), "a.jsonl", b"{}", "gsm8k", dataset="../x\n")
    with pytest.raises(StepScopeError, match="needs --labels"):
        export_bytes(store, data_folder(), "trl")


# --- compare ------------------------------------------------------------------------------


def test_compare_mc_and_judges_against_humans(store):
    from core.views.compare import CONSENSUS, MAJORITY, compare, human_label, inter_annotator, labelled_steps
    from core.metrics import cohen_kappa

    steps = store.steps(1)  # three steps, every one rated by alice; bob and carol rate some
    for step, ok in zip(steps, ([True] * 4, [True, False, False, False], [False] * 4)):
        add_rollouts(store, step["id"], ok)
    store.add_verdicts([{"step_id": s["id"], "judge": "j", "kind": "step", "p_yes": p}
                        for s, p in zip(steps, (0.9, 0.2, 0.7))])
    for step, rating in zip(steps, (1, -1, -1)):
        store.save_annotation("alice", step["id"], rating=rating)
    store.save_annotation("alice", steps[1]["id"], first_error=True)
    store.save_annotation("bob", steps[0]["id"], rating=0)
    store.save_annotation("bob", steps[1]["id"], rating=1)
    store.save_annotation("carol", steps[1]["id"], rating=1)
    labelled = labelled_steps(store)
    assert [(s.idx, s.ratings) for s in labelled] == [
        (0, {"alice": 1, "bob": 0}), (1, {"alice": -1, "bob": 1, "carol": 1}), (2, {"alice": -1})]
    assert labelled[1].first_errors == {"alice"}
    assert [human_label(s, MAJORITY) for s in labelled] == [True, True, False]
    assert [human_label(s, CONSENSUS) for s in labelled] == [True, None, False]  # step 1: they disagree
    hard = compare(store, labelled, "mc-hard", "alice", "m")
    assert (hard.n, hard.missing, hard.accuracy) == (3, 0, 2 / 3)  # step 1: hard says fine, alice wrong
    assert hard.kappa.value == cohen_kappa([True, False, False], [True, True, False]).value
    assert hard.confusion[(False, True)] == 1 and hard.disagreements[0]["explore"] == "/?trajectory=1&step=1"
    assert hard.processbench.n_error == 1 and hard.processbench.error_accuracy == 0.0
    soft = compare(store, labelled, "mc-soft", "alice", "m", threshold=0.5)
    assert soft.accuracy == 1.0 and soft.kappa.value == 1.0 and soft.auroc == 1.0
    judge = compare(store, labelled, "judge:j", MAJORITY, "m")
    assert judge.n == 3 and judge.accuracy == 1 / 3
    assert compare(store, labelled, "mc-hard", "alice", "no-such-policy").missing == 3
    agreement = inter_annotator(labelled)
    assert [(p["a"], p["b"], p["steps"]) for p in agreement.pairs] == [
        ("alice", "bob", 2), ("alice", "carol", 1), ("bob", "carol", 1)]
    assert agreement.units == 2 and agreement.alpha is not None


# --- best-of-N ----------------------------------------------------------------------------


def test_best_of_n_curves(store):
    from core.views.best_of_n import curves, k_values, policy_models, samples_by_problem
    from core.metrics import pass_at_k

    # Two problems, four policy solutions each; a judge that likes the right ones.
    for p, answers in enumerate((["5", "5", "6", "7"], ["1", "2", "2", "2"])):
        problem = store.add_problem("bon", f"Question {p}?", answers[0] if p == 0 else "1")
        for i, answer in enumerate(answers):
            correct = answer == ("5" if p == 0 else "1")
            trajectory = store.add_trajectory(problem, f"Try {i}.\nThe answer is {answer}.", source="policy",
                                              model="pol", final_answer=answer, correct=correct)
            store.add_verdicts([{"trajectory_id": trajectory, "judge": "good", "kind": "outcome",
                                 "p_yes": 0.9 if correct else 0.1}])
    assert policy_models(store, "bon") == ["pol"]
    groups = samples_by_problem(store, "pol", "bon")
    assert sorted(len(v) for v in groups.values()) == [4, 4]
    points, largest = curves(groups)
    assert largest == 4 and k_values(4) == [1, 2, 4] and k_values(6) == [1, 2, 4, 6]
    by = {(p.method, p.k): p for p in points}
    assert by[("pass@k", 1)].value == (pass_at_k(4, 2, 1) + pass_at_k(4, 1, 1)) / 2
    assert by[("pass@k", 4)].value == 1.0
    assert by[("best-of-k: good", 4)].value == 1.0  # the judge picks a right one whenever there is one
    assert by[("majority vote", 4)].value == 0.5  # problem 0: "5" wins; problem 1: "2" (wrong) wins
    assert all(p.low is None or p.low <= p.value <= p.high for p in points)
    assert curves({1: groups[next(iter(groups))][:1]}) == ([], 0)


def test_fast_best_of_k_and_majority_equal_the_metrics_module():
    import random

    from core import metrics
    from core.views.best_of_n import best_of_k, majority_vote

    rng = random.Random(3)
    for _ in range(300):
        n = rng.randint(1, 7)
        scores = [rng.choice([0.1, 0.5, 0.5, 0.9, rng.random()]) for _ in range(n)]
        answers = [rng.choice(["1", "2", "3", None]) for _ in range(n)]
        correct = [a == "1" for a in answers]
        for k in range(1, n + 1):
            assert best_of_k(scores, correct, k) == pytest.approx(metrics.best_of_k(scores, correct, k), abs=1e-12)
            assert majority_vote(answers, correct, k) == pytest.approx(metrics.majority_vote(answers, correct, k))


def test_queue_judges_one_job_per_judge_and_kind(store):
    from core.views.jobs import queue_judges

    ids = queue_judges(store, ["judge-a", " judge-b "], ["step", "outcome"], [1])
    jobs = [store.get_job(i) for i in ids]
    assert [(j["kind"], j["manifest"]["model"], j["manifest"]["kind"]) for j in jobs] == [
        ("judge", "judge-a", "step"), ("judge", "judge-a", "outcome"),
        ("judge", "judge-b", "step"), ("judge", "judge-b", "outcome")]
    assert [j["id"] for j in active_jobs(store, 1)] == ids
    for judges, kinds, cause in (([" "], ["step"], "at least one judge"), (["j"], [], "step and/or outcome"),
                                 (["j"], ["critic!"], "verdict kinds")):
        with pytest.raises(StepScopeError, match=cause):
            queue_judges(store, judges, kinds, [1])
    with pytest.raises(StepScopeError, match="does not exist"):
        queue_judges(store, ["j"], ["step"], [999])


def test_judge_models_from_the_sidebar():
    from core.views.inputs import POLICY_AS_JUDGE, judge_models

    assert judge_models([POLICY_AS_JUDGE], "", "pol") == ["pol"]
    assert judge_models([], " ,, ", "pol") == ["pol"]  # none named: the policy judges itself
    assert judge_models(["big", POLICY_AS_JUDGE], "org/j, big ,pol", "pol") == ["big", "pol", "org/j"]


def test_queue_generate_from_the_app(store):
    from core.views.jobs import queue_generate

    job_id = queue_generate(store, EstimateRequest(policy="tiny", max_new_tokens=32, seed=5), "sample", 3, limit=4)
    job = store.get_job(job_id)
    assert (job["kind"], job["planned"], job["manifest"]["k"], job["manifest"]["problem_ids"]) == ("generate", 12, 3, [1, 2, 3, 4])
    assert job["manifest"]["sampling"]["max_new_tokens"] == 32 and job["manifest"]["sampling"]["seed"] == 5
    assert job_progress(job).text == "queued: waits for the worker"
    store.update_job(job_id, status="running", done=6, tokens=60, started_at="2026-01-01T00:00:00+00:00")
    assert "6/12 solutions" in job_progress(store.get_job(job_id)).text
    for args, cause in ((("no-such-set", 2), "has no problems"), (("sample", 0), "k \\(solutions"),
                        (("sample", 2, 0), "number of problems")):
        with pytest.raises(StepScopeError, match=cause):
            queue_generate(store, EstimateRequest(policy="tiny"), *args)
    with pytest.raises(StepScopeError, match="choose a policy"):
        queue_generate(store, EstimateRequest(policy=" "), "sample", 2)


def test_queue_judging_with_probe_verifiers(store, tmp_path):
    from core.views.jobs import queue_judging, trained_verifiers

    assert trained_verifiers(store) == {}
    with pytest.raises(StepScopeError, match="or a trained verifier"):
        queue_judging(store, ["j"], [], [], [1])
    assert [store.get_job(i)["manifest"]["kind"] for i in queue_judging(store, ["j"], ["outcome"], [], [1])] == ["outcome"]
    with pytest.raises(StepScopeError, match="cannot read the probe verifier|probe"):
        queue_judging(store, ["j"], [], [str(tmp_path / "no-such-probe")], [1])
    # A saved probe verifier (a constant one: what it predicts does not matter to queueing).
    from core.probes import ConstantProbe, save_probe, verifiers_dir

    folder = verifiers_dir(store) / "orm-tiny"
    save_probe(folder, ConstantProbe(0.5), {"judge": "probe-orm:tiny", "base": "tiny", "kind": "outcome"}, {})
    assert trained_verifiers(store) == {str(folder): "probe-orm:tiny"}
    ids = queue_judging(store, ["j"], ["step"], [str(folder)], [1, 2])
    manifests = [store.get_job(i)["manifest"] for i in ids]
    assert [(m["judge"], m["kind"], m["mode"], m["trajectory_ids"]) for m in manifests] == [
        ("j", "step", "logprob", [1, 2]), ("probe-orm:tiny", "outcome", "probe", [1, 2])]
    # A damaged manifest next to the database: the picker offers nothing rather than failing.
    damaged = store.path.parent / "verifiers" / "broken"
    damaged.mkdir(parents=True)
    (damaged / "manifest.json").write_text("{not json")
    assert trained_verifiers(store) == {}


def test_queue_judge_solutions_of_a_policy(store):
    from core.views.jobs import queue_judge_solutions

    problem = store.add_problem("bon", "2 + 2?", "4")
    mine = [store.add_trajectory(problem, f"Try {i}: {a}.", source="policy", model="pol", final_answer=a,
                                 correct=a == "4") for i, a in enumerate("45")]
    store.add_trajectory(problem, "Other: 4.", source="policy", model="other-pol", final_answer="4", correct=True)
    ids = queue_judge_solutions(store, ["j"], ["outcome", "step"], "bon", "pol")
    assert [store.get_job(i)["manifest"]["trajectory_ids"] for i in ids] == [mine, mine]
    assert queue_judge_solutions(store, ["j"], ["outcome"], None, "pol")  # every dataset
    with pytest.raises(StepScopeError, match="no generated solutions in dataset 'sample'"):
        queue_judge_solutions(store, ["j"], ["outcome"], "sample", "pol")  # the sample set's are handwritten
