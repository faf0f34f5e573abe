"""The model splitter (issue 26, core/jobs/split.py): a model chooses which sentences and lines
start a step, in chunks, as a job on any engine; what it writes only ever selects among candidate
positions, so the steps cover the text exactly; answers that do not read fall back to the
sentence rule, counted.

A scripted engine (below) answers with designed boundaries: it reads the numbered units out of each
prompt and lists those the test chose, so the test knows the exact steps the job must store. One
run uses the tiny random transformer: its answers are noise, so it shows the job completes on a
real engine and stores a valid segmentation, not that the steps are good. Boundary F1 on the
hand-marked traces of tests/test_splitters.py means nothing for a random model; here it is
measured only for an oracle engine that answers with the hand marks, which shows that the
candidate positions hold every hand-marked boundary (F1 1.0 is reachable by a good model).
"""

from __future__ import annotations

import random
import re
import sys
from typing import Callable, Sequence

import pytest

from core.engines.base import EngineInfo, Sample, SamplingParams
from core.errors import StepScopeError
from core.jobs.registry import spec_of
from core.jobs.runner import EngineCache, claim_job, queue, retry_job, run_job
from core.jobs.split import (
    DEFAULT_CHUNK_CHARS, DEFAULT_MAX_NEW_TOKENS, DEFAULT_TEMPLATE, SplitSpec, assemble_split, plan_split,
    read_boundaries, split_counts,
)  # fmt: skip
from core.steps import (
    candidate_units, check_cutting_rule, is_model_rule, is_rule, map_spans, parse_rule, segment,
)  # fmt: skip
from core.store import Store

_NUMBERED = re.compile(r"^\[(\d+)\] (.*)$", re.MULTILINE)


class ScriptedSplitter:
    """An engine that answers a split prompt by `answer(numbered unit texts)`; no chat template."""

    def __init__(self, answer: Callable[[list[str]], str], fail_at_call: int | None = None) -> None:
        self.answer, self.fail_at_call = answer, fail_at_call
        self.info = EngineInfo(engine="scripted", model="scripted", device="cpu", extra={"parameters": 1000})
        self.calls = 0
        self.prompts: list[str] = []

    def generate(self, prompts: Sequence[str], params: SamplingParams) -> list[list[Sample]]:
        self.calls += 1
        if self.fail_at_call is not None and self.calls >= self.fail_at_call:
            raise RuntimeError("killed mid-job")
        assert params.temperature == 0.0  # greedy: a rerun answers the same
        self.prompts += prompts
        return [[Sample(self.answer([text for _, text in _NUMBERED.findall(p)]), 3, "stop")] for p in prompts]

    def candidate_logprobs(self, prompts, candidates):
        raise NotImplementedError

    def render_chat(self, messages, add_generation_prompt=True):
        raise StepScopeError("the scripted splitter has no chat template")

    def close(self) -> None:
        pass


def starters(chosen: set[str]) -> Callable[[list[str]], str]:
    """Answer with the numbers of the units whose text the test chose to start a step."""
    return lambda units: ", ".join(str(i) for i, text in enumerate(units, 1) if text in chosen) or "none"


def run(store: Store, spec: SplitSpec, engine) -> tuple[int, str]:
    job_id = queue(store, spec)
    status = run_job(store, claim_job(store, job_id), EngineCache(lambda *args, **options: engine))
    return job_id, status


def text_of(n_units: int, seed: int) -> str:
    """Unique sentences and lines, some sharing a line, some on their own, some blank lines between."""
    rng = random.Random(seed)
    pieces = []
    for i in range(n_units):
        sentence = f"Unit {i} says {rng.choice(['x = 3', 'so 12 - 5 = 7', 'wait, check it', 'e.g. this'])}"
        if rng.random() < 0.3:
            pieces.append(sentence + "\n" + ("\n" if rng.random() < 0.3 else ""))  # a line without a full stop
        else:
            pieces.append(sentence + rng.choice([". ", "! ", "? ", ".\n", ".\n\n"]))
    return "".join(pieces)


def covers(solution: str, spans) -> bool:
    """The steps, in order, with the whitespace between them, are the text: nothing lost, moved or added."""
    rebuilt, at = "", 0
    for span in spans:
        if span.start < at or solution[span.start : span.end] != span.text or solution[at : span.start].strip():
            return False
        rebuilt += solution[at : span.start] + span.text
        at = span.end
    return not solution[at:].strip() and rebuilt + solution[at:] == solution


