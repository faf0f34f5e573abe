"""Step segmentation: cut a solution into the steps that get values, verdicts and labels.

A step is a span of the solution, never a rewritten copy: `solution[start:end] == text`.
Keeping offsets (instead of re-joining cleaned strings) is what lets a rollout prefix be the
solution's own text, character for character, so the prefix for step k is a string prefix of
the one for step k+1 and the engine's prefix cache is reused.

The rule name is one of `SPLITTERS`; it is stored with the trajectory and in job manifests.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Sequence

from core.errors import StepScopeError

SPLITTERS: tuple[str, ...] = ("line", "blank-line", "step-marker", "sentence", "pre-split")


@dataclass(frozen=True)
class StepSpan:
    text: str
    start: int
    end: int


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
    word = _WORD_BEFORE_END.search(solution, 0, dot_end)
    if word is None or not word.group(1).endswith("."):
        return False
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


_CUTTERS: dict[str, Callable[[str], list[int]]] = {
    "line": _cuts_at_separators(_LINE_BREAK),
    "blank-line": _cuts_at_separators(_BLANK_LINES),
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
    cutter = _CUTTERS.get(rule)
    if cutter is None:
        raise StepScopeError(
            f"unknown step splitter {rule!r}; choose one of: {', '.join(SPLITTERS)}"
        )
    bounds = [0, *cutter(solution), len(solution)]
    spans = (_trimmed_span(solution, a, b) for a, b in zip(bounds, bounds[1:]))
    return [span for span in spans if span is not None]


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
