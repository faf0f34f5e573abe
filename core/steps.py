"""Step segmentation: cut a solution into the steps that get values, verdicts and labels.

A step is a span of the solution, never a rewritten copy: `solution[start:end] == text`.
Keeping offsets (instead of re-joining cleaned strings) is what lets a rollout prefix be the
solution's own text, character for character, so the prefix for step k is a string prefix of
the one for step k+1 and the engine's prefix cache is reused.

The rule is stored with each segmentation and in job manifests. It is a splitter's name from
`SPLITTERS`, or a name with its parameters after a colon, written out in full so that a stored
rule says exactly how its steps were cut: `reflection:Wait|Hmm` (the markers), and
`sentence-merged:80-400` (the least and most characters per step). A name alone takes the
defaults, so rules stored before splitters had parameters read as they always did.

One stored rule names no splitter: `model:FINGERPRINT`, the steps a model chose (core.jobs.split:
the model picks boundaries among `candidate_units`, the split job's manifest says which model,
prompt and chunk size the fingerprint stands for). It is a rule (`is_rule`), so such a
segmentation is stored, exported and imported like any other, but it cannot cut text again:
`segment` and `check_cutting_rule` refuse it, as they refuse `pre-split`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Sequence

from core.errors import StepScopeError


SPLITTERS: tuple[str, ...] = (
    "line", "blank-line", "paragraph", "step-marker", "sentence", "sentence-merged", "reflection", "pre-split",
)
# What a long reasoning trace uses to turn on itself (DeepSeek-R1 and OpenR1 traces); counted
# only at the start of a sentence or a line, and with the case as written, so "wait" inside a
# sentence ("we wait for the bus") and "actually" mid-sentence are not cuts.
DEFAULT_REFLECTION_MARKERS: tuple[str, ...] = (
    "Wait", "Alternatively", "Let me check", "Hmm", "But wait", "Let me verify", "Actually",
)
# Sentence-merged steps: long enough to hold one claim with its computation (a lone "So x = 3."
# is 10 characters), short enough that a person reads a step at a glance.
DEFAULT_MERGED_MIN_CHARS, DEFAULT_MERGED_MAX_CHARS = 80, 400
_MAX_STEP_CHARS = 1_000_000
# The rule of a segmentation a model chose (core.jobs.split): not a splitter, so not in SPLITTERS.
MODEL_RULE = "model"
_FINGERPRINT = re.compile(r"[0-9a-f]{8,64}")


@dataclass(frozen=True)
class StepSpan:
    text: str
    start: int
    end: int


@dataclass(frozen=True)
class SplitRule:
    """A rule read from its stored text: the splitter's name and its parameters."""

    name: str
    markers: tuple[str, ...] = DEFAULT_REFLECTION_MARKERS
    min_chars: int = DEFAULT_MERGED_MIN_CHARS
    max_chars: int = DEFAULT_MERGED_MAX_CHARS
    fingerprint: str = ""  # a model rule's: the split job's model, prompt and chunking, hashed

    def text(self) -> str:
        """The rule as stored: the name alone for defaults, else the name and every parameter."""
        if self.name == MODEL_RULE:
            return f"{MODEL_RULE}:{self.fingerprint}"
        if self.name == "reflection" and self.markers != DEFAULT_REFLECTION_MARKERS:
            return f"reflection:{'|'.join(self.markers)}"
        if self.name == "sentence-merged" and (self.min_chars, self.max_chars) != (
            DEFAULT_MERGED_MIN_CHARS, DEFAULT_MERGED_MAX_CHARS,
        ):
            return f"sentence-merged:{self.min_chars}-{self.max_chars}"
        return self.name


_PARAMETERS_HELP = {
    "reflection": "reflection:MARKER|MARKER|... (markers the text turns on itself with)",
    "sentence-merged": "sentence-merged:MIN-MAX (characters per step)",
    MODEL_RULE: "model:FINGERPRINT (8-64 hex digits; `stepscope split` makes these segmentations)",
}