@pytest.fixture
def store(tmp_path) -> Store:
    return Store.open(tmp_path / "split.db")


def add(store: Store, solution: str, rule: str = "line") -> int:
    problem = store.add_problem("split-test", f"Question {hash(solution)}?", "7")
    return store.add_trajectory(problem, solution, source="test", rule=rule)


# --- the job yields the designed boundaries -------------------------------------------------------


def test_the_job_stores_exactly_the_designed_boundaries_as_a_current_model_segmentation(store):
    solution = text_of(60, seed=1)
    units = candidate_units(solution)
    rng = random.Random(2)
    chosen = {units[0].text} | {u.text for u in units[1:] if rng.random() < 0.4}
    tid = add(store, solution)
    engine = ScriptedSplitter(starters(chosen))
    spec = SplitSpec(model="scripted", trajectory_ids=(tid,), chunk_chars=200, chunks_per_call=3)
    job_id, status = run(store, spec, engine)
    assert status == "done"

    steps = store.steps(tid)
    assert [s["start_char"] for s in steps] == [u.start for u in units if u.text in chosen]
    assert covers(solution, [parse_step(s) for s in steps])
    trajectory = store.get_trajectory(tid)
    assert trajectory["rule"] == spec.rule() and is_model_rule(spec.rule())
    job = store.get_job(job_id)
    plan = plan_split(solution, 200)
    assert len(plan.chunks) > 5 and engine.calls == -(-len(plan.chunks) // 3)  # several chunks, 3 per call
    assert split_counts(job["manifest"]) == {"trajectories": 1, "reused": 0, "chunks": len(plan.chunks),
                                             "fallback_chunks": 0}  # fmt: skip
    manifest = job["manifest"]
    assert manifest["model"] == "scripted" and manifest["chunk_chars"] == 200 and manifest["rule"] == spec.rule()
    assert manifest["template"]["name"] == DEFAULT_TEMPLATE and manifest["template"]["sha256"]
    # Compute is counted as for every job: tokens the model wrote, its calls and seconds.
    compute = job["compute"]
    assert compute["engine_calls"] == engine.calls and compute["verifier_generated_tokens"] == 3 * len(plan.chunks)
    assert compute["total_seconds"] > 0 and job["tokens"] == 3 * len(plan.chunks)
    # The chunk before gives context; each chunk numbers its own units from 1.
    assert "Text just before this part:\n(none: this is the start of the solution)" in engine.prompts[0]
    assert f"Text just before this part:\n{units[plan.chunks[1][0] - 1].text}" in engine.prompts[1]


def parse_step(row: dict):
    from core.steps import StepSpan

    return StepSpan(row["text"], row["start_char"], row["end_char"])


def test_a_chunk_that_starts_mid_step_continues_it_unless_its_first_unit_is_chosen(store):
    solution = "A one. A two. A three.\nB one. B two."
    tid = add(store, solution)
    # Chunks of about one line: the second chunk's answer leaves out 1, so B one continues A's step.
    engine = ScriptedSplitter(lambda units: "3" if len(units) == 3 else "2")
    run(store, SplitSpec(model="scripted", trajectory_ids=(tid,), chunk_chars=22), engine)
    assert [s["text"] for s in store.steps(tid)] == ["A one. A two.", "A three.\nB one.", "B two."]


# --- answers that do not read ------------------------------------------------------------------------


@pytest.mark.parametrize("answer, count, read", [
    ("1, 3, 4", 5, {1, 3, 4}),
    ("  2 3\n[1] copied text", 3, {2, 3}),
    ("Numbers: [1], [3].", 3, {1, 3}),
    ("2; 4 and 5", 5, {2, 4, 5}),
    ("none", 4, set()),
    ("None.", 4, set()),
    ("\n\n1,2", 2, {1, 2}),
    ("1\n2\n4\nThe steps are above.", 4, {1, 2, 4}),  # one number per line, then prose: the list ends there
    ("1\n\n3", 3, {1}),  # a blank line ends the list
    ("", 3, None),
    ("7", 3, None),  # outside 1..count
    ("0, 1", 3, None),
    ("[1] First, 3 + 4 = 7.", 3, None),  # the model copies the text instead of answering
    ("Sentences 1 and 3", 3, None),
    ("1, 2, and then", 3, None),
    ("one, three", 3, None),
])  # fmt: skip
def test_an_answer_reads_only_as_numbers_within_the_chunk(answer, count, read):
    assert read_boundaries(answer, count) == (None if read is None else frozenset(read))


def test_answers_that_do_not_read_fall_back_to_the_sentence_rule_and_are_counted(store):
    solution = text_of(50, seed=3)
    units = candidate_units(solution)
    chosen = {u.text for u in units[::4]}
    plan = plan_split(solution, 150)
    bad = {1, 4, 5}  # chunks (by position) that get garbage
    answers = iter(range(len(plan.chunks)))
    garbage = ["[1] Unit copied back", "99", "", "Step 1: yes"]

    def answer(chunk_units: list[str]) -> str:
        index = next(answers)
        return garbage[index % len(garbage)] if index in bad else starters(chosen)(chunk_units)

    tid = add(store, solution)
    job_id, status = run(store, SplitSpec(model="scripted", trajectory_ids=(tid,), chunk_chars=150,
                                          chunks_per_call=len(plan.chunks)), ScriptedSplitter(answer))  # fmt: skip
    assert status == "done"
    counts = split_counts(store.get_job(job_id)["manifest"])
    assert counts["fallback_chunks"] == len(bad) and counts["chunks"] == len(plan.chunks)
    # The expected steps: chosen units in good chunks, sentence-rule starts in bad ones.
    ends = {s.end for s in segment(solution, "sentence")}
    expected = {0}
    for position, (first, end) in enumerate(plan.chunks):
        for i in range(max(first, 1), end):
            if (position in bad and units[i - 1].end in ends) or (position not in bad and units[i].text in chosen):
                expected.add(i)
    assert [s["start_char"] for s in store.steps(tid)] == [units[i].start for i in sorted(expected)]


def test_when_every_answer_fails_the_steps_are_the_sentence_rules():
    for seed in range(20):
        solution = text_of(30, seed)
        plan = plan_split(solution, 120)
        result = assemble_split(plan, ["garbage"] * len(plan.chunks))
        assert result.spans == segment(solution, "sentence") and result.fallback_chunks == len(plan.chunks)


# --- the steps always cover the text ------------------------------------------------------------------

_ALPHABET = ["Wait", "x", "3.5", "e.g.", "So", "(a)", "<<3*4=12>>", "12 + 7 = 19", "Mr.", "ok", "\u00e9t\u00e9", "$"]


def random_text(rng: random.Random) -> str:
    parts = []
    for _ in range(rng.randint(0, 60)):
        parts.append(rng.choice(_ALPHABET))
        parts.append(rng.choice([" ", " ", ". ", "! ", "? ", "\n", "\n\n", "  \n \t", ".\r\n", "", ".\" "]))
    return rng.choice(["", " ", "\n"]) + "".join(parts)


def random_answer(rng: random.Random, count: int) -> str:
    return rng.choice([
        ", ".join(str(rng.randint(1, count)) for _ in range(rng.randint(0, count))),
        ", ".join(str(rng.randint(-2, count + 3)) for _ in range(rng.randint(1, 4))),
        "none", "", "[1] " + "copy " * rng.randint(0, 5), "1\n2\n3", "\n " + str(rng.randint(1, count)),
    ])  # fmt: skip


def test_for_random_texts_and_answers_the_steps_cover_the_text_exactly():
    rng = random.Random(26)
    for _ in range(400):
        solution = random_text(rng)
        plan = plan_split(solution, rng.choice([1, 10, 40, 200, 5000]))
        answers = [random_answer(rng, end - first) for first, end in plan.chunks]
        result = assemble_split(plan, answers)
        assert covers(solution, result.spans), (solution, answers)
        assert all(span.text.strip() == span.text and span.text for span in result.spans)
        # Every step boundary is a candidate position: the start of a sentence or a line.
        assert {s.start for s in result.spans} <= {u.start for u in plan.units}
        # Chunks partition the units, in order.
        assert [i for first, end in plan.chunks for i in range(first, end)] == list(range(len(plan.units)))


def test_the_job_stores_a_covering_segmentation_for_random_texts(store):
    rng = random.Random(7)
    solutions = [s for s in (random_text(rng) for _ in range(12)) if s.strip()]
    ids = tuple(add(store, s) for s in solutions)
    engine = ScriptedSplitter(lambda units: random_answer(rng, len(units)))
    _, status = run(store, SplitSpec(model="scripted", trajectory_ids=ids, chunk_chars=60), engine)
    assert status == "done"
    for tid, solution in zip(ids, solutions):
        assert covers(solution, store.step_spans(tid))


# --- labels, values and verdicts map by character span -------------------------------------------------


def test_labels_move_onto_the_model_steps_by_character_span(store):
    solution = "First, 3 + 4 = 7. Then 7 * 2 = 14.\nWait, 7 * 2 = 14. Yes.\nSo the answer is 14."
    tid = add(store, solution, rule="sentence")
    sentences = store.steps(tid)
    store.add_annotation("ann", sentences[0]["id"], rating=1)
    store.add_annotation("ann", sentences[1]["id"], rating=-1, first_error=True, note="wrong")
    store.add_annotation("ann", sentences[3]["id"], rating=1)
    # The model groups: [First. Then.] [Wait. Yes.] [So ...]
    chosen = {"First, 3 + 4 = 7.", "Wait, 7 * 2 = 14.", "So the answer is 14."}
    _, status = run(store, SplitSpec(model="scripted", trajectory_ids=(tid,), move_labels=True),
                         ScriptedSplitter(starters(chosen)))  # fmt: skip
    assert status == "done"
    steps = store.steps(tid)
    assert [s["text"] for s in steps] == ["First, 3 + 4 = 7. Then 7 * 2 = 14.", "Wait, 7 * 2 = 14. Yes.",
                                          "So the answer is 14."]  # fmt: skip
    rows = store.conn.execute("SELECT step_id, rating, first_error FROM annotations").fetchall()
    labels = {step_id: {"rating": rating, "first_error": first_error} for step_id, rating, first_error in rows}
    # Two sentence labels land on the first model step: the lowest rating, the first error, the note.
    assert labels[steps[0]["id"]]["rating"] == -1 and labels[steps[0]["id"]]["first_error"] == 1
    assert labels[steps[1]["id"]]["rating"] == 1 and steps[2]["id"] not in labels
    # And the mapping reads back the other way: model steps onto the sentence segmentation.
    model_seg = store.get_trajectory(tid)["segmentation_id"]
    sentence_seg = sentences[0]["segmentation_id"]
    mapped = store.map_segmentation(model_seg, sentence_seg, how="overlaps")
    assert mapped.unmapped["label"] == 0 and len(mapped.of("label")) == 2
    assert map_spans(store.step_spans(tid, sentence_seg), store.step_spans(tid), "contains") == [(0,), (0,), (1,), (1,), (2,)]


# --- the rule grammar ---------------------------------------------------------------------------------


def test_a_model_rule_is_a_rule_that_cuts_nothing(store):
    rule = "model:0123abcd0123abcd"
    assert is_rule(rule) and is_model_rule(rule) and parse_rule(rule).text() == rule
    assert not is_rule("model") and not is_rule("model:XYZ") and not is_model_rule("sentence")
    for refusing in (lambda: segment("A. B.", rule), lambda: check_cutting_rule(rule)):
        with pytest.raises(StepScopeError, match="split job chose its steps"):
            refusing()
    with pytest.raises(StepScopeError, match="model:FINGERPRINT"):
        parse_rule("model:nothex")
    tid = add(store, "A one. A two.\nB one.")
    # Resegmenting by a model rule makes a stored one current; it never cuts one.
    with pytest.raises(StepScopeError, match="has no segmentation by 'model:0123abcd0123abcd'"):
        store.resegment_many([tid], rule)
    spec = SplitSpec(model="scripted", trajectory_ids=(tid,))
    run(store, spec, ScriptedSplitter(lambda units: "1"))
    store.resegment_many([tid], "line")
    assert store.get_trajectory(tid)["rule"] == "line"
    tally = store.resegment_many([tid], spec.rule())
    assert store.get_trajectory(tid)["rule"] == spec.rule() and tally.new_segmentations == 0


def test_a_tree_search_refuses_a_model_segmentation_in_one_line(store):
    from core.jobs.tree_search import check_rebuildable

    tid = add(store, "A one. A two.")
    spec = SplitSpec(model="scripted", trajectory_ids=(tid,))
    run(store, spec, ScriptedSplitter(lambda units: "1, 2"))
    with pytest.raises(StepScopeError, match="cannot rebuild exactly"):
        check_rebuildable(store.get_trajectory(tid)["rule"], tid)


def test_explore_lists_the_model_segmentation_and_switches_back_to_it(store):
    from core.views.segmentations import split_trajectory, splitter_choices

    tid = add(store, "A one. A two.\nB one.")
    spec = SplitSpec(model="scripted", trajectory_ids=(tid,))
    run(store, spec, ScriptedSplitter(lambda units: "1, 3"))
    split_trajectory(store, tid, "sentence", move_labels=False)
    choices = {choice.rule: choice for choice in splitter_choices(store, tid)}
    assert choices[spec.rule()].steps == 2 and not choices[spec.rule()].current
    message = split_trajectory(store, tid, spec.rule(), move_labels=False)
    assert "an existing segmentation, current again" in message and store.get_trajectory(tid)["rule"] == spec.rule()
    with pytest.raises(StepScopeError, match="model:FINGERPRINT"):
        split_trajectory(store, tid, "model", move_labels=False)


# --- the spec ---------------------------------------------------------------------------------------


def test_the_spec_round_trips_and_its_fingerprint_says_what_decides_the_steps(store, tmp_path):
    tid = add(store, "A one. A two.")
    template = tmp_path / "mine.txt"
    template.write_text("Split these:\n{sentences}\nNumbers:")
    spec = SplitSpec(model="tiny", trajectory_ids=(tid,), chunk_chars=300, template=str(template), chat=False,
                     max_new_tokens=20, move_labels=True, chunks_per_call=2, engine="vllm")  # fmt: skip
    job = store.get_job(queue(store, spec))
    rebuilt = spec_of(job)
    assert rebuilt == spec and rebuilt.rule() == spec.rule() == job["manifest"]["rule"]
    assert rebuilt.to_manifest(store) | {"code_version": None} == job["manifest"] | {"code_version": None}
    # A template edited after queueing does not change what the queued job asks; a new job reads the
    # new text, and its rule says so.
    template.write_text("Something else {sentences}")
    assert spec_of(job).rule() == job["manifest"]["rule"] != spec.rule()
    base = SplitSpec(model="tiny", trajectory_ids=(tid,))
    others = [SplitSpec(model="other", trajectory_ids=(tid,)), SplitSpec(model="tiny", trajectory_ids=(tid,), chunk_chars=9),
              SplitSpec(model="tiny", trajectory_ids=(tid,), max_new_tokens=9), SplitSpec(model="tiny", trajectory_ids=(tid,), chat=True)]
    assert len({base.rule(), *(o.rule() for o in others)}) == 5
    # Which trajectories and which engine do not change the splitter.
    assert SplitSpec(model="tiny", trajectory_ids=(tid, tid), engine="vllm").rule() == base.rule()
    for bad, match in [(dict(model=" "), "name the model"), (dict(chunk_chars=0), "chunk characters"),
                       (dict(trajectory_ids=(999,)), "does not exist"), (dict(template="no-such"), "cannot read split template")]:
        with pytest.raises(StepScopeError, match=match):
            queue(store, SplitSpec(**{"model": "tiny", "trajectory_ids": (tid,), **bad}))


def test_the_cli_defaults_are_the_specs():
    import inspect

    from core.cli.segmentations import split_command

    defaults = {name: p.default for name, p in inspect.signature(split_command).parameters.items()}
    assert (defaults["chunk_chars"], defaults["template"], defaults["max_new_tokens"]) == (
        DEFAULT_CHUNK_CHARS, DEFAULT_TEMPLATE, DEFAULT_MAX_NEW_TOKENS)


# --- resumed after a kill at a chunk -----------------------------------------------------------------


def test_a_job_killed_at_a_chunk_resumes_to_the_same_steps_and_counts(tmp_path):
    solutions = [text_of(25, seed) for seed in range(6)]
    rng = random.Random(5)
    chosen = {u.text for s in solutions for u in candidate_units(s) if rng.random() < 0.35}

    def split(db: str, fail_at_call: int | None) -> tuple[Store, int, list, str]:
        store = Store.open(tmp_path / db)
        ids = tuple(add(store, s) for s in solutions)
        spec = SplitSpec(model="scripted", trajectory_ids=ids, chunk_chars=150, chunks_per_call=4)
        job_id, status = run(store, spec, ScriptedSplitter(starters(chosen), fail_at_call))
        return store, job_id, [[(s.start, s.end) for s in store.step_spans(t)] for t in ids], status

    whole, whole_job, expected, status = split("whole.db", None)
    assert status == "done"
    killed, job_id, _, status = split("killed.db", fail_at_call=5)
    assert status == "failed" and "killed mid-job" in killed.get_job(job_id)["error"]
    partly = split_counts(killed.get_job(job_id)["manifest"])
    assert 0 < partly["trajectories"] < len(solutions)  # the kill landed mid-job, some trajectories stored
    retry_job(killed, job_id)
    engine = ScriptedSplitter(starters(chosen))
    status = run_job(killed, claim_job(killed, job_id), EngineCache(lambda *a, **o: engine))
    assert status == "done"
    ids = [t["id"] for t in killed.list_trajectories()]
    assert [[(s.start, s.end) for s in killed.step_spans(t)] for t in sorted(ids)] == expected
    # Counted once each: the trajectories stored before the kill are reused, not split again.
    after = split_counts(killed.get_job(job_id)["manifest"])
    assert after["trajectories"] + after["reused"] - partly["trajectories"] == len(solutions)
    assert after["chunks"] == split_counts(whole.get_job(whole_job)["manifest"])["chunks"]
    assert killed.get_job(job_id)["compute"]["engine_calls"] > 0


# --- the hand-marked traces: what a perfect model could reach ------------------------------------------


def test_every_hand_marked_boundary_is_a_candidate_so_an_oracle_model_scores_f1_one(store):
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
    from test_splitters import HAND_MARKED, unmarked

    for marked in HAND_MARKED:
        solution, gold = unmarked(marked)
        starts = {u.text for u in candidate_units(solution) if u.start in gold}
        tid = add(store, solution)
        run(store, SplitSpec(model="oracle", trajectory_ids=(tid,), chunk_chars=150), ScriptedSplitter(starters(starts)))
        assert {s.start for s in store.step_spans(tid)[1:]} == gold


# --- a real engine ------------------------------------------------------------------------------------


def test_a_run_on_the_tiny_random_transformer_stores_a_valid_segmentation(store, tiny_engine, one_torch_thread):
    solutions = ["Tom has 3 + 5 = 8 apples. The answer is 8.", "Step 1: 12 * 4 = 48.\nStep 2: 48 - 6 = 42.\n#### 42"]
    ids = tuple(add(store, s) for s in solutions)
    job_id, status = run(store, SplitSpec(model="tiny", trajectory_ids=ids, max_new_tokens=8, chunk_chars=30),
                         tiny_engine)  # fmt: skip
    assert status == "done", store.get_job(job_id)["error"]
    job = store.get_job(job_id)
    counts = split_counts(job["manifest"])
    assert counts["trajectories"] == 2 and counts["chunks"] >= 3
    assert 0 <= counts["fallback_chunks"] <= counts["chunks"]  # a random model's answers mostly do not read
    for tid, solution in zip(ids, solutions):
        trajectory = store.get_trajectory(tid)
        assert trajectory["rule"] == job["manifest"]["rule"] and covers(solution, store.step_spans(tid))
    if counts["fallback_chunks"] == counts["chunks"]:  # what this random model does: noise that never reads
        assert [store.step_spans(tid) for tid in ids] == [segment(s, "sentence") for s in solutions]
    compute = job["compute"]
    assert compute["verifier_generated_tokens"] > 0 and compute["verifier_tokens"] > 0 and compute["engine_seconds"] > 0


def test_stepscope_split_runs_the_job_and_says_what_fell_back(tmp_path, tiny_model_dir, monkeypatch, capsys,
                                                              one_torch_thread):  # fmt: skip
    from cli_runner import run_in_process

    db = tmp_path / "cli.db"
    store = Store.open(db)
    tid = add(store, "Tom has 3 + 5 = 8 apples. He eats 2.\nSo 8 - 2 = 6. The answer is 6.")

    def stepscope(*args: str) -> tuple[int, str, str]:
        result = run_in_process(monkeypatch, capsys, *args, "--db", str(db), columns=300)
        return result.returncode, result.stdout, result.stderr

    code, _, err = stepscope("split", "--model", str(tiny_model_dir))
    assert code == 2 and "name one trajectory or one dataset" in err
    code, out, err = stepscope("split", "--model", str(tiny_model_dir), "--trajectory", str(tid), "--device", "cpu",
                               "--max-new-tokens", "4", "--chunk-chars", "40")  # fmt: skip
    assert code == 0, err
    rule = store.get_trajectory(tid)["rule"]
    assert is_model_rule(rule) and f"1 trajectories cut by {rule!r}" in out and "fell back to the sentence rule" in out
    counts = split_counts(store.list_jobs()[0]["manifest"])
    assert f"{counts['chunks']} chunks asked, {counts['fallback_chunks']} fell back" in out
    # Back to lines, then to the model's steps by its rule; a rule cannot cut a model segmentation anew.
    assert stepscope("resegment", "--trajectory", str(tid), "--rule", "line")[0] == 0
    code, out, _ = stepscope("resegment", "--trajectory", str(tid), "--rule", rule)
    assert code == 0 and "0 new segmentations" in out and store.get_trajectory(tid)["rule"] == rule
    code, _, err = stepscope("resegment", "--trajectory", str(tid), "--rule", "model")
    assert code == 2 and "model:FINGERPRINT" in err


def test_the_job_runs_on_an_openai_compatible_server_through_the_real_client(store):
    """Any engine: the runner loads the openai engine by name, as for every job; the server here
    answers each prompt with its designed boundaries (test_openai_engine's scripted server)."""
    from test_openai_engine import MODEL, ScriptedServer

    solution = text_of(30, seed=11)
    chosen = {u.text for u in candidate_units(solution)[::3]}

    class BoundaryServer(ScriptedServer):
        def completion(self, body: dict) -> dict:
            reply = super().completion(body)
            answer = starters(chosen)([text for _, text in _NUMBERED.findall(body["prompt"])])
            reply["choices"] = [{**choice, "text": answer} for choice in reply["choices"]]
            return reply

    server = BoundaryServer()
    try:
        tid = add(store, solution)
        spec = SplitSpec(model=MODEL, trajectory_ids=(tid,), chunk_chars=150, engine="openai",
                         engine_options={"base_urls": [server.base_url]})  # fmt: skip
        job_id = queue(store, spec)
        assert run_job(store, claim_job(store, job_id), EngineCache()) == "done", store.get_job(job_id)["error"]
    finally:
        server.stop()
    units = candidate_units(solution)
    assert [s.start for s in store.step_spans(tid)] == [u.start for u in units if u.text in chosen]
    assert all(request["temperature"] == 0 for request in server.requests)
    job = store.get_job(job_id)
    assert job["manifest"]["engine"] == "openai" and job["compute"]["engine_calls"] >= 1


def test_a_cancelled_job_stops_before_its_next_call_and_resumes_where_it_stopped(store):
    solutions = [text_of(20, seed) for seed in range(4)]
    ids = tuple(add(store, s) for s in solutions)
    engine = ScriptedSplitter(lambda units: "1, 2")
    spec = SplitSpec(model="scripted", trajectory_ids=ids, chunk_chars=100, chunks_per_call=2)
    job_id = queue(store, spec)

    def cancel_after_first_group(progress) -> None:
        if progress.done:
            store.cancel_job(job_id)

    status = run_job(store, claim_job(store, job_id), EngineCache(lambda *a, **o: engine),
                     on_progress=cancel_after_first_group)  # fmt: skip
    assert status == "cancelled"
    split = [t for t in ids if store.get_trajectory(t)["rule"] == spec.rule()]
    assert 0 < len(split) < len(ids)
    retry_job(store, job_id)
    calls_before = engine.calls
    assert run_job(store, claim_job(store, job_id), EngineCache(lambda *a, **o: engine)) == "done"
    total_chunks = sum(len(plan_split(s, 100).chunks) for s in solutions)
    assert engine.calls - calls_before < -(-total_chunks // 2)  # the split ones were not asked again
    counts = split_counts(store.get_job(job_id)["manifest"])
    assert counts["trajectories"] == len(ids) and counts["reused"] == len(split) and counts["chunks"] == total_chunks
    assert all(store.get_trajectory(t)["rule"] == spec.rule() for t in ids)
