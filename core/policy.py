"""What the policy model is shown: the prompt for a problem and the prefix for each step.

Prefix k = the policy context (the rendered prompt) + the solution up to where step k+1 would
start, exactly as the trajectory has it. Rollouts continue that raw text, so every rollout of a
step sends the same string and prefix caching applies.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources

from core.steps import StepSpan, prefix_end

DEFAULT_TEMPLATE = "policy_fewshot"
# The few-shot prompt separates worked examples by a blank line and a new "Question:".
POLICY_STOP = ("\nQuestion:", "\n\n")


def rollout_stops(stops, solution: str) -> tuple[str, ...]:
    """The stop strings for rollouts continuing `solution`: those it does not contain itself. A
    reasoning trace cut into paragraphs has blank lines between its steps, so a blank line cannot
    mean the solution is over: a rollout stopped there would write one step and never reach an
    answer (every MC value 0). "\nQuestion:" and the token cap still end it."""
    return tuple(stop for stop in stops or () if stop not in solution)


@dataclass(frozen=True)
class PolicyTemplate:
    name: str
    text: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()[:16]

    def render(self, question: str) -> str:
        return self.text.replace("{question}", question.strip())


def load_template(name: str = DEFAULT_TEMPLATE) -> PolicyTemplate:
    text = resources.files("core.prompts").joinpath(f"{name}.txt").read_text(encoding="utf-8")
    return PolicyTemplate(name, text.rstrip("\n"))


def policy_context(question: str, stored_prompt: str | None, template: PolicyTemplate) -> str:
    """The prompt a trajectory was (or would have been) generated from.

    A trajectory the policy generated stores the exact prompt it saw; an imported one (a gold
    solution, a PRM800K sample) gets the template rendered for its question.
    """
    return stored_prompt if stored_prompt else template.render(question)


def join_context(context: str, solution_part: str) -> str:
    """Context + solution text, with one space after "Answer:" when the solution lacks it
    (imported solutions start at their first word; the model's own start with a space)."""
    if solution_part and not solution_part[0].isspace() and context and not context[-1].isspace():
        return context + " " + solution_part
    return context + solution_part


def step_prefixes(context: str, solution: str, spans: list[StepSpan]) -> list[tuple[str, str]]:
    """For each step: (prompt text sent to the engine, the solution part it contains)."""
    prefixes = []
    for k in range(len(spans)):
        solution_part = solution[: prefix_end(solution, spans, k)]
        prefixes.append((join_context(context, solution_part), solution_part))
    return prefixes
