"""Long reasoning traces (issue 26): labels moved between segmentations by character span,
import of reasoning traces (OpenR1-Math, chat with a reasoning field, plain text), and the
synthetic long traces of core/synth."""

from __future__ import annotations

import pytest

from core.errors import StepScopeError
from core.steps import map_spans, segment
from core.store import Store

TRACE = (
    "First, 4 * 3 = 12 pens. Then 12 + 5 = 18 dollars.\n\n"
    "Wait, 12 + 5 is 17. So the total is 17.\n\n"
    "The answer is 17."
)


@pytest.fixture
def store(tmp_path) -> Store:
    s = Store(tmp_path / "stepscope.db")
    yield s
    s.close()


# --- moving labels between segmentations ------------------------------------------------------


def two_segmentations(store: Store) -> tuple[int, int, int]:
    """A trajectory cut by sentence (current) and by paragraph: (trajectory, sentences, paragraphs)."""
    problem = store.add_problem("t", "Mia buys 4 pens at 3 dollars and a 5 dollar notebook. Total?", "17")
    trajectory = store.add_trajectory(problem, TRACE, source="test", rule="sentence")
    sentences = store.get_trajectory(trajectory)["segmentation_id"]
    paragraphs = store.add_segmentation(trajectory, "paragraph", make_current=False)
    return trajectory, sentences, paragraphs


def test_map_spans_by_containment_overlap_and_prefix_end():
    sentences, paragraphs = segment(TRACE, "sentence"), segment(TRACE, "paragraph")
    assert len(sentences) == 5 and len(paragraphs) == 3
    assert map_spans(sentences, paragraphs, "contains") == [(0,), (0,), (1,), (1,), (2,)]
    assert map_spans(paragraphs, sentences, "contains") == [(), (), (4,)]  # only the one-sentence paragraph
    assert map_spans(paragraphs, sentences, "overlaps") == [(0, 1), (2, 3), (4,)]
    assert map_spans(sentences, paragraphs, "same-end") == [(), (0,), (), (1,), (2,)]
    with pytest.raises(StepScopeError, match="span match"):
        map_spans(sentences, paragraphs, "nearby")


def test_labels_moved_to_another_segmentation_keep_their_character_spans(store):
    trajectory, sentences, paragraphs = two_segmentations(store)
    ids, spans = store.segmentation_steps(sentences)
    store.save_annotation("ann", ids[1], rating=-1, first_error=True, category="calculation", note="18 is wrong")
    store.save_annotation("ann", ids[0], rating=1, confidence=4)
    store.save_annotation("ann", ids[3], rating=1, confidence=2)
    store.save_annotation("bob", ids[4], rating=1)
    store.add_verdicts([{"judge": "j", "kind": "step", "step_id": ids[2], "p_yes": 0.9},
                        {"judge": "j", "kind": "step", "step_id": ids[0], "p_yes": 0.7}])  # fmt: skip
    store.add_rollouts([{"step_id": ids[1], "text": "r", "correct": False, "model": "m"},
                        {"step_id": ids[0], "text": "r", "correct": True, "model": "m"}])  # fmt: skip

    moved = store.move_labels(sentences, paragraphs)

    target_ids, target_spans = store.segmentation_steps(paragraphs)
    where = dict(zip(target_ids, target_spans))
    # Every label lands on a step whose span holds all of its characters.
    for item in moved.of("label"):
        assert item.target_step_ids, item
        for target in item.target_step_ids:
            assert where[target].start <= item.start and item.end <= where[target].end
            assert TRACE[item.start : item.end] in where[target].text
    assert moved.unmapped["label"] == 0
    labels = {(a["annotator"], a["idx"]): a for a in store.annotations(trajectory, segmentation_id=paragraphs)}
    # Sentences 0 (+1) and 1 (-1, first error) make paragraph 0 wrong, its first error, with the note.
    assert labels["ann", 0]["rating"] == -1 and labels["ann", 0]["first_error"]
    assert labels["ann", 0]["note"] == "18 is wrong" and labels["ann", 0]["category"] == "calculation"
    assert labels["ann", 0]["confidence"] == 4
    assert labels["ann", 1]["rating"] == 1 and labels["ann", 1]["confidence"] == 2
    assert labels["bob", 2]["rating"] == 1 and set(labels) == {("ann", 0), ("ann", 1), ("bob", 2)}
    # The source segmentation's labels are where they were.
    assert len(store.annotations(trajectory, segmentation_id=sentences)) == 4
    # Verdicts and values map on read, values only to a step ending where theirs ends.
    verdicts = {item.fields["p_yes"]: item.target_step_ids for item in moved.of("verdict")}
    assert verdicts == {0.9: (target_ids[1],), 0.7: (target_ids[0],)}
    values = {item.source_step_id: item.target_step_ids for item in moved.of("value")}
    assert values == {ids[1]: (target_ids[0],), ids[0]: ()} and moved.unmapped["value"] == 1
    stored = store.verdicts(trajectory, judge="j")
    assert len(stored) == 2 and {v["segmentation_id"] for v in stored} == {sentences}  # nothing copied