def is_rule(rule: object) -> bool:
    """Whether `rule` names a splitter, with or without its parameters (`reflection:Wait|Hmm`), or
    is a model segmentation's rule (`model:FINGERPRINT`): what the store, the importers and job
    specs check a stored or given rule with. Whether it can cut text: `check_cutting_rule`."""
    if not isinstance(rule, str):
        return False
    try:
        parse_rule(rule)
    except StepScopeError:
        return False
    return True


def parse_rule(rule: str) -> SplitRule:
    """The rule `reflection:Wait|Hmm`, `sentence-merged:80-400` or a bare name, checked."""
    name, colon, parameters = rule.partition(":")
    if name == MODEL_RULE:
        if not _FINGERPRINT.fullmatch(parameters):
            raise StepScopeError(f"rule {rule!r}: write {_PARAMETERS_HELP[name]}")
        return SplitRule(name, fingerprint=parameters)
    if name not in SPLITTERS:
        raise StepScopeError(f"unknown step splitter {rule!r}; choose one of: {', '.join(SPLITTERS)}")
    if not colon:
        return SplitRule(name)
    if name == "reflection":
        markers = tuple(marker.strip() for marker in parameters.split("|"))
        if not all(markers):
            raise StepScopeError(f"step splitter {rule!r}: empty marker; write {_PARAMETERS_HELP[name]}")
        return SplitRule(name, markers=markers)
    if name == "sentence-merged":
        low, dash, high = parameters.partition("-")
        if not (dash and low.strip().isdigit() and high.strip().isdigit()):
            raise StepScopeError(f"step splitter {rule!r}: write {_PARAMETERS_HELP[name]}")
        min_chars, max_chars = int(low), int(high)
        if not 1 <= min_chars <= max_chars <= _MAX_STEP_CHARS:
            raise StepScopeError(
                f"step splitter {rule!r}: need 1 <= MIN <= MAX <= {_MAX_STEP_CHARS}, got {min_chars}-{max_chars}"
            )
        return SplitRule(name, min_chars=min_chars, max_chars=max_chars)
    raise StepScopeError(f"step splitter {name!r} takes no parameters, got {rule!r}")


def is_model_rule(rule: object) -> bool:
    """Whether `rule` is a model segmentation's (`model:FINGERPRINT`): steps a split job chose."""
    return isinstance(rule, str) and rule.partition(":")[0] == MODEL_RULE and is_rule(rule)


def model_rule(fingerprint: str) -> str:
    """The stored rule of a segmentation a model chose, by the split job's fingerprint (checked)."""
    return parse_rule(f"{MODEL_RULE}:{fingerprint}").text()


def check_cutting_rule(rule: str) -> str:
    """The rule as stored (default parameters dropped) if it can cut text, else StepScopeError:
    `pre-split` steps came split, and a model's steps are chosen by a split job, not a rule."""
    if rule == "pre-split":
        raise StepScopeError("'pre-split' is for steps that came split, not a way to cut text")
    parsed = parse_rule(rule)
    if parsed.name == MODEL_RULE:
        raise StepScopeError(
            f"{rule!r} is a model's segmentation: a split job chose its steps and no rule can cut them again; "
            "run `stepscope split --model MODEL` to have a model split text, or choose a splitter"
        )
    return parsed.text()


def reflection_rule(markers: Sequence[str] = DEFAULT_REFLECTION_MARKERS) -> str:
    """The stored rule text of a reflection splitter with these markers (checked)."""
    return parse_rule(f"reflection:{'|'.join(markers)}").text()


def sentence_merged_rule(min_chars: int = DEFAULT_MERGED_MIN_CHARS, max_chars: int = DEFAULT_MERGED_MAX_CHARS) -> str:
    """The stored rule text of a sentence-merged splitter with these bounds (checked)."""
    return parse_rule(f"sentence-merged:{min_chars}-{max_chars}").text()


# --- boundaries -----------------------------------------------------------------------------
# Each rule yields the offsets where one piece ends and the next begins. Pieces are then
# trimmed of surrounding whitespace by moving their offsets, so separators never end up
# inside a step and nothing is rewritten.

