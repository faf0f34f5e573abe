"""Final answers: pull the answer out of a solution or rollout, and decide if it equals the gold.

Equivalence is math-verify's (`parse` + `verify`), behind cheap normalisation and fast paths
so that GSM8K-style answers ("$1,000", "18 eggs", "50%") never reach sympy at all.

Threads. Grading runs in Streamlit script threads and job worker threads. math-verify's own
timeouts use `signal.alarm`, which raises off the main thread, so they are switched off
(`parsing_timeout=None`, `timeout_seconds=None`) and the time per answer is bounded here
instead, without signals or processes, by refusing input that could make sympy run away:

1. `MAX_ANSWER_CHARS`: only short answers are parsed; a longer one is compared as text.
2. LaTeX commands that the parser evaluates on the spot (`\\binom`, `\\Gamma`, `\\gcd`, ...)
   are parsed only when every number in the answer is small; commands that make `verify`
   integrate, sum or take limits (`\\int`, `\\sum`, `\\lim`, `\\operatorname`) never are.
3. After parsing, an upper bound on the size of every number sympy could build
   (`MAX_NUMBER_BITS`) is checked before `verify`: `9^{9^{9}}` parses instantly but would
   take hours to compare. Likewise for the number of terms a polynomial can expand to
   (`MAX_EXPANDED_TERMS`): (x+1)^{1000} parses instantly and never finishes comparing.

With these, a comparison takes milliseconds for typical answers and about a second at worst
for the largest accepted ones; this is a bound by construction, not a clock. Anything refused
is still compared as normalised text, so identical answers stay equal.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from fractions import Fraction
from importlib.metadata import version

from math_verify import parse, verify
from sympy import Basic, Derivative, Integral, Limit, Product, Sum
from sympy.functions import factorial, gamma
from sympy.matrices import MatrixBase

from core.errors import StepScopeError

# Bump the suffix whenever extraction or equivalence rules change: it goes into job
# manifests, so stored `correct` flags can be traced to the rules that produced them.
GRADER_NAME: str = f"math-verify-{version('math-verify')}+stepscope-1"

MAX_ANSWER_CHARS = 300
MAX_BOXED_CHARS = 2_000
MAX_NUMBER_BITS = 200_000  # about 60,000 decimal digits: big-integer work stays in milliseconds
MAX_EXPANDED_TERMS = 300  # polynomial size; (x+y+z)^10 (286 terms) compares in about a second


class _DropTimeoutDisabledWarning(logging.Filter):
    # math-verify warns once per process that its timeouts are off; they are off on purpose
    # (see the module docstring), so the warning would only alarm CLI users.
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Timeout is disabled")


for _logger_name in ("math_verify.parser", "math_verify.grader"):
    logging.getLogger(_logger_name).addFilter(_DropTimeoutDisabledWarning())


# --- extraction -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ExtractedAnswer:
    value: str | None
    method: str  # "gsm8k", "boxed", "answer-is", "last-number" or "none"


@dataclass(frozen=True)
class Grade:
    answer: str | None
    method: str
    correct: bool


_GSM8K_ANSWER = re.compile(r"####[ \t]*([^\n]*)")
_BOXED_START = re.compile(r"\\(?:boxed|fbox)\s*\{")
# "**Answer:** 42" is markdown; the asterisks around the colon are skipped.
_ANSWER_IS = re.compile(r"\banswer\s*(?:is\b|:)[\s:*]*", re.IGNORECASE)
# A sentence end inside "the answer is ..." line: punctuation then whitespace or the end.
# "3.5" has no whitespace after its dot, so a decimal number is never cut.
_SENTENCE_END = re.compile(r"[.!?;](?=\s|$)")
_CALCULATOR_ANNOTATION = re.compile(r"<<[^<>]*>>")
# A minus sign counts only when it is not a subtraction ("12-5" ends with 5, not -5).
_NUMBER = re.compile(r"(?:(?<![\w)\]}])-)?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+)?")
_MATH_DELIMITERS = (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]"))


def _strip_delimiters(value: str) -> str:
    """Drop markup around an answer ("$\\frac12$", "**18**") and a trailing full stop."""
    value = value.strip().strip("*").rstrip(".,;:").strip()  # "*" is markdown bold
    for opening, closing in _MATH_DELIMITERS:
        inner = value[len(opening) : -len(closing)]
        wrapped = value.startswith(opening) and value.endswith(closing)
        # "$18" is a price, not math: strip "$" only when it also closes the answer.
        if wrapped and len(value) > len(opening) + len(closing) and opening not in inner:
            return _strip_delimiters(inner)
    return value


def _braced_group(text: str, open_brace: int) -> str | None:
    """The text inside the braces that open at `open_brace`, nested braces included.

    The scan stops after `MAX_BOXED_CHARS`: an unclosed "\\boxed{" must not make extraction
    quadratic in the length of a long rollout.
    """
    depth = 0
    index = open_brace
    stop = min(len(text), open_brace + MAX_BOXED_CHARS)
    while index < stop:
        char = text[index]
        if char == "\\":  # \{ and \} are literal braces, not grouping
            index += 2
            continue
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return text[open_brace + 1 : index]
        index += 1
    return None


def _gsm8k_answer(text: str) -> str | None:
    # The first "####" line ends a GSM8K solution; whatever follows is the model wandering on
    # into another few-shot example, so its later "####" lines do not count.
    match = _GSM8K_ANSWER.search(text)
    return _strip_delimiters(match.group(1)) if match else None


def _boxed_answer(text: str) -> str | None:
    # The last box wins (the MATH convention): models box a draft, then correct it.
    for match in reversed(list(_BOXED_START.finditer(text))):
        content = _braced_group(text, match.end() - 1)
        if content is not None and content.strip():
            return _strip_delimiters(content)
    return None


def _answer_is(text: str) -> str | None:
    # Only the lead-in is matched, so "Final Answer: The final answer is 5" finds both and
    # the last one wins; the answer runs to the end of its sentence or line.
    matches = list(_ANSWER_IS.finditer(text))
    if not matches:
        return None
    rest = text[matches[-1].end() :].split("\n", 1)[0]
    sentence_end = _SENTENCE_END.search(rest)
    return _strip_delimiters(rest[: sentence_end.start()] if sentence_end else rest)


def _last_number(text: str) -> str | None:
    # "<<3*4=12>>12": the annotation repeats operands; the number after it is the result.
    numbers = _NUMBER.findall(_CALCULATOR_ANNOTATION.sub(" ", text))
    return numbers[-1] if numbers else None


_EXTRACTORS = (
    ("gsm8k", _gsm8k_answer),
    ("boxed", _boxed_answer),
    ("answer-is", _answer_is),
    ("last-number", _last_number),
)


def extract_answer(text: str) -> ExtractedAnswer:
    """The final answer in `text`, by the first method that finds one.

    Priority: a GSM8K "#### n" line, then the last \\boxed{...}, then the last "the answer is
    ...", then (as a stated fallback) the last number in the text.
    """
    for method, extractor in _EXTRACTORS:
        value = extractor(text)
        if value:
            return ExtractedAnswer(value, method)
    return ExtractedAnswer(None, "none")


def gold_from_gsm8k(answer_field: str) -> str:
    """The gold number of a GSM8K `answer` field ("...#### 1,000" -> "1000")."""
    match = re.search(r"####\s*(-?[\d,]*\.?\d+)", answer_field)
    if match is None:
        raise StepScopeError(
            f"GSM8K answer has no '#### <number>' line: {answer_field[-80:]!r}"
        )
    return match.group(1).replace(",", "")


# --- normalisation --------------------------------------------------------------------------

_TEXT_COMMAND = re.compile(r"\\(?:text|textbf|textit|textrm|mathrm|mathbf|mbox)\s*\{([^{}]*)\}")
_LATEX_SPACING = re.compile(r"\\[,;:! ]|\\q?quad\b|~")
_DEGREES = re.compile(r"\^\s*\{?\s*\\circ\s*\}?|°")
_CURRENCY = re.compile(r"\\\$|[$€£¥₹]")
# Words after a number or a closing brace are units ("18 eggs", "\frac{1}{2} cup", "3 km/h").
_TRAILING_UNITS = re.compile(r"(?<=[\d}%])\s+[A-Za-z]{2,}(?:[\s/.^]+[A-Za-z0-9]+)*\.?$")
_PLAIN_NUMBER = re.compile(
    r"(?P<sign>[-+]?)(?P<integer>\d{1,3}(?:,\d{3})+|\d*)(?P<decimals>\.\d+)?\s*(?P<percent>%?)"
)


def _normalize(answer: str) -> str:
    """Surface clean-up both sides get before any comparison; never changes the value."""
    text = _strip_delimiters(answer.replace("\u2212", "-"))  # Unicode minus sign
    text = _TEXT_COMMAND.sub(r" \1", text)
    text = text.replace("{,}", ",").replace("\\%", "%").replace("\\left", "").replace("\\right", "")
    text = _LATEX_SPACING.sub(" ", text)
    text = _DEGREES.sub("", text)
    text = _CURRENCY.sub("", text)
    text = _TRAILING_UNITS.sub("", text.strip())
    return _strip_delimiters(text)


def _text_key(answer: str) -> str:
    return re.sub(r"\s+", "", answer)


def _plain_number(answer: str) -> tuple[Fraction, bool] | None:
    """(value, written as a percent) for a plain decimal number, else None."""
    match = _PLAIN_NUMBER.fullmatch(answer)
    if match is None or not (match["integer"] or match["decimals"]):
        return None
    digits = (match["integer"] or "0").replace(",", "") + (match["decimals"] or "")
    value = Fraction(digits)
    return (-value if match["sign"] == "-" else value), bool(match["percent"])


def _plain_numbers_equal(predicted: tuple[Fraction, bool], gold: tuple[Fraction, bool]) -> bool:
    # "50%" matches both 50 and 0.5 (as math-verify does): a percent sign is often dropped
    # or kept inconsistently between the gold and the model, but 50 never equals 0.5.
    def readings(number: tuple[Fraction, bool]) -> set[Fraction]:
        value, is_percent = number
        return {value, value / 100} if is_percent else {value}

    return bool(readings(predicted) & readings(gold))


# --- the time bound around math-verify (see the module docstring) ---------------------------

# Commands that make `verify` sum, integrate, take limits or build matrices of any size.
_NEVER_PARSED = re.compile(
    r"\\(?:operatorname|sum|prod|coprod|int|iint|iiint|oint|lim|limsup|liminf)(?![A-Za-z])"
)
# Commands the parser evaluates at once: cheap on small numbers, unbounded on big ones.
_EVALUATED_ON_PARSE = re.compile(
    r"\\(?:binom|dbinom|tbinom|choose|Gamma|gamma|gcd|lcm|det)(?![A-Za-z])"
)
_BIG_INTEGER = re.compile(r"\d{5}")
_RUNAWAY_NODES = (Sum, Product, Integral, Limit, Derivative)


def _safe_to_parse(answer: str) -> bool:
    if len(answer) > MAX_ANSWER_CHARS or _NEVER_PARSED.search(answer):
        return False
    if _EVALUATED_ON_PARSE.search(answer):
        return (
            len(_EVALUATED_ON_PARSE.findall(answer)) == 1
            and not _BIG_INTEGER.search(answer)
            and "^" not in answer
            and "!" not in answer
        )
    return True


def _magnitude_bits(node: object) -> float:
    """Upper bound on the bits of any number sympy may build when it evaluates `node`."""
    if isinstance(node, MatrixBase):
        return max((_magnitude_bits(entry) for entry in node), default=0.0)
    if not isinstance(node, Basic):
        return 0.0
    if node.is_Rational:
        return float(max(abs(node.p).bit_length(), node.q.bit_length(), 1))
    if node.is_Pow:
        return _power_bits(node.base, node.exp)
    if isinstance(node, (factorial, gamma)):
        n = _magnitude(node.args[0])
        return n * math.log2(n + 2)
    children = [_magnitude_bits(arg) for arg in node.args]
    if not children:
        return 1.0  # a symbol, a constant such as pi, or a float (fixed precision)
    return sum(children) if node.is_Mul else max(children) + 1


def _magnitude(node: Basic) -> float:
    return 2.0 ** min(_magnitude_bits(node), 1000.0)


def _power_bits(base: Basic, exponent: Basic) -> float:
    base_bits = max(_magnitude_bits(base), 1.0)
    exponent_bits = _magnitude_bits(exponent)
    if exponent.free_symbols:
        return max(base_bits, exponent_bits)  # symbolic: nothing numeric gets built
    if exponent.is_Number and exponent_bits < 64:
        return base_bits * abs(float(exponent))
    return base_bits * 2.0 ** min(exponent_bits, 1000.0)


def _degree(node: object) -> float:
    """Upper bound on the total degree of `node` once sympy expands it as a polynomial."""
    if not isinstance(node, Basic) or not node.free_symbols:
        return 0.0
    if node.is_Symbol:
        return 1.0
    if node.is_Pow:
        base, exponent = node.base, node.exp
        if exponent.free_symbols:
            return _degree(base) + _degree(exponent)
        size = abs(float(exponent)) if exponent.is_Number else _magnitude(exponent)
        return _degree(base) * size
    children = [_degree(arg) for arg in node.args]
    return sum(children) if node.is_Mul else max(children, default=0.0)


def _expanded_terms(node: Basic) -> int:
    # A polynomial of total degree d in v variables has at most C(d + v, v) terms; `verify`
    # may expand both sides, and (x+y+z)^20 alone is 1,771 terms and ten seconds of sympy.
    degree = _degree(node)
    if degree > MAX_EXPANDED_TERMS:
        return MAX_EXPANDED_TERMS + 1
    variables = len(node.free_symbols)
    return math.comb(math.ceil(degree) + variables, variables)


def _cheap_to_verify(item: object) -> bool:
    if isinstance(item, MatrixBase):
        return all(_cheap_to_verify(entry) for entry in item)
    if not isinstance(item, Basic):
        return True  # a string: compared as text
    return (
        not item.has(*_RUNAWAY_NODES)
        and _magnitude_bits(item) <= MAX_NUMBER_BITS  # checked first: keeps floats finite
        and _expanded_terms(item) <= MAX_EXPANDED_TERMS
    )


def _parse_bounded(answer: str) -> list:
    if not _safe_to_parse(answer):
        return []
    # Wrapped in $...$ so that bare LaTeX ("\frac12", "\sqrt{2}", "(1,2)") is read as LaTeX;
    # without delimiters math-verify only looks for plain-text expressions in it.
    parsed = parse(f"${answer}$", parsing_timeout=None)
    return parsed if all(_cheap_to_verify(item) for item in parsed) else []


def _math_verify_equal(predicted: str, gold: str) -> bool:
    gold_parsed = _parse_bounded(gold)
    predicted_parsed = _parse_bounded(predicted)
    if not gold_parsed or not predicted_parsed:
        return False
    # Not symmetric: math-verify wants the gold first.
    return verify(gold_parsed, predicted_parsed, timeout_seconds=None)


# --- equivalence ----------------------------------------------------------------------------


def _equal(predicted: str, gold: str) -> bool:
    if max(len(predicted), len(gold)) > MAX_ANSWER_CHARS:
        # Not an answer but a paragraph: only the same text counts, and no regex or parser
        # gets to spend time on it.
        return bool(predicted.strip()) and _text_key(predicted) == _text_key(gold)
    predicted, gold = _normalize(predicted), _normalize(gold)
    if not predicted or not gold:
        return False
    if _text_key(predicted) == _text_key(gold):
        return True
    predicted_number, gold_number = _plain_number(predicted), _plain_number(gold)
    if predicted_number is not None and gold_number is not None:
        # Exact: plain decimals need no sympy, and "0.1" vs "0.1000001" are different answers.
        return _plain_numbers_equal(predicted_number, gold_number)
    return _math_verify_equal(predicted, gold)


def answers_equal(predicted: str | None, gold: str) -> bool:
    """Whether `predicted` is the same answer as `gold`. Never raises: garbage is unequal."""
    if predicted is None:
        return False
    try:
        return _equal(str(predicted), str(gold))
    except Exception:  # noqa: BLE001 - a grader must not take a whole job down
        logging.getLogger(__name__).debug("answer comparison failed", exc_info=True)
        return False


def grade(text: str, gold: str) -> Grade:
    """Extract the final answer from `text` and check it against `gold`."""
    extracted = extract_answer(text)
    return Grade(extracted.value, extracted.method, answers_equal(extracted.value, gold))
