"""Judge jobs: a judge model, or a trained probe verifier, gives verdicts on trajectories.

Verdicts are stored as they come, one batch of prompts per engine call, each batch committed
before the next. A rerun of the job skips the targets it already judged, so a killed job
resumes. The runner loads `model_to_load()`: the judge model, or the probe's base model.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping, Sequence

from core.engines.base import SamplingParams
from core.errors import StepScopeError
from core.jobs.spec import (
    MAX_K, MAX_NEW_TOKENS, JobContext, JobSpec, Progress, check_range, known_fields, require_ids, sampling_from,
    splitters_of,
)  # fmt: skip
from core.store import Store, content_key
from core.verdicts import (
    JUDGE_MODES,
    check_kind,
    judge_targets,
    load_judge_template,
    targets_for,
    template_from_manifest,
    yes_no_spellings,
)

TARGETS_PER_CALL = 16
# The job manifest's count of targets a trained verifier left with their cross-fitted or held-out
# verdict (issue 24: it never stores an in-sample score over one).
KEPT_HELD_OUT = "kept_held_out"


def judge_name(model: str, mode: str = "logprob", name: str | None = None) -> str:
    if name:
        return name
    return model if mode == "logprob" else f"{model}:generative"


def _check_trajectories(store: Store, trajectory_ids: Sequence[int]) -> None:
    require_ids(trajectory_ids, "trajectories to judge")
    for trajectory_id in trajectory_ids:
        if store.get_trajectory(trajectory_id) is None:
            raise StepScopeError(f"trajectory {trajectory_id} does not exist")


@dataclass(frozen=True, kw_only=True)
class JudgeSpec(JobSpec):
    """Model `judge` gives `kind` verdicts (step, outcome or critic) on the trajectories."""

    kind: ClassVar[str] = "judge"
    unit: ClassVar[str] = "verdicts"
    engine_role: ClassVar[str] = "verifier"

    judge: str  # the judge model: preset, directory or hub id
    verdict: str = "outcome"  # step | outcome | critic
    trajectory_ids: tuple[int, ...]
    mode: str = "logprob"  # or generative
    template: str | None = None  # a name under core/prompts or a .txt path; None: the kind's default
    chat: bool | None = None
    samples: int = 4  # generative: sampled verdicts per target
    max_new_tokens: int = 256
    temperature: float | None = None  # None: greedy for the critic, 0.7 for sampled verdicts
    seed: int = 0
    name: str | None = None  # stored with the verdicts; default the model (":generative" when sampled)
    targets_per_call: int = TARGETS_PER_CALL
    # The template as the job recorded it, so that a resumed job reads exactly the same prompt.
    recorded_template: Mapping[str, Any] | None = field(default=None, compare=False)

    def model_to_load(self) -> str:
        return self.judge

    def judge_template(self):
        if self.recorded_template is not None:
            return template_from_manifest(dict(self.recorded_template))
        return load_judge_template(self.verdict, self.template, self.mode)

    def sampling(self) -> SamplingParams | None:
        if not self.judge_template().generative:
            return None
        # The critic answers once, greedily unless a temperature is asked for (ProcessBench's
        # setup); sampled verdicts need a temperature to differ.
        temperature = self.temperature if self.temperature is not None else (0.0 if self.verdict == "critic" else 0.7)
        return SamplingParams(n=1 if self.verdict == "critic" else self.samples,
                              max_new_tokens=self.max_new_tokens, temperature=temperature, seed=self.seed)  # fmt: skip

    def validate(self, store: Store) -> None:
        if not self.judge.strip():
            raise StepScopeError("name a judge model")
        check_kind(self.verdict)
        if self.mode not in JUDGE_MODES:
            raise StepScopeError(f"judge mode is one of {', '.join(JUDGE_MODES)}, not {self.mode!r}")
        check_range("samples", self.samples, 1, MAX_K)
        check_range("max new tokens", self.max_new_tokens, 1, MAX_NEW_TOKENS)
        check_range("targets per call", self.targets_per_call, 1, 4096)
        self.judge_template()  # a missing template file is named now, not when the job runs
        _check_trajectories(store, self.trajectory_ids)
        store.check_verifier_name(self.to_manifest(store)["judge"], "judge")

    def to_manifest(self, store: Store) -> dict:
        template = self.judge_template()
        generative = template.generative
        sampling = self.sampling()
        return {
            "judge": judge_name(self.judge, "generative" if generative and self.verdict != "critic" else "logprob",
                                self.name),
            "model": self.judge, "policy": self.judge, **self.common_manifest(),
            "kind": self.verdict, "mode": "generative" if generative else "logprob", "chat": self.chat,
            "template": template.as_manifest(), "trajectory_ids": list(self.trajectory_ids),
            "sampling": sampling.as_manifest() if sampling else None, "targets_per_call": self.targets_per_call,
            "samples": self.samples, "max_new_tokens": self.max_new_tokens, "temperature": self.temperature,
            "seed": self.seed, "name": self.name, "splitters": splitters_of(store, self.trajectory_ids),
        }  # fmt: skip

    @classmethod
    def from_manifest(cls, manifest: Mapping[str, Any]) -> "JudgeSpec":
        template = manifest["template"]
        # Manifests written before specs held only "judge" (the stored name) and "model".
        return cls(**known_fields(
            cls, manifest, judge=manifest.get("model", manifest["judge"]), verdict=manifest["kind"],
            mode=template.get("mode", "logprob"), template=template["name"],
            trajectory_ids=tuple(manifest["trajectory_ids"]), recorded_template=template,
            name=manifest.get("name", manifest["judge"]),
        ))  # fmt: skip

    def run(self, context: JobContext) -> bool:
        return _run_reporting(context, self.verdict, lambda report: run_judge(
            context.store, context.engine, self.to_manifest(context.store), job_id=context.job_id,
            should_stop=context.should_stop, on_progress=report,
        ))  # fmt: skip


@dataclass(frozen=True, kw_only=True)
class ProbeJudgeSpec(JobSpec):
    """A trained probe verifier (core.probes) scores the trajectories or their steps."""

    kind: ClassVar[str] = "probe-judge"
    unit: ClassVar[str] = "verdicts"
    engine_role: ClassVar[str] = "verifier"

    verifier: str  # the probe's folder
    trajectory_ids: tuple[int, ...]

    def probe(self):
        from core.probes import load_probe

        try:
            return load_probe(self.verifier)
        except (OSError, KeyError, ValueError) as error:  # a folder removed or damaged since it was listed
            raise StepScopeError(f"cannot read the probe verifier {self.verifier}: {error}") from None

    def model_to_load(self) -> str:
        return self.probe().manifest["base"]

    def validate(self, store: Store) -> None:
        if self.engine != "transformers":
            raise StepScopeError("probe verifiers read hidden states: they run on the transformers engine")
        store.check_verifier_name(self.probe().judge, "probe")
        _check_trajectories(store, self.trajectory_ids)

    def to_manifest(self, store: Store) -> dict:
        probe = self.probe()
        return {
            "judge": probe.judge, "verifier": str(Path(self.verifier).resolve()), "verifier_sha256": probe.sha256,
            "policy": probe.manifest["base"], **self.common_manifest(), "kind": probe.manifest["kind"],
            "mode": "probe", "trajectory_ids": list(self.trajectory_ids),
            "splitters": splitters_of(store, self.trajectory_ids),
        }  # fmt: skip

    @classmethod
    def from_manifest(cls, manifest: Mapping[str, Any]) -> "ProbeJudgeSpec":
        return cls(**known_fields(cls, manifest, trajectory_ids=tuple(manifest["trajectory_ids"])))

    def run(self, context: JobContext) -> bool:
        manifest = self.to_manifest(context.store)
        recorded = context.store.get_job(context.job_id)["manifest"].get("verifier_sha256")
        if recorded and recorded != manifest["verifier_sha256"]:
            raise StepScopeError(f"probe {self.verifier} changed since the job was queued")
        return _run_reporting(context, manifest["kind"], lambda report: run_judge(
            context.store, context.engine, manifest, job_id=context.job_id, should_stop=context.should_stop,
            on_progress=report,
        ))  # fmt: skip


def _run_reporting(context: JobContext, verdict_kind: str, run: Callable) -> bool:
    """Run a judging loop, reporting progress that counts what earlier runs of the job did."""
    done_before = len(_done_targets(context.store, context.job_id, verdict_kind))

    def report(progress: Progress) -> None:
        context.report(replace(progress, planned=done_before + progress.planned, done=done_before + progress.done))

    return run(report).cancelled


def _done_targets(store: Store, job_id: int, kind: str) -> set:
    rows = store.verdict_targets_of_job(job_id)
    # A critic verdict points at the step it blames, so critic and outcome targets are trajectories.
    return {(t, s) if kind == "step" else (t, None) for t, s in rows}


def run_judge(
    store: Store,
    engine,
    manifest: dict,
    *,
    job_id: int | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    on_progress: Callable[[Progress], None] = lambda progress: None,
) -> Progress:
    """Judge every target of the manifest not yet judged by this job, batch by batch."""
    if manifest.get("mode") == "probe":
        return _run_probe_judge(store, engine, manifest, job_id, should_stop, on_progress)
    template = template_from_manifest(manifest["template"])
    targets = targets_for(store, manifest["trajectory_ids"], template, engine, manifest.get("chat"))
    if job_id is not None:
        done = _done_targets(store, job_id, template.kind)
        targets = [t for t in targets if (t.trajectory_id, t.step_id) not in done]
    spellings = None if template.generative else yes_no_spellings(engine)
    # The same name over another model, template or mode is another judge: the fingerprint says which.
    fingerprint = content_key("judge", manifest.get("model", manifest["judge"]), template.sha256,
                              manifest.get("mode"))[:16]  # fmt: skip
    sampling = None
    if manifest.get("sampling"):
        sampling = sampling_from(manifest["sampling"])
    progress = Progress(planned=len(targets))
    size = manifest.get("targets_per_call", TARGETS_PER_CALL)
    for call, start in enumerate(range(0, len(targets), size)):
        if should_stop():
            progress.cancelled = True
            break
        began = time.perf_counter()
        batch_sampling = sampling if sampling is None or sampling.seed is None else _reseeded(sampling, call)
        rows, tokens = judge_targets(
            store, engine, targets[start : start + size], template, manifest["judge"],
            spellings=spellings, sampling=batch_sampling, job_id=job_id,
        )  # fmt: skip
        store.add_verdicts(rows, verifier_kind="judge", fingerprint=fingerprint)
        progress.done += len(rows)
        progress.tokens += tokens
        progress.seconds += time.perf_counter() - began
        on_progress(progress)
    return progress


def _reseeded(sampling: SamplingParams, call: int) -> SamplingParams:
    return replace(sampling, seed=sampling.seed + call)


def _run_probe_judge(store, engine, manifest, job_id, should_stop, on_progress) -> Progress:
    from core.probes import held_out_examples, load_probe, probe_examples_for

    probe = load_probe(manifest["verifier"])
    if probe.sha256 != manifest.get("verifier_sha256", probe.sha256):
        raise StepScopeError(f"probe {manifest['verifier']} changed since the job was queued")
    examples = probe_examples_for(store, probe, manifest["trajectory_ids"])
    if job_id is not None:
        done = _done_targets(store, job_id, probe.manifest["kind"])
        keep = [(int(t), None if s == -1 else int(s)) not in done
                for t, s in zip(examples.trajectory_ids, examples.step_ids)]  # fmt: skip
        examples = type(examples)(*(a[keep] for a in (examples.trajectory_ids, examples.step_ids,
                                                       examples.groups, examples.labels)))  # fmt: skip
    # Targets the probe was trained on keep their cross-fitted verdicts (no in-sample score is
    # stored over them); the job's manifest says how many, for the CLI and the Jobs page.
    kept = held_out_examples(store, probe, examples)
    examples = type(examples)(*(a[~kept] for a in (examples.trajectory_ids, examples.step_ids,
                                                   examples.groups, examples.labels)))  # fmt: skip
    record_kept_held_out(store, job_id, int(kept.sum()))
    progress = Progress(planned=len(examples))
    began = time.perf_counter()
    rows = _score_probe(store, engine, probe, examples, job_id, should_stop)
    if rows is None:
        progress.cancelled = True
        return progress
    store.add_verdicts(rows, fingerprint=probe.sha256[:16])  # rows say their kind (core.probes._verdict)
    progress.done, progress.seconds = len(rows), time.perf_counter() - began
    on_progress(progress)
    return progress


def record_kept_held_out(store: Store, job_id: int | None, kept: int) -> None:
    """Record in the job's manifest how many of its targets kept their cross-fitted (or held-out)
    verdict instead of getting an in-sample one (a resumed job counts them again, the same)."""
    if job_id is not None:
        store.update_job(job_id, manifest={**store.get_job(job_id)["manifest"], KEPT_HELD_OUT: kept})


def _score_probe(store, engine, probe, examples, job_id, should_stop):
    from core.probes import score_with_probe

    if not len(examples):
        return []
    return score_with_probe(store, engine, probe, examples, job_id=job_id, should_stop=should_stop)