_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_BLANK_LINES = re.compile(r"(?:\r\n|\r|\n)[ \t\f\v]*(?:\r\n|\r|\n)\s*")

# "Step 3:" or "Step 3." at the start of the text or after whitespace (so "Footstep 2:" does
# not count). "Step 3.5" is a number, not a marker, hence the look-ahead after the dot.
_STEP_MARKER = re.compile(r"(?<!\S)step\s+\d+\s*(?::|\.(?!\d))", re.IGNORECASE)

# A sentence ends with . ! or ? (possibly repeated, possibly followed by a closing quote or
# bracket) and then whitespace. A dot inside a number ("3.5") is never followed by whitespace,
# so it never matches.
_SENTENCE_END = re.compile(r"[.!?]+[\"'\u201d\u2019)\]]*(?=\s)")
_WORD_BEFORE_END = re.compile(r"(\S+)$")
# Words whose dot is part of the word, not the end of a sentence. Lower case, without the
# trailing dot and without leading brackets/quotes. Deliberately short: words that also end
# sentences ("no.", "max.", "etc.", a variable "p.") would glue two steps together.
_ABBREVIATIONS = frozenset(
    {
        "e.g", "i.e", "cf", "vs", "approx", "ca", "resp", "viz", "al",
        "mr", "mrs", "ms", "dr", "prof", "sr", "jr", "mt", "fig", "eq", "eqs", "vol",
    }
)
# Longer than any abbreviation with brackets or quotes before it ("(e.g." is 5 characters).
_LONGEST_ABBREVIATION_WORD = 32
# GSM8K calculator annotations such as <<3*4=12>> must stay inside one step.
_CALCULATOR_ANNOTATION = re.compile(r"<<[^<>]*>>")


def _cuts_at_separators(pattern: re.Pattern[str]) -> Callable[[str], list[int]]:
    """Cut at both ends of every separator match: the separator belongs to no piece."""

    def cuts(solution: str) -> list[int]:
        offsets: list[int] = []
        for match in pattern.finditer(solution):
            offsets += [match.start(), match.end()]
        return offsets

    return cuts


def _step_marker_cuts(solution: str) -> list[int]:
    # The marker starts its step, so cut just before it and keep it in the step's text.
    return [match.start() for match in _STEP_MARKER.finditer(solution)]


def _is_abbreviation(solution: str, dot_end: int) -> bool:
    # Only the last few characters are searched: a search from the text's start would try every
    # position before the dot, which makes a long trace's sentence split quadratic.
    window = max(0, dot_end - _LONGEST_ABBREVIATION_WORD)
    word = _WORD_BEFORE_END.search(solution, window, dot_end)
    if word is None or not word.group(1).endswith("."):
        return False
    if word.start() == window and window > 0 and not solution[window - 1].isspace():
        return False  # a word longer than the window: no abbreviation is that long
    bare = word.group(1).lstrip("([{\"'\u201c\u2018").rstrip(".").lower()
    return bare in _ABBREVIATIONS


def _inside_any(offset: int, ranges: list[tuple[int, int]]) -> bool:
    return any(start < offset < end for start, end in ranges)


def _sentence_cuts(solution: str) -> list[int]:
    protected = [m.span() for m in _CALCULATOR_ANNOTATION.finditer(solution)]
    # "Step 2." heads its sentence; it does not end one.
    markers = {m.end() for m in _STEP_MARKER.finditer(solution)}
    return [
        match.end()
        for match in _SENTENCE_END.finditer(solution)
        if match.end() not in markers
        and not _is_abbreviation(solution, match.end())
        and not _inside_any(match.end(), protected)
    ]


def _sentence_or_line_cuts(solution: str) -> list[int]:
    """Sentence ends and line breaks: in a reasoning trace an equation or a "So x = 3" often
    stands on its own line with no full stop, and still ends a thought."""
    return sorted({*_sentence_cuts(solution), *_cuts_at_separators(_LINE_BREAK)(solution)})


