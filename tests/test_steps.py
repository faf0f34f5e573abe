"""Step segmentation (core/steps.py)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.errors import StepScopeError
from core.steps import SPLITTERS, StepSpan, join_steps, prefix_end, segment

TEXT_RULES = [rule for rule in SPLITTERS if rule != "pre-split"]

GSM8K_SOLUTION = (
    "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n"
    "Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n"
    "#### 72"
)


def texts(solution: str, rule: str) -> list[str]:
    return [span.text for span in segment(solution, rule)]


def assert_exact(solution: str, spans: list[StepSpan]) -> None:
    for span in spans:
        assert solution[span.start : span.end] == span.text


def test_splitters_are_the_documented_rules() -> None:
    assert SPLITTERS == (
        "line", "blank-line", "paragraph", "step-marker", "sentence", "sentence-merged", "reflection", "pre-split",
    )


def test_line_rule_drops_blank_lines_and_trims() -> None:
    solution = "  First step.  \n\n\t\nSecond step.\r\nThird\n"
    assert texts(solution, "line") == ["First step.", "Second step.", "Third"]
    assert_exact(solution, segment(solution, "line"))


def test_line_rule_on_gsm8k_solution() -> None:
    assert texts(GSM8K_SOLUTION, "line") == [
        "Natalia sold 48/2 = <<48/2=24>>24 clips in May.",
        "Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.",
        "#### 72",
    ]


def test_blank_line_rule_keeps_single_line_breaks_inside_a_step() -> None:
    solution = "We know\nthat x = 2.\n\n  \nSo y = 4\nand z = 8.\n\n\nDone."
    spans = segment(solution, "blank-line")
    assert [span.text for span in spans] == [
        "We know\nthat x = 2.",
        "So y = 4\nand z = 8.",
        "Done.",
    ]
    assert_exact(solution, spans)


def test_step_marker_rule_keeps_markers_and_preamble() -> None:
    solution = (
        "Let's think.\nStep 1: Add 2 and 3.\n"
        "Step 2. Multiply by 4. step 3: Check it; footstep 4: no."
    )
    assert texts(solution, "step-marker") == [
        "Let's think.",
        "Step 1: Add 2 and 3.",
        "Step 2. Multiply by 4.",
        "step 3: Check it; footstep 4: no.",
    ]


def test_step_marker_rule_ignores_decimal_after_step() -> None:
    assert texts("Step 1: see step 3.5 of the recipe.", "step-marker") == [
        "Step 1: see step 3.5 of the recipe."
    ]


def test_step_marker_rule_without_preamble() -> None:
    assert texts("Step 1: a\nStep 2: b", "step-marker") == ["Step 1: a", "Step 2: b"]


def test_sentence_rule_respects_numbers_abbreviations_and_annotations() -> None:
    solution = (
        "Mr. Smith buys 3.5 kg, e.g. for soup. It costs approx. $7.25 in total! "
        "Is that cheap? He pays 2*3.5=<<2*3.5=7>>7 dollars. Done"
    )
    assert texts(solution, "sentence") == [
        "Mr. Smith buys 3.5 kg, e.g. for soup.",
        "It costs approx. $7.25 in total!",
        "Is that cheap?",
        "He pays 2*3.5=<<2*3.5=7>>7 dollars.",
        "Done",
    ]


def test_sentence_rule_keeps_calculator_annotation_with_spaces_intact() -> None:
    solution = "She has <<3. * 4 = 12>>12 eggs. Then more."
    assert texts(solution, "sentence") == ["She has <<3. * 4 = 12>>12 eggs.", "Then more."]


def test_sentence_rule_splits_on_line_ends_after_punctuation() -> None:
    assert texts('He said "stop." Then\nwent home.\nOk', "sentence") == [
        'He said "stop."',
        "Then\nwent home.",
        "Ok",
    ]


@pytest.mark.parametrize("rule", TEXT_RULES)
def test_no_separator_gives_one_step(rule: str) -> None:
    assert segment("  x = 2 + 3  ", rule) == [StepSpan("x = 2 + 3", 2, 11)]


@pytest.mark.parametrize("rule", TEXT_RULES)
def test_empty_solution_has_no_steps(rule: str) -> None:
    assert segment("", rule) == []
    assert segment(" \n\n \t", rule) == []


def test_pre_split_is_not_cut_from_text() -> None:
    with pytest.raises(ValueError, match="join_steps"):
        segment("a\nb", "pre-split")


def test_unknown_rule_names_the_rule_and_the_choices() -> None:
    with pytest.raises(StepScopeError) as raised:
        segment("a", "paragraphs")
    message = str(raised.value)
    assert "paragraphs" in message
    for rule in SPLITTERS:
        assert rule in message


def test_join_steps_keeps_steps_exactly() -> None:
    steps = ["First, 2 + 2 = 4.", "", "  indented\nand two lines  ", "Last"]
    solution, spans = join_steps(steps)
    assert solution == "First, 2 + 2 = 4.\n\n  indented\nand two lines  \nLast"
    assert [span.text for span in spans] == steps
    assert_exact(solution, spans)


def test_join_steps_with_custom_separator() -> None:
    solution, spans = join_steps(["a", "b\n\nc", "d"], separator="\n\n")
    assert solution == "a\n\nb\n\nc\n\nd"
    assert spans == [StepSpan("a", 0, 1), StepSpan("b\n\nc", 3, 7), StepSpan("d", 9, 10)]


def test_join_steps_of_nothing() -> None:
    assert join_steps([]) == ("", [])


def test_prefix_end_includes_the_separator_before_the_next_step() -> None:
    solution = "Step 1: a = 2.\n\nStep 2: b = 3.\nStep 3: a + b = 5.  \n"
    spans = segment(solution, "line")
    assert solution[: prefix_end(solution, spans, 0)] == "Step 1: a = 2.\n\n"
    assert solution[: prefix_end(solution, spans, 1)] == "Step 1: a = 2.\n\nStep 2: b = 3.\n"
    assert solution[: prefix_end(solution, spans, 2)] == solution.rstrip()


def test_prefix_end_on_joined_steps() -> None:
    solution, spans = join_steps(["x", "y", "z"])
    assert [prefix_end(solution, spans, k) for k in range(3)] == [2, 4, 5]


@pytest.mark.parametrize("k", [-1, 3])
def test_prefix_end_out_of_range(k: int) -> None:
    solution, spans = join_steps(["x", "y", "z"])
    with pytest.raises(IndexError):
        prefix_end(solution, spans, k)


# Text built from the pieces the rules care about, so that property runs hit every branch.
_fragments = st.sampled_from(
    ["Step 1:", "step 22.", "Step 3.5", " ", "\n", "\n\n", "\t", ".", "!", "?", "e.g.", "Mr.",
     "3.5", "<<2*3=6>>", "<<", ">>", "x", "the answer", "\r\n", '"', ")", "Footstep 2:"]
)
solutions = st.one_of(st.text(max_size=80), st.lists(_fragments, max_size=30).map("".join))


@settings(max_examples=150, deadline=None)
@given(solution=solutions, rule=st.sampled_from(TEXT_RULES))
def test_segment_spans_are_ordered_exact_and_cover_all_text(solution: str, rule: str) -> None:
    spans = segment(solution, rule)
    previous_end = 0
    for span in spans:
        assert previous_end <= span.start < span.end <= len(solution)
        assert solution[span.start : span.end] == span.text
        assert span.text == span.text.strip()
        previous_end = span.end
    # Only whitespace is ever left out of the steps.
    covered = set().union(*(range(span.start, span.end) for span in spans))
    assert all(solution[i].isspace() for i in range(len(solution)) if i not in covered)
    # Each prefix ends where the next step begins, so prefixes nest.
    ends = [prefix_end(solution, spans, k) for k in range(len(spans))]
    assert ends == sorted(ends)
    assert all(span.end <= end for span, end in zip(spans, ends))


@settings(max_examples=100, deadline=None)
@given(
    steps=st.lists(st.text(max_size=20), max_size=8),
    separator=st.sampled_from(["\n", "\n\n", " "]),
)
def test_join_steps_round_trips(steps: list[str], separator: str) -> None:
    solution, spans = join_steps(steps, separator)
    assert solution == separator.join(steps)
    assert [span.text for span in spans] == steps
    assert_exact(solution, spans)
    assert all(a.end + len(separator) == b.start for a, b in zip(spans, spans[1:]))
