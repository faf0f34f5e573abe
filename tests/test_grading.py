"""Final-answer extraction and equivalence (core/grading.py)."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from core.errors import StepScopeError
from core.grading import (
    GRADER_NAME,
    MAX_ANSWER_CHARS,
    ExtractedAnswer,
    Grade,
    answers_equal,
    extract_answer,
    gold_from_gsm8k,
    grade,
)

# (predicted, gold, equal)
EQUIVALENCE_CASES = [
    # GSM8K style: integers, separators, currency, units, percent
    ("18", "18", True),
    ("18", "19", False),
    ("1,000", "1000", True),
    ("1000", "1,000", True),
    ("1,234,567", "1234567", True),
    ("1,234,567", "1234568", False),
    ("$18", "18", True),
    ("\\$18", "18", True),
    ("$18.00", "18", True),
    ("18 dollars", "18", True),
    ("18 eggs", "18", True),
    ("18 eggs", "17", False),
    ("\\text{18 dollars}", "18", True),
    ("18\\text{ dollars}", "18", True),
    ("5 cm", "5", True),
    ("€20", "20", True),
    ("50%", "50", True),
    ("50\\%", "50", True),
    ("50%", "0.5", True),
    ("50", "0.5", False),
    ("25%", "50", False),
    ("-3", "-3", True),
    ("-3", "3", False),
    ("\u22123", "-3", True),
    ("3.5", "3.50", True),
    ("3.5", "3.6", False),
    ("0.1", "0.1000001", False),
    ("18.", "18", True),
    ("**18**", "18", True),
    ("$\\frac{1}{2}$", "0.5", True),
    # fractions and decimals
    ("1/2", "0.5", True),
    ("\\frac{1}{2}", "0.5", True),
    ("\\frac12", "1/2", True),
    ("\\dfrac{3}{4}", "0.75", True),
    ("\\tfrac{3}{4}", "3/4", True),
    ("\\frac{1}{3}", "0.333333", True),
    ("\\frac{1}{3}", "0.33", False),
    ("2/3", "0.67", False),
    ("-\\frac{1}{2}", "-0.5", True),
    ("\\frac{-1}{2}", "-\\frac12", True),
    ("\\frac{1}{2}", "\\frac{1}{3}", False),
    ("\\frac{1}{2} cup", "1/2", True),
    # LaTeX expressions
    ("\\sqrt{2}", "2^{1/2}", True),
    ("3\\sqrt{3}", "\\sqrt{27}", True),
    ("\\frac{\\sqrt{3}}{2}", "\\frac{1}{2}\\sqrt{3}", True),
    ("\\sqrt{2}", "\\sqrt{3}", False),
    ("2\\pi", "\\pi", False),
    ("\\pi", "\\pi", True),
    ("x^2+2x+1", "(x+1)^2", True),
    ("x^2+1", "(x+1)^2", False),
    ("x=5", "5", True),
    ("x=5", "6", False),
    ("(1,2)", "(1, 2)", True),
    ("(1,2)", "(2,1)", False),
    ("\\{1,2\\}", "\\{2,1\\}", True),
    ("10^6", "1000000", True),
    ("30^\\circ", "30", True),
    ("\\binom{10}{3}", "120", True),
    ("\\infty", "\\infty", True),
    ("\\begin{pmatrix}1\\\\2\\end{pmatrix}", "\\begin{pmatrix}1\\\\2\\end{pmatrix}", True),
    # garbage, empties and inputs refused by the time bound
    (None, "18", False),
    ("", "18", False),
    ("   ", "18", False),
    ("18", "", False),
    ("banana", "18", False),
    ("\\frac{", "1", False),
    ("}}}{{{", "1", False),
    ("9^{9^{9}}", "1", False),
    ("\\binom{100000000}{50000000}", "1", False),
    ("\\sum_{k=1}^{10^9} k^k", "1", False),
    ("(x+1)^{1000}", "(x+2)^{1000}", False),
    ("9" * (MAX_ANSWER_CHARS + 1), "9", False),
    ("A", "A", True),
]


@pytest.mark.parametrize(("predicted", "gold", "equal"), EQUIVALENCE_CASES)
def test_answers_equal(predicted: str | None, gold: str, equal: bool) -> None:
    assert answers_equal(predicted, gold) is equal


# (text, value, method)
EXTRACTION_CASES = [
    ("Natalia sold 48+24 = <<48+24=72>>72 clips.\n#### 72", "72", "gsm8k"),
    ("She pays <<2*5=10>>10.\n#### 1,000", "1,000", "gsm8k"),
    ("#### 5\nQuestion: next one\n#### 9", "5", "gsm8k"),
    ("#### 10 \\boxed{3}", "10 \\boxed{3}", "gsm8k"),
    ("So the total is \\boxed{42}.", "42", "boxed"),
    (
        "\\boxed{\\frac{1}{2}} then corrected: \\boxed{\\frac{\\sqrt{3}}{2}}",
        "\\frac{\\sqrt{3}}{2}",
        "boxed",
    ),
    ("The answer is \\boxed{5}, not 6.", "5", "boxed"),
    ("$\\boxed{x^{2}}$", "x^{2}", "boxed"),
    ("\\fbox{7}", "7", "boxed"),
    ("The answer is 18.", "18", "answer-is"),
    ("The answer is $18. I hope it is correct.", "$18", "answer-is"),
    ("The final answer is 3.5.", "3.5", "answer-is"),
    ("Final Answer: The final answer is $\\frac{1}{2}$. I hope", "\\frac{1}{2}", "answer-is"),
    ("**Answer:** 42", "42", "answer-is"),
    ("The answer is **18**.", "18", "answer-is"),
    ("the answer is 4, then the answer is 5", "5", "answer-is"),
    ("She has 3 apples and buys 12-5 = 7", "7", "last-number"),
    ("Costs <<3*4=12>>12 and 1,250.75 in total", "1,250.75", "last-number"),
    ("Half of it: 1/2", "1/2", "last-number"),
    ("-4 is the result", "-4", "last-number"),
    ("\\boxed{unclosed 8", "8", "last-number"),
    ("no numbers here", None, "none"),
    ("", None, "none"),
]


@pytest.mark.parametrize(("text", "value", "method"), EXTRACTION_CASES)
def test_extract_answer(text: str, value: str | None, method: str) -> None:
    assert extract_answer(text) == ExtractedAnswer(value, method)


def test_boxed_handles_escaped_braces() -> None:
    assert extract_answer("\\boxed{\\{1, 2\\}}").value == "\\{1, 2\\}"


def cpu_seconds(work) -> float:
    """This thread's CPU time for `work()`: unlike wall-clock time it does not grow when other
    processes share the CPUs, so a bound on it holds on a busy machine as on a quiet one."""
    started = time.thread_time()
    work()
    return time.thread_time() - started


def test_unclosed_box_in_a_long_rollout_is_fast() -> None:
    text = "\\boxed{" * 5_000 + "x" * 50_000
    assert extract_answer(text) == ExtractedAnswer(None, "none")
    # The reference is reading a box-free text of the same length. Trying each unclosed box
    # costs about 100 times that here (measured on 2 cores, at 1,250 to 10,000 boxes alike:
    # linear); a search to the end from every box would cost about 5,000 times, and grow.
    reading = cpu_seconds(lambda: extract_answer("x" * len(text)))
    unclosed = cpu_seconds(lambda: extract_answer(text))
    assert unclosed < 1000 * reading, (unclosed, reading)


GRADE_CASES = [
    ("Janet sells 16-3-4=<<16-3-4=9>>9 eggs for 9*2=$<<9*2=18>>18.\n#### 18", "18", True),
    ("... so she makes \\boxed{\\$18}.", "18", True),
    ("The answer is 17.", "18", False),
    ("I give up.", "18", False),
]


@pytest.mark.parametrize(("text", "gold", "correct"), GRADE_CASES)
def test_grade(text: str, gold: str, correct: bool) -> None:
    result = grade(text, gold)
    assert result.correct is correct
    assert result == Grade(extract_answer(text).value, extract_answer(text).method, correct)


def test_gold_from_gsm8k() -> None:
    assert gold_from_gsm8k("She has 5 + 995 = <<5+995=1000>>1000\n#### 1,000") == "1000"
    assert gold_from_gsm8k("#### -3") == "-3"
    assert gold_from_gsm8k("#### 2.5") == "2.5"


def test_gold_from_gsm8k_without_answer_line_names_the_cause() -> None:
    with pytest.raises(StepScopeError, match="####"):
        gold_from_gsm8k("The answer is 5")


def test_grader_name_is_versioned() -> None:
    assert GRADER_NAME.startswith("math-verify-0.")
    assert GRADER_NAME.endswith("+stepscope-1")


def test_answers_equal_never_raises_on_odd_input() -> None:
    odd_inputs = ["\\", "$", "$$", "\\frac{}{}", "^^^", "\x00", "\\boxed{", "1/0", "0^{-1}", "%"]
    for predicted in odd_inputs:
        for gold in ["1", "\\frac{1}{0}", *odd_inputs]:
            assert answers_equal(predicted, gold) in (True, False)


def test_refused_inputs_are_answered_quickly() -> None:
    explosive = [
        "9^{9^{9}}",  # parses instantly, comparing would build a number of 10^8 digits
        "2^{10^{9}}",
        "(10^{100})!",
        "\\Gamma(100000000)",  # evaluated by the parser itself
        "\\gcd(10^{10^{10}}, 3)",
        "(x+y+z)^{40}",  # expands to tens of thousands of terms
    ]
    # The reference is comparing tame answers of the same shapes (about as costly as refusing the
    # explosive ones, measured); one that ran away would take minutes or exhaust memory.
    tame = ["9^{2}", "2^{10}", "(10)!", "\\Gamma(10)", "\\gcd(10, 3)", "(x+y+z)^{2}"]
    answers_equal(tame[0], "1")  # the parser's first use imports and builds its tables
    reference = cpu_seconds(lambda: [answers_equal(answer, "1") for answer in tame])
    results = []
    refused = cpu_seconds(lambda: results.extend(answers_equal(answer, "1") for answer in explosive))
    assert results == [False] * len(explosive)
    assert refused < 20 * reference, (refused, reference)


# Fast-path and math-verify comparisons, equal and unequal, refused inputs included.
THREAD_CASES = [case for case in EQUIVALENCE_CASES if case[0] is not None]


def _grade_all() -> list[bool]:
    return [answers_equal(predicted, gold) for predicted, gold, _ in THREAD_CASES]


def test_grading_in_a_worker_thread_matches_the_main_thread() -> None:
    on_main = _grade_all()
    results: list[list[bool]] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            assert threading.current_thread() is not threading.main_thread()
            results.append(_grade_all())
        except BaseException as error:  # noqa: BLE001 - surfaced by the assert below
            errors.append(error)

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join(timeout=60)
    assert not errors
    assert results == [on_main]
    assert on_main == [equal for _, _, equal in THREAD_CASES]


def test_grading_in_a_thread_pool_matches_the_main_thread() -> None:
    texts = [(f"The answer is {p}.", g) for p, g, _ in THREAD_CASES if p.strip()]
    on_main = [grade(text, gold) for text, gold in texts]
    with ThreadPoolExecutor(max_workers=4) as pool:
        in_pool = list(pool.map(lambda args: grade(*args), texts))
    assert in_pool == on_main
    assert {result.correct for result in on_main} == {True, False}