def _merged_cuts(solution: str, min_chars: int, max_chars: int) -> list[int]:
    """Sentences (and lines) merged, in order, until a step holds at least `min_chars`; a
    sentence that would take a step past `max_chars` starts the next one. A single sentence
    longer than `max_chars` stays whole: a step never ends mid-sentence."""
    cuts: list[int] = []
    step_start = step_end = None  # the step being built: where it starts, where its last unit ends
    for unit in _spans(solution, _sentence_or_line_cuts(solution)):
        if step_start is not None and (step_end - step_start >= min_chars or unit.end - step_start > max_chars):
            cuts.append(unit.start)
            step_start = None
        if step_start is None:
            step_start = unit.start
        step_end = unit.end
    return cuts


# What comes just before a sentence's or a line's first word: a line break, or a sentence's end
# punctuation (with a closing quote or bracket) and a space, then only spaces or tabs.
_SENTENCE_START_BEFORE = re.compile(r"(?:\n|[.!?][\"'\u201d\u2019)\]]*[ \t])[ \t]*\Z")
_LOOK_BEHIND_CHARS = 64
_WORD_CHAR = re.compile(r"\w")


@lru_cache(maxsize=64)
def _marker_pattern(markers: tuple[str, ...]) -> re.Pattern[str]:
    # Longest first, so "Let me check" is tried before a marker that is a prefix of it.
    return re.compile("|".join(re.escape(marker) for marker in sorted(set(markers), key=len, reverse=True)))


def _reflection_cuts(solution: str, markers: Sequence[str]) -> list[int]:
    """Just before each marker that opens a sentence or a line (the marker stays in its step).
    A marker must end at a word boundary: "Hmm," and "Wait." count, "Waiting" does not."""
    text_start = len(solution) - len(solution.lstrip())
    cuts = []
    for match in _marker_pattern(tuple(markers)).finditer(solution):
        end = match.end()
        if end < len(solution) and _WORD_CHAR.match(solution[end]) and _WORD_CHAR.match(match.group()[-1]):
            continue
        before = solution[max(0, match.start() - _LOOK_BEHIND_CHARS) : match.start()]
        if match.start() == text_start or _SENTENCE_START_BEFORE.search(before):
            cuts.append(match.start())
    return cuts


def _spans(solution: str, cuts: list[int]) -> list[StepSpan]:
    bounds = [0, *cuts, len(solution)]
    spans = (_trimmed_span(solution, a, b) for a, b in zip(bounds, bounds[1:]))
    return [span for span in spans if span is not None]


def _cutter(rule: SplitRule) -> Callable[[str], list[int]]:
    if rule.name == MODEL_RULE:
        check_cutting_rule(rule.text())  # raises: a model's steps are not cut by a rule
    if rule.name == "reflection":
        return lambda solution: _reflection_cuts(solution, rule.markers)
    if rule.name == "sentence-merged":
        return lambda solution: _merged_cuts(solution, rule.min_chars, rule.max_chars)
    return _CUTTERS[rule.name]


_CUTTERS: dict[str, Callable[[str], list[int]]] = {
    "line": _cuts_at_separators(_LINE_BREAK),
    "blank-line": _cuts_at_separators(_BLANK_LINES),
    # A paragraph is what a blank line ends: the same cuts under the name reasoning-trace
    # papers use; "blank-line" stays for the rules already stored under it.
    "paragraph": _cuts_at_separators(_BLANK_LINES),
    "step-marker": _step_marker_cuts,
    "sentence": _sentence_cuts,
}


def _trimmed_span(solution: str, start: int, end: int) -> StepSpan | None:
    while start < end and solution[start].isspace():
        start += 1
    while end > start and solution[end - 1].isspace():
        end -= 1
    if start == end:
        return None
    return StepSpan(solution[start:end], start, end)


def segment(solution: str, rule: str) -> list[StepSpan]:
    """Split `solution` into steps by `rule`; whitespace-only pieces are dropped."""
    if rule == "pre-split":
        raise ValueError("'pre-split' steps are not cut from text: build them with join_steps()")
    return _spans(solution, _cutter(parse_rule(rule))(solution))


