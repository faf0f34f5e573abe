"""Reasoning traces (`reasoning`): a model's thinking, then its answer, in three shapes.

One JSON object per line, its shape told by its fields:

- **OpenR1-Math** (`open-r1/OpenR1-Math-220k`): `problem`, `answer` (the gold), `generations`
  (a list of traces, each `<think> ... </think>` then the answer), and per generation
  `correctness_math_verify` (a list of true/false, one per generation; required), optionally
  `correctness_llama`, `is_reasoning_complete` and `finish_reasons` (lists of the same length).
  Every other field (`uuid`, `source`, `problem_type`, `solution`, ...) is kept in the problem's
  meta; the record's `messages` (OpenR1 repeats one generation there) are left out.
- **Chat**: `messages`, a list of `{role, content}` with one assistant message whose
  `reasoning_content` holds the thinking and `content` the answer (DeepSeek's and vLLM's
  reasoning parsers write this), or whose `content` holds `<think> ... </think>` then the answer.
  The problem is the first user message (or `problem`); optional `answer` (the gold), `model`.
- **Plain text**: `text`, the whole trace (`<think>` tags optional), with optional `problem`,
  `answer` and `model`.

The think part and the answer part are kept apart: the trajectory's solution is the think part
exactly as written between the tags, cut into steps by the `paragraph` splitter (or the one
the import names: `stepscope import --splitter`; others can be added later as more
segmentations), and the answer part goes to the
trajectory's meta (`reasoning.answer`), with what was around the think part (`reasoning.opening`,
`reasoning.closing`), so `opening + solution + closing + answer` is the trace as it came. Why the
answer is not steps: the steps are what Monte Carlo rollouts continue and people label, and a
reasoning model continues its thinking from a prefix of the think part, not from inside a
summary it writes once the thinking is over; a splitter re-run over the solution never cuts a
tag or the summary. The final answer is extracted from the answer part and graded against the
gold (core.grading); a trace with no answer part (its thinking never closed) has no final
answer, and is incorrect when there is a gold. OpenR1's own correctness flags are kept in the
trajectory's meta (`reasoning.correctness_math_verify`, ...), beside the grade StepScope gave.
A text without tags is all thinking, and its answer is graded from the whole text.
"""

from __future__ import annotations

from typing import Any

from core.formats.base import Importer, ImportOptions
from core.formats.records import (
    Item, Problem, RecordError, Trajectory, cut, each_dict, nested, opt_list, opt_str, req_list, req_str, text,
)
from core.formats.records import _type_name as type_name  # the records' words for JSON types
from core.grading import extract_answer, grade

SOURCE = "reasoning"
DEFAULT_DATASET = "reasoning"
SPLITTER = "paragraph"
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
# OpenR1's per-generation lists: each must have one entry per generation.
_PER_GENERATION = ("correctness_math_verify", "correctness_llama", "is_reasoning_complete", "finish_reasons")
_OPENR1_LEFT_OUT = ("problem", "answer", "generations", "messages", *_PER_GENERATION)


def split_think(trace: str) -> tuple[str, str, str, str | None]:
    """(opening, think part, closing, answer part) with opening + think + closing + answer == trace.

    `<think>` may be missing when a chat template put it in the prompt (the trace starts inside
    the thinking and only closes it); an unclosed `<think>` is a trace cut off mid-thought (no
    answer part: None). A trace with neither tag is all thinking (opening and closing empty,
    answer part None), and its answer is graded from the whole text.
    """
    open_at = trace.find(THINK_OPEN)
    close_at = trace.find(THINK_CLOSE, 0 if open_at < 0 else open_at)
    if open_at < 0 and close_at < 0:
        return "", trace, "", None
    start = open_at + len(THINK_OPEN) if open_at >= 0 else 0
    if close_at < 0:
        return trace[:start], trace[start:], "", None
    end = close_at + len(THINK_CLOSE)
    return trace[:start], trace[start:close_at], trace[close_at:end], trace[end:]


def _trajectory(
    parts: tuple[str, str, str, str | None], gold: str | None, model: str | None, meta: dict[str, Any], where: str,
    splitter: str,
) -> Trajectory:
    """The trajectory of a trace split into (opening, think, closing, answer), graded from the
    answer part; `meta` (shape and per-generation flags) goes into its `reasoning` meta."""
    opening, think, closing, answer = parts
    if not think.strip():
        raise RecordError(f"{where} has an empty think part")
    graded_from = think if answer is None and not closing and not opening else answer
    if graded_from is None:  # the thinking never closed: no answer was given
        final, correct = None, (False if gold is not None else None)
    elif gold is not None:
        result = grade(graded_from, gold)
        final, correct = result.answer, result.correct
    else:
        final, correct = extract_answer(graded_from).value, None
    reasoning = {**meta, "opening": opening, "closing": closing, "answer": answer}
    return Trajectory(
        source=SOURCE, solution=think, segmentations=[cut(think, splitter)], model=model,
        final_answer=final, correct=correct, meta={"reasoning": reasoning},
    )  # fmt: skip