def test_labels_moved_back_say_how_many_did_not_map(store):
    trajectory, sentences, paragraphs = two_segmentations(store)
    ids, spans = store.segmentation_steps(paragraphs)
    for step_id in ids:
        store.save_annotation("ann", step_id, rating=1)
    # A paragraph of two sentences is held by no single sentence: two of three do not map...
    moved = store.move_labels(paragraphs, sentences)
    assert moved.unmapped["label"] == 2
    assert [a["idx"] for a in store.annotations(trajectory, segmentation_id=sentences)] == [4]
    # ...and with `overlaps` each of its sentences gets the +1, and every label keeps its span.
    moved = store.move_labels(paragraphs, sentences, how="overlaps")
    assert moved.unmapped["label"] == 0
    target_ids, target_spans = store.segmentation_steps(sentences)
    where = dict(zip(target_ids, target_spans))
    for item in moved.of("label"):
        covered = [where[t] for t in item.target_step_ids]
        assert covered[0].start == item.start and covered[-1].end == item.end
    assert sorted(a["idx"] for a in store.annotations(trajectory, segmentation_id=sentences)) == [0, 1, 2, 3, 4]


def test_moving_between_trajectories_is_refused(store):
    _, sentences, _ = two_segmentations(store)
    other = store.add_trajectory(store.add_problem("t", "q", "1"), "x = 1.", source="test")
    with pytest.raises(StepScopeError, match="different trajectories"):
        store.move_labels(sentences, store.get_trajectory(other)["segmentation_id"])
    with pytest.raises(StepScopeError, match="does not exist"):
        store.map_segmentation(sentences, 99999)


# --- importing reasoning traces ---------------------------------------------------------------

import json  # noqa: E402

from formats_samples import REASONING, write_jsonl  # noqa: E402

from core.formats import import_file  # noqa: E402


def imported(store: Store) -> dict[str, list[dict]]:
    """Each imported problem's question -> its trajectories (with meta and steps), in order."""
    found: dict[str, list[dict]] = {}
    for row in store.list_trajectories(dataset="reasoning"):
        trajectory = store.get_trajectory(row["id"])
        trajectory["steps"] = [s.text for s in store.segmentation_steps(trajectory["segmentation_id"])[1]]
        found.setdefault(trajectory["question"], []).append(trajectory)
    return found


def test_reasoning_traces_of_every_shape_round_trip(store, tmp_path):
    report = import_file(store, write_jsonl(tmp_path / "traces.jsonl", REASONING), "reasoning")
    assert report.records == 4 and report.added["problems"] == 4 and report.added["trajectories"] == 5
    by_question = imported(store)

    # OpenR1-Math: the think part is the solution, cut by paragraph; the answer part is kept
    # apart and graded; the trace comes back whole from its parts; OpenR1's flags are kept.
    openr1 = REASONING[0]
    complete, cut_off = by_question[openr1["problem"]]
    for trajectory, generation in zip((complete, cut_off), openr1["generations"]):
        parts = trajectory["meta"]["reasoning"]
        assert parts["opening"] + trajectory["solution"] + parts["closing"] + (parts["answer"] or "") == generation
        assert "<think>" not in trajectory["solution"] and "</think>" not in trajectory["solution"]
        assert trajectory["rule"] == "paragraph" and trajectory["source"] == "reasoning"
    assert complete["steps"] == [
        "Okay, Mia buys 4 pens at 3 dollars each.",
        "The pens cost 4 * 3 = 12 dollars. Adding the notebook, 12 + 5 = 18.",
        "Wait, 12 + 5 is 17, not 18. So the total is 17.",
    ]
    assert complete["gold"] == "17" and complete["final_answer"] == "17" and complete["correct"] is True
    assert "boxed{17}" in complete["meta"]["reasoning"]["answer"]
    assert complete["meta"]["reasoning"]["correctness_math_verify"] is True
    assert complete["meta"]["reasoning"]["finish_reasons"] == "stop"
    # Cut off mid-thought: no answer part, so no final answer, and wrong against the gold.
    assert cut_off["final_answer"] is None and cut_off["correct"] is False
    assert cut_off["meta"]["reasoning"]["answer"] is None and cut_off["meta"]["reasoning"]["is_reasoning_complete"] is False
    problem = store.get_problem(complete["problem_id"])
    assert problem["meta"]["uuid"] == openr1["uuid"] and problem["meta"]["solution"] == openr1["solution"]
    assert "generations" not in problem["meta"] and "messages" not in problem["meta"]

    # Chat with reasoning_content: the solution is the reasoning, the answer the content.
    (separate,) = by_question["What is 6 * 7?"]
    assistant = REASONING[1]["messages"][2]
    assert separate["solution"] == assistant["reasoning_content"]
    assert separate["meta"]["reasoning"]["answer"] == assistant["content"]
    assert separate["meta"]["reasoning"]["field"] == "reasoning_content"
    assert separate["steps"] == ["6 * 7 is 42.", "Let me check: 7 * 6 = 42. Yes."]
    assert separate["correct"] is True and separate["model"] == "deepseek-reasoner"

    # Chat with <think> in the content: graded from the answer part, not the thinking (whose
    # first number is a wrong 21).
    (tagged,) = by_question["What is 9 + 10?"]
    parts = tagged["meta"]["reasoning"]
    assert parts["opening"] + tagged["solution"] + parts["closing"] + parts["answer"] == REASONING[2]["messages"][1]["content"]
    assert tagged["final_answer"] == "19" and tagged["correct"] is True

    # Plain text with no tags: all thinking, graded from the whole text.
    (plain,) = by_question["What is 2 ** 5?"]
    assert plain["solution"] == REASONING[3]["text"] and plain["correct"] is True
    assert plain["steps"] == ["2 ** 5 = 2 * 2 * 2 * 2 * 2.", "That is 32.", "The answer is 32."]

    # Importing the same file again adds nothing.
    again = import_file(store, tmp_path / "traces.jsonl", "reasoning")
    assert sum(again.added.values()) == 0


