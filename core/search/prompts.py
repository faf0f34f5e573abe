"""What the policy is sent to write the next step, and when a step ends its solution.

The prompt after some steps is the policy context + the steps joined by the delimiter + the
delimiter: the model starts a fresh step, and the prompt after k steps is a string prefix of the
prompt after k + 1, so an engine's prefix cache serves every depth (as for MC rollouts,
core/policy.py).
"""

from __future__ import annotations

from typing import Sequence

from core.grading import extract_answer
from core.policy import join_context

# A step that states one of these has a final answer; the last-number fallback does not count:
# "12 * 4 = 48" has a last number and is not the end of a solution.
FINAL_ANSWER_METHODS = ("gsm8k", "boxed", "answer-is")


def continuation_prompt(context: str, texts: Sequence[str], delimiter: str) -> str:
    """The prompt that continues a path of raw step texts with a new step."""
    texts = [t for t in texts if t]
    if not texts:
        return context
    return join_context(context, delimiter.join(texts) + delimiter)


def has_final_answer(text: str) -> bool:
    return extract_answer(text).method in FINAL_ANSWER_METHODS


def ends_solution_marker(text: str, delimiter: str, solution_stops: Sequence[str]) -> bool:
    """Whether a step is the policy ending its solution rather than a step: empty (it wrote the
    delimiter again: "\\n\\n" in the few-shot format), or the delimiter plus it starts a
    solution stop (a new "Question:" after the last step)."""
    if not text.strip():
        return True
    return any(stop and (delimiter + text).startswith(stop) for stop in solution_stops)