def _flags(obj: dict, name: str, count: int) -> list:
    values = opt_list(obj, name)
    if name != "correctness_math_verify" and not values:
        return [None] * count
    if len(values) != count:
        raise RecordError(f"field {name!r} has {len(values)} entries for {count} generations")
    for index, value in enumerate(values):
        allowed = isinstance(value, str) if name == "finish_reasons" else isinstance(value, bool)
        if value is not None and not allowed:
            kind = "a string" if name == "finish_reasons" else "true or false"
            raise RecordError(f"{name}[{index}] must be {kind} or null, got {type_name(value)}")
    return values


def _openr1(obj: dict, options: ImportOptions) -> Item:
    question = req_str(obj, "problem", nonempty=True)
    gold = req_str(obj, "answer", nonempty=True)
    generations = req_list(obj, "generations", nonempty=True)
    count = len(generations)
    if "correctness_math_verify" not in obj:
        raise RecordError("missing field 'correctness_math_verify'")
    flags = {name: _flags(obj, name, count) for name in _PER_GENERATION}
    trajectories = []
    for index, generation in enumerate(generations):
        trace = text(generation, f"generations[{index}]")
        meta = {"shape": "openr1", "generation": index, **{name: flags[name][index] for name in _PER_GENERATION}}
        trajectories.append(_trajectory(split_think(trace), gold, opt_str(obj, "model"), meta, f"generations[{index}]",
                                        options.splitter or SPLITTER))  # fmt: skip
    problem_meta = {key: value for key, value in obj.items() if key not in _OPENR1_LEFT_OUT}
    return Item(Problem(options.dataset_or(DEFAULT_DATASET), question, gold, problem_meta), trajectories)


def _assistant_parts(message: dict, where: str) -> tuple[tuple[str, str, str, str | None], dict]:
    """The assistant message's (opening, think, closing, answer), and what the meta says of where
    the thinking was: its own field (`reasoning_content`, no tags), or tags in `content`."""
    content = nested(where, lambda: req_str(message, "content"))
    reasoning = nested(where, lambda: opt_str(message, "reasoning_content"))
    if reasoning is None:
        return split_think(content), {"field": "content"}
    if not reasoning.strip():
        raise RecordError(f"{where}: field 'reasoning_content' is empty")
    return ("", reasoning, "", content), {"field": "reasoning_content"}


def _chat(obj: dict, options: ImportOptions) -> Item:
    messages = each_dict(req_list(obj, "messages", nonempty=True), "messages")
    roles = [nested(f"messages[{i}]", lambda m=m: req_str(m, "role")) for i, m in enumerate(messages)]
    if "assistant" not in roles:
        raise RecordError("field 'messages' has no assistant message")
    question = opt_str(obj, "problem")
    if question is None:
        if "user" not in roles:
            raise RecordError("field 'messages' has no user message (and there is no field 'problem')")
        first_user = roles.index("user")
        question = nested(f"messages[{first_user}]", lambda: req_str(messages[first_user], "content", nonempty=True))
    at = len(roles) - 1 - roles[::-1].index("assistant")  # the last assistant message answers
    parts, where_thinking = _assistant_parts(messages[at], f"messages[{at}]")
    gold = opt_str(obj, "answer")
    trajectory = _trajectory(parts, gold, opt_str(obj, "model"), {"shape": "chat", **where_thinking}, f"messages[{at}]",
                             options.splitter or SPLITTER)  # fmt: skip
    meta = {key: value for key, value in obj.items() if key not in ("messages", "problem", "answer", "model")}
    return Item(Problem(options.dataset_or(DEFAULT_DATASET), question, gold, meta), [trajectory])


def _plain(obj: dict, options: ImportOptions) -> Item:
    trace = req_str(obj, "text", nonempty=True)
    question = opt_str(obj, "problem")
    if question is None or not question.strip():
        raise RecordError("missing field 'problem' (the question the trace answers)")
    gold = opt_str(obj, "answer")
    trajectory = _trajectory(split_think(trace), gold, opt_str(obj, "model"), {"shape": "text"}, "field 'text'",
                             options.splitter or SPLITTER)  # fmt: skip
    meta = {key: value for key, value in obj.items() if key not in ("text", "problem", "answer", "model")}
    return Item(Problem(options.dataset_or(DEFAULT_DATASET), question, gold, meta), [trajectory])


def parse(obj: dict, options: ImportOptions) -> list[Item]:
    if "generations" in obj:
        return [_openr1(obj, options)]
    if "messages" in obj:
        return [_chat(obj, options)]
    if "text" in obj:
        return [_plain(obj, options)]
    raise RecordError(
        "a reasoning record has 'generations' (OpenR1-Math), 'messages' (chat) or 'text' (plain); found none"
    )


IMPORTER = Importer(
    name="reasoning",
    description="reasoning traces: OpenR1-Math (problem, answer, generations), chat (messages with reasoning_content or <think>), or text",
    default_dataset=DEFAULT_DATASET,
    parse=parse,
    splitter=SPLITTER,
)
