"""The parameters of a search, in one frozen dataclass, and the problem it is run on.

Names follow huggingface/search-and-learn's `Config` where it has the parameter: `n` (beams or
samples per problem), `beam_width` (M), `temperature`, `top_p`, `seed`; its `num_iterations` is
`max_steps` here. The rest belong to the strategies search-and-learn does not have (MCTS,
step-level rejection) or to accounting (`token_budget`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Mapping

from core.errors import StepScopeError
from core.policy import POLICY_STOP, PolicyTemplate

STRATEGY_NAMES = ("bon", "beam", "dvts", "mcts", "reject")


@dataclass(frozen=True)
class SearchProblem:
    """A problem as the search sees it: the policy's prompt (`context`) and, for grading the
    final beams (and for the MC scorer, which needs it), the gold answer."""

    question: str
    gold: str
    context: str

    @classmethod
    def from_template(cls, question: str, gold: str, template: PolicyTemplate) -> "SearchProblem":
        return cls(question, gold, template.render(question))


def _option(default, help: str):
    """A parameter with its one help text, for every form that sets it (CLI, app, manifest)."""
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class SearchConfig:
    strategy: str = _option("beam", "bon | beam | dvts | mcts | reject")
    n: int = _option(4, "bon: samples; beam: active beams; dvts: beams in all (n / M subtrees); reject: chains")
    beam_width: int = _option(4, "M: beam keeps n / M, dvts expands each subtree into M, mcts expands a leaf into M")
    max_steps: int = _option(40, "the most steps of a solution; the last one is generated to the end (num_iterations)")
    temperature: float = _option(0.8, "sampling temperature of the policy")
    top_p: float = _option(1.0, "nucleus sampling of the policy")
    seed: int = _option(42, "every sampling seed of the search derives from it")
    step_delimiter: str = _option("\n", "what ends a step: generation stops at it, one step per call")
    solution_stops: tuple[str, ...] = _option(POLICY_STOP, "what ends a whole solution (the few-shot prompt's)")
    max_step_tokens: int = _option(256, "the most tokens of one step")
    max_solution_tokens: int = _option(1024, "the most tokens of a whole solution, a completion or an MCTS rollout")
    token_budget: int | None = _option(None, "policy tokens; the search stops expanding once they are spent")
    threshold: float = _option(0.5, "reject: a step scored under it is resampled")
    max_resamples: int = _option(4, "reject: R, the most resamples of one step")
    expansions: int = _option(32, "mcts: iterations (select, expand, simulate, back up)")
    c_puct: float = _option(1.0, "mcts: weight of the prior in PUCT")
    rollout_weight: float = _option(0.5, "mcts: lambda; a leaf's value = (1 - lambda) score + lambda rollout's score")

    def __post_init__(self) -> None:
        object.__setattr__(self, "solution_stops", tuple(self.solution_stops))
        if self.strategy not in STRATEGY_NAMES:
            raise StepScopeError(f"a search strategy is one of {', '.join(STRATEGY_NAMES)}, not {self.strategy!r}")
        positive = {"n": self.n, "beam_width": self.beam_width, "max_steps": self.max_steps,
                    "max_step_tokens": self.max_step_tokens, "max_solution_tokens": self.max_solution_tokens,
                    "expansions": self.expansions}  # fmt: skip
        for name, value in positive.items():
            if value < 1:
                raise StepScopeError(f"{name} must be at least 1, got {value}")
        if self.strategy in ("beam", "dvts") and self.n % self.beam_width:
            # search-and-learn's own check: n / M beams survive (beam) or n / M subtrees grow (dvts)
            raise StepScopeError(f"n ({self.n}) must be a multiple of the beam width ({self.beam_width})")
        if not self.step_delimiter:
            raise StepScopeError("the step delimiter cannot be empty")
        if self.temperature < 0 or not 0 < self.top_p <= 1:
            raise StepScopeError("temperature must be >= 0 and top_p in (0, 1]")
        if self.max_resamples < 0 or self.c_puct < 0 or not 0 <= self.rollout_weight <= 1:
            raise StepScopeError("max_resamples and c_puct cannot be negative; rollout_weight lies in [0, 1]")
        if self.token_budget is not None and self.token_budget < 1:
            raise StepScopeError(f"the token budget must be at least 1, got {self.token_budget}")

    @property
    def survivors(self) -> int:
        """Beams kept at each depth (beam search) or independent subtrees (DVTS): n / M."""
        return self.n // self.beam_width

    def as_manifest(self) -> dict:
        manifest = asdict(self)
        manifest["solution_stops"] = list(self.solution_stops)
        return manifest

    @classmethod
    def options(cls) -> list[tuple[str, Any, str]]:
        """(name, default, help) of every parameter: what a command line or a form is built from."""
        return [(f.name, f.default, f.metadata["help"]) for f in fields(cls)]

    @classmethod
    def from_manifest(cls, entry: Mapping[str, Any]) -> "SearchConfig":
        names = {f.name for f in fields(cls)}
        unknown = set(entry) - names
        if unknown:
            raise StepScopeError(f"unknown search parameters: {', '.join(sorted(unknown))}")
        return cls(**dict(entry))
