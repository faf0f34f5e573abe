"""The prm-score job: a process reward model scores every step of the trajectories (core.prm).

Every trajectory's input is built and checked (its tokens, its length against the PRM's
context) before the first score is written, so bad input fails the job with nothing stored.
Scores are stored a batch of trajectories at a time, each batch in one transaction, as step
verdicts under the PRM's judge name, with the format's name and hash and the model's
fingerprint; a rerun skips the trajectories the job already scored, so a killed job resumes.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Mapping

from core.errors import StepScopeError
from core.jobs.spec import JobContext, JobSpec, Progress, check_range, known_fields, require_ids, splitters_of
from core.prm import PrmFormat, build_targets, prm_judge_name, readout_for, score_targets, verdict_rows
from core.store import Store

PRM_ENGINE_NAMES = ("prm:transformers", "prm:vllm", "prm:server")


def family_of(prm: str, family: str | None) -> str:
    """The family asked for, else the preset's, else what a local model's config says it is."""
    from core.prm import family_from_architectures, preset_format_keys

    if family:
        return family
    preset_family = preset_format_keys(prm).get("family")
    if preset_family:
        return preset_family
    config = Path(prm).expanduser() / "config.json"
    if config.is_file():
        try:
            architectures = json.loads(config.read_text(encoding="utf-8")).get("architectures")
        except (OSError, ValueError) as error:
            raise StepScopeError(f"cannot read {config}: {error}") from None
        return family_from_architectures(architectures, prm)
    raise StepScopeError(f"{prm} is not a PRM preset or a local model: say its family (--family)")


def prm_score_spec(prm: str, trajectory_ids, *, family: str | None = None, engine: str = "transformers",
                   engine_options: Mapping[str, Any] | None = None, name: str | None = None,
                   batch_size: int = 8, **format_options: Any) -> "PrmScoreSpec":  # fmt: skip
    """The spec the CLI and the app build: the family settled once and given to the engine too."""
    from core.prm import prm_format

    family = family_of(prm, family)
    fmt = prm_format(family, preset=prm, **format_options)
    engine_name = engine if engine.startswith("prm:") else f"prm:{engine}"
    return PrmScoreSpec(
        prm=prm, trajectory_ids=tuple(trajectory_ids), prm_format=fmt.as_dict(), name=name, batch_size=batch_size,
        format_name=prm if _is_preset(prm) and fmt == prm_format(None, preset=prm) else "custom",
        engine=engine_name, engine_options={**dict(engine_options or {}), "family": family},
    )  # fmt: skip


def _is_preset(prm: str) -> bool:
    from core.prm import is_prm_preset

    return is_prm_preset(prm)


@dataclass(frozen=True, kw_only=True)
class PrmScoreSpec(JobSpec):
    """PRM `prm` gives a step verdict on every step of the trajectories."""

    kind: ClassVar[str] = "prm-score"
    unit: ClassVar[str] = "verdicts"
    engine_role: ClassVar[str] = "verifier"

    engine: str = "prm:transformers"
    prm: str  # a PRM preset, a local directory, a hub id, or the model name a server serves
    trajectory_ids: tuple[int, ...]
    prm_format: Mapping[str, Any] = field(default_factory=dict)  # core.prm.PrmFormat as a dict
    format_name: str = "custom"  # the preset the format came from, or "custom"
    name: str | None = None  # judge name of the verdicts; default "prm:<prm>"
    batch_size: int = 8

    def model_to_load(self) -> str:
        return self.prm

    def format(self) -> PrmFormat:
        if not self.prm_format:
            raise StepScopeError("a prm-score job needs the PRM's format")
        return PrmFormat.from_dict(self.prm_format)

    @property
    def judge(self) -> str:
        return prm_judge_name(self.prm, self.name)

    def validate(self, store: Store) -> None:
        if not self.prm.strip():
            raise StepScopeError("name a PRM: a preset, a model directory or a hub id")
        if self.engine not in PRM_ENGINE_NAMES:
            raise StepScopeError(f"a PRM runs on {', '.join(e.removeprefix('prm:') for e in PRM_ENGINE_NAMES)}, "
                                 f"not {self.engine.removeprefix('prm:')!r}")  # fmt: skip
        fmt = self.format()
        if self.engine_options.get("family") != fmt.family:
            raise StepScopeError("the engine's PRM family and the format's differ")
        if self.engine == "prm:vllm" and fmt.family == "tag":
            raise StepScopeError(
                "vLLM's pooling runner cannot read chosen vocabulary logits of a causal LM: score tag-token PRMs "
                "on transformers"
            )
        check_range("batch size", self.batch_size, 1, 1024)
        require_ids(self.trajectory_ids, "trajectories to score")
        for trajectory_id in self.trajectory_ids:
            if store.get_trajectory(trajectory_id) is None:
                raise StepScopeError(f"trajectory {trajectory_id} does not exist")
        store.check_verifier_name(self.judge, "prm")

    def to_manifest(self, store: Store) -> dict:
        fmt = self.format()
        return {
            "prm": self.prm, "model": self.prm, "judge": self.judge, **self.common_manifest(),
            "prm_format": fmt.as_dict(), "format_name": self.format_name, "format_sha256": fmt.sha256,
            "name": self.name, "batch_size": self.batch_size, "trajectory_ids": list(self.trajectory_ids),
            "splitters": splitters_of(store, self.trajectory_ids),
        }  # fmt: skip

    @classmethod
    def from_manifest(cls, manifest: Mapping[str, Any]) -> "PrmScoreSpec":
        return cls(**known_fields(cls, manifest, trajectory_ids=tuple(manifest["trajectory_ids"])))

    def run(self, context: JobContext) -> bool:
        store, engine, fmt = context.store, context.engine, self.format()
        done = {t for t, _ in store.verdict_targets_of_job(context.job_id)}
        remaining = [t for t in self.trajectory_ids if t not in done]
        readout = readout_for(fmt, engine.tokenizer)
        targets = build_targets(store, engine, fmt, remaining)  # raises before anything is written
        fingerprint = engine.info.extra.get("fingerprint", "")
        done_before = len(store.verdict_targets_of_job(context.job_id))
        progress = Progress(planned=done_before + sum(len(t.step_ids) for t in targets), done=done_before)
        began = time.perf_counter()

        def store_batch(batch, scores) -> None:
            rows = verdict_rows(batch, scores, self.judge, self.format_name, fmt, fingerprint, context.job_id)
            store.add_verdicts(rows, fingerprint=fingerprint or None)  # rows say their kind (core.prm.verdict_rows)
            progress.done += len(rows)
            progress.tokens += sum(len(t.prm_input.token_ids) for t in batch)
            progress.calls += 1
            progress.seconds = time.perf_counter() - began
            context.report(progress)

        finished = score_targets(engine, targets, readout, batch_size=self.batch_size, on_batch=store_batch,
                                 should_stop=context.should_stop)  # fmt: skip
        return not finished
