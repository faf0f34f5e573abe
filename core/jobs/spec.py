"""What every job kind's spec has in common: the engine to load, the bounds both the CLI and the
app enforce, the shared progress record, and the manifest round trip.

A spec is a frozen dataclass, one per job kind. It is the only shape a job's parameters take:
the CLI and the app translate their inputs into a spec, `validate` checks it once against the
store, `to_manifest` writes it into the job row (with what was derived from the store: template
hashes, splitters, grader, code version), and `from_manifest` rebuilds the same spec from the row
when a runner picks the job up, so what runs is exactly what was queued.
"""

from __future__ import annotations

import subprocess
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping

import core
from core.engines.base import SamplingParams
from core.errors import StepScopeError

# Bounds shared by every way of starting a job (CLI flags, app widgets, benchmarks).
MAX_N = 256  # rollouts per step
MAX_NEW_TOKENS = 2048
MAX_K = 256  # solutions per problem
MAX_PROBLEMS = 100_000
MAX_TEMPERATURE = 5.0


def code_version() -> str:
    """The package version plus the git commit when running from a checkout."""
    root = Path(core.__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, timeout=5,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        commit = ""
    return f"{core.__version__}+{commit}" if commit else core.__version__


def check_range(name: str, value: float, low: float, high: float) -> None:
    if not low <= value <= high:
        raise StepScopeError(f"{name} is between {low:g} and {high:g}, not {value:g}")


def check_sampling(sampling: SamplingParams) -> None:
    check_range("max new tokens", sampling.max_new_tokens, 1, MAX_NEW_TOKENS)
    check_range("temperature", sampling.temperature, 0, MAX_TEMPERATURE)
    check_range("top-p", sampling.top_p, 0, 1)


def sampling_from(described: Mapping[str, Any]) -> SamplingParams:
    return SamplingParams(**{**described, "stop": tuple(described.get("stop", ()))})


@dataclass
class Progress:
    """What a running job reports after each engine call (done and planned in the kind's unit)."""

    planned: int
    done: int = 0
    tokens: int = 0
    seconds: float = 0.0  # time inside engine calls and their bookkeeping, for tokens/s
    engine_seconds: float = 0.0  # time inside engine calls alone
    calls: int = 0
    kept: int = 0  # generate: distinct solutions stored
    cancelled: bool = False
    per_round: list[int] = field(default_factory=list)  # estimate: rollouts asked for per round

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0


def step_reporter(context: "JobContext") -> Callable[[int, int], None]:
    """A `(done, planned)` callback for training loops that count their own steps: it reports
    them as the job's progress with the time since the run began."""
    progress, began = Progress(planned=0), time.perf_counter()

    def report(done: int, planned: int) -> None:
        progress.done, progress.planned, progress.seconds = done, planned, time.perf_counter() - began
        context.report(progress)

    return report


@dataclass(frozen=True)
class JobContext:
    """What a runner hands a spec's `run`: the store, the claimed job, the loaded engine."""

    store: Any
    job_id: int
    job_key: str
    engine: Any
    should_stop: Callable[[], bool]
    report: Callable[[Progress], None]


@dataclass(frozen=True, kw_only=True)
class JobSpec(ABC):
    """The interface every job kind implements; a kind missing a method cannot be built."""

    kind: ClassVar[str] = ""
    unit: ClassVar[str] = "items"  # what done/planned count, shown with the progress
    # Whether the kind records its own compute on the job row (the search job: its journal's counts
    # include a resumed run's replayed calls); else the runner counts the engine's sampling calls.
    counts_compute: ClassVar[bool] = False
    # Whose tokens the loaded engine's are in that count: a policy's or a verifier's (judges, PRMs, probes).
    engine_role: ClassVar[str] = "policy"

    engine: str = "transformers"
    engine_options: Mapping[str, Any] = field(default_factory=dict)

    @abstractmethod
    def model_to_load(self) -> str:
        """The model the runner loads on `engine` for this job."""

    def validate(self, store) -> None:
        """Raise StepScopeError naming the first thing wrong; the store answers what exists."""

    @abstractmethod
    def to_manifest(self, store) -> dict:
        """The job row's manifest: the spec's fields plus what was derived from the store."""

    @classmethod
    @abstractmethod
    def from_manifest(cls, manifest: Mapping[str, Any]) -> "JobSpec":
        """The spec a manifest written by `to_manifest` (or an older version of it) describes."""

    def planned(self) -> int:
        """The job's size when queued, if known before it runs (0: the run tells)."""
        return 0

    @abstractmethod
    def run(self, context: JobContext) -> bool:
        """Do the work, reporting progress; returns whether it stopped because it was cancelled."""

    def common_manifest(self) -> dict:
        return {"engine": self.engine, "engine_options": dict(self.engine_options), "code_version": code_version()}


def known_fields(cls, manifest: Mapping[str, Any], **converted: Any) -> dict:
    """The manifest's values for the spec's fields (keys it does not know, e.g. engine_info, are
    what the run added), with `converted` values taking precedence."""
    names = {f.name for f in fields(cls)}
    return {**{k: v for k, v in manifest.items() if k in names}, **converted}


def splitters_of(store, trajectory_ids) -> list[str]:
    """The step splitters that cut the trajectories into steps: results read per step depend on them."""
    return sorted({(store.get_trajectory(t) or {}).get("rule") or "" for t in trajectory_ids})


def require_ids(ids, what: str) -> None:
    if not ids:
        raise StepScopeError(f"no {what}")