def test_the_answer_part_decides_the_grade_not_the_thinking(store, tmp_path):
    wrong = {"problem": "What is 9 + 10?", "answer": "19",
             "text": "<think>9 + 10 = 19.</think>\n\nSo the answer is 21."}  # fmt: skip
    import_file(store, write_jsonl(tmp_path / "wrong.jsonl", [wrong]), "reasoning")
    (trajectory,) = imported(store)["What is 9 + 10?"]
    assert trajectory["final_answer"] == "21" and trajectory["correct"] is False


def openr1_with(**changes) -> dict:
    record = json.loads(json.dumps(REASONING[0]))
    for key, value in changes.items():
        if value is None:
            record.pop(key)
        else:
            record[key] = value
    return record


@pytest.mark.parametrize(
    "bad, field",
    [
        (openr1_with(generations="one trace"), "'generations' must be a list"),
        (openr1_with(generations=[]), "'generations' is an empty list"),
        (openr1_with(correctness_math_verify=None), "missing field 'correctness_math_verify'"),
        (openr1_with(correctness_math_verify=[True]), "'correctness_math_verify' has 1 entries for 2 generations"),
        (openr1_with(is_reasoning_complete=[True, "yes"]), "is_reasoning_complete[1] must be true or false"),
        (openr1_with(generations=["<think>ok</think>", 7]), "generations[1] must be a string"),
        (openr1_with(generations=["<think>\n\n</think> 17", "<think>x"]), "generations[0] has an empty think part"),
        (openr1_with(problem=None), "missing field 'problem'"),
        ({"messages": [{"role": "user", "content": "q"}]}, "no assistant message"),
        ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": 3}]},
         "messages[1]: field 'content' must be a string"),
        ({"messages": [{"role": "user", "content": "q"}, {"content": "a"}]}, "messages[1]: missing field 'role'"),
        ({"messages": [{"role": "user", "content": "q"},
                       {"role": "assistant", "content": "a", "reasoning_content": " "}]},
         "messages[1]: field 'reasoning_content' is empty"),
        ({"text": "<think>t</think> 3"}, "missing field 'problem'"),
        ({"question": "q", "solution": "s"}, "'generations' (OpenR1-Math), 'messages' (chat) or 'text' (plain)"),
    ],
)
def test_malformed_records_are_refused_with_line_and_field_and_nothing_is_stored(store, tmp_path, bad, field):
    before = store.count_trajectories(), len(store.list_problems())
    path = write_jsonl(tmp_path / "bad.jsonl", [REASONING[1], REASONING[3], bad])
    with pytest.raises(StepScopeError) as refused:
        # One row per batch: the good lines are committed before line 3 fails, and undone.
        import_file(store, path, "reasoning", batch_rows=1)
    message = str(refused.value)
    assert f"{path}, line 3: reasoning record: " in message and field in message and "\n" not in message
    assert (store.count_trajectories(), len(store.list_problems())) == before


# --- synthetic long traces --------------------------------------------------------------------

import re  # noqa: E402

from core.steps import DEFAULT_REFLECTION_MARKERS  # noqa: E402
from core.synth import LONG_OUTCOMES, LONG_SHAPES, long_trace, long_trace_records  # noqa: E402

EQUATION = re.compile(r"(\d+) ([+-]) (\d+) = (\d+)")


