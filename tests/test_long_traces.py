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