# --- what a model splitter chooses among (core.jobs.split) ----------------------------------------


def candidate_units(solution: str) -> list[StepSpan]:
    """The pieces a model splitter groups into steps: sentences and lines, trimmed, in order. A
    model only chooses which of them start a step, so its steps are always runs of them and cover
    the text as a rule's do, whatever the model writes."""
    return _spans(solution, _sentence_or_line_cuts(solution))


def sentence_ends(solution: str) -> set[int]:
    """Where the `sentence` rule cuts: a unit that ends at one of these ends a sentence-rule step."""
    return set(_sentence_cuts(solution))


def spans_at(solution: str, cuts: Sequence[int]) -> list[StepSpan]:
    """The steps of `solution` cut at these offsets, trimmed like every rule's (blank pieces dropped)."""
    return _spans(solution, sorted(set(cuts)))


def join_steps(steps: Sequence[str], separator: str = "\n") -> tuple[str, list[StepSpan]]:
    """Build the solution text for steps that arrive already split (ProcessBench, PRM800K).

    Every step is kept exactly, empty ones included: imported labels refer to steps by index,
    so dropping or merging one would shift every label after it.
    """
    spans: list[StepSpan] = []
    offset = 0
    for index, step in enumerate(steps):
        if index:
            offset += len(separator)
        spans.append(StepSpan(step, offset, offset + len(step)))
        offset += len(step)
    return separator.join(steps), spans


def prefix_end(solution: str, spans: list[StepSpan], k: int) -> int:
    """Offset where the prefix that ends with step k stops: `solution[:prefix_end(...)]`.

    The prefix runs up to the start of step k+1, so it includes the separator after step k.
    A rollout continues the prefix as raw text; ending on the separator means the model starts
    a fresh step instead of first having to decide whether step k is over (without the newline
    it often just keeps writing step k). It also makes prefix k a string prefix of prefix k+1.
    The last step has no separator after it, so its prefix stops at its own end.
    """
    if not 0 <= k < len(spans):
        raise IndexError(f"step {k} out of range for {len(spans)} steps")
    if k + 1 < len(spans):
        return spans[k + 1].start
    return min(spans[k].end, len(solution))


# --- moving what was said about one segmentation's steps to another's -------------------------

SPAN_MATCHES = ("contains", "overlaps", "same-end")


def map_spans(source: Sequence[StepSpan], target: Sequence[StepSpan], how: str = "contains") -> list[tuple[int, ...]]:
    """For each source span, the indices of the target spans it maps to, by character offsets.

    `contains`: the one target step whose span holds the whole source span (the label keeps all
    its characters in one step: a -1 on a sentence becomes a -1 on the paragraph holding it);
    `overlaps`: every target step sharing a character with it (a +1 on a paragraph holds for
    each of its sentences); `same-end`: the target step that ends where it ends, the only way a
    value moves, since a Monte Carlo value belongs to the prefix that ends at its step. An empty
    tuple is a span that did not map. Both lists are in text order, so one merge-like pass does.
    """
    if how not in SPAN_MATCHES:
        raise StepScopeError(f"span match is one of {', '.join(SPAN_MATCHES)}, not {how!r}")
    mapped: list[tuple[int, ...]] = []
    first = 0  # the first target that can still matter: targets end in order
    for span in source:
        while first < len(target) and target[first].end <= span.start and target[first].end != span.end:
            first += 1
        hits = []
        for index in range(first, len(target)):
            candidate = target[index]
            if candidate.start >= span.end and not (candidate.start == candidate.end == span.end):
                break
            if how == "contains":
                matched = candidate.start <= span.start and span.end <= candidate.end
            elif how == "overlaps":
                matched = candidate.start < span.end and span.start < candidate.end
            else:
                matched = candidate.end == span.end
            if matched:
                hits.append(index)
        mapped.append(tuple(hits))
    return mapped