def first_false_equation(steps) -> int | None:
    """The first step holding an equation whose arithmetic is wrong, read from the text alone."""
    for index, step in enumerate(steps):
        for a, op, b, c in EQUATION.findall(step):
            if (int(a) + int(b) if op == "+" else int(a) - int(b)) != int(c):
                return index
    return None


@pytest.mark.parametrize("steps", [16, 64, 256])
@pytest.mark.parametrize("outcome", LONG_OUTCOMES)
def test_synthetic_traces_have_the_boundaries_and_first_error_they_claim(steps, outcome):
    for seed in range(5):
        trace = long_trace(steps, seed, outcome=outcome)
        # The boundaries are where the paragraph splitter cuts, and there are `steps` steps.
        paragraphs = segment(trace.think, "paragraph")
        assert [s.start for s in paragraphs] == list(trace.boundaries) and len(paragraphs) == steps
        assert [s.text for s in paragraphs] == list(trace.steps)
        # The first error is the first step whose arithmetic is wrong (read from the text).
        assert first_false_equation(trace.steps) == trace.first_error
        assert (trace.first_error is None) == (outcome == "correct")
        kinds = dict(trace.reflections)
        if outcome == "corrected":  # the slip, then the step that corrects it; the answer is right
            assert kinds[trace.first_error + 1] == "correct" and trace.final == trace.gold
            assert trace.steps[trace.first_error + 1].startswith("Wait, ")
        if outcome == "wrong":  # a reflection brings the error in and it stays to the end
            assert kinds[trace.first_error] == "introduce" and trace.final != trace.gold
        if outcome == "correct":
            assert set(kinds.values()) <= {"recheck"} and trace.final == trace.gold
        # Every reflection step opens with a reflection marker, and the reflection splitter cuts there.
        cuts = {s.start for s in segment(trace.think, "reflection")}
        for index, _ in trace.reflections:
            assert trace.steps[index].startswith(DEFAULT_REFLECTION_MARKERS)
            assert trace.boundaries[index] in cuts
        assert long_trace(steps, seed, outcome=outcome) == trace  # the same arguments, the same trace


def test_long_traces_refuse_lengths_and_outcomes_out_of_range():
    for steps in (15, 257):
        with pytest.raises(StepScopeError, match="16 to 256 steps"):
            long_trace(steps, 0)
    with pytest.raises(StepScopeError, match="outcome is one of"):
        long_trace(16, 0, outcome="maybe")


@pytest.mark.parametrize("shape", LONG_SHAPES)
def test_synthetic_traces_import_with_their_steps_and_grade(store, tmp_path, shape):
    records = long_trace_records(32, 3, seed=7, shape=shape)
    import_file(store, write_jsonl(tmp_path / f"{shape}.jsonl", records), "reasoning")
    by_question = imported(store)
    for record in records:
        truth = record["ground_truth"]
        question = record.get("problem") or record["messages"][0]["content"]
        (trajectory,) = by_question[question]
        _, spans = store.segmentation_steps(trajectory["segmentation_id"])
        assert [s.start for s in spans] == truth["boundaries"] and len(spans) == truth["steps"]
        assert trajectory["correct"] is (truth["outcome"] != "wrong")
        assert store.get_problem(trajectory["problem_id"])["meta"]["ground_truth"] == truth


def test_splitter_parameters_are_recorded_in_the_rule_in_manifests_and_in_a_dump(store, tmp_path):
    from core.formats import export_file
    from core.jobs.spec import splitters_of

    import_file(store, write_jsonl(tmp_path / "t.jsonl", long_trace_records(16, 1, seed=3)), "reasoning")
    (row,) = store.list_trajectories(dataset="reasoning")
    merged = store.resegment(row["id"], "sentence-merged:20-200")
    reflection = store.add_segmentation(row["id"], "reflection:Wait|Let me check", make_current=False)
    assert store.get_trajectory(row["id"])["rule"] == "sentence-merged:20-200"
    assert splitters_of(store, [row["id"]]) == ["sentence-merged:20-200"]
    # The complete dump carries every segmentation with its rule, and reads back the same.
    export_file(store, "jsonl", tmp_path / "dump.jsonl")
    copy = Store(tmp_path / "copy.db")
    try:
        import_file(copy, tmp_path / "dump.jsonl", "jsonl")
        (again,) = copy.list_trajectories(dataset="reasoning")
        stored = {s["rule"] for s in copy.dump_segmentations(dataset="reasoning")}
        assert stored == {"paragraph", "sentence-merged:20-200", "reflection:Wait|Let me check"}
        assert copy.get_trajectory(again["id"])["rule"] == "sentence-merged:20-200"
        for segmentation in (merged, reflection):
            assert store.segmentation_steps(segmentation)[1]  # steps were cut by the parametrised rules
    finally:
        copy.close()
