"""Judge and probe-training jobs: the same job pattern as generation and estimation.

- kind "judge": a model (or a probe verifier) gives verdicts on trajectories and stores them as
  it goes, one batch of prompts per engine call, each batch committed before the next. A rerun
  of the job skips the targets it already judged, so a killed job resumes.
- kind "train-verifier": hidden-state features from a base model, grouped cross-fitting, the
  artifact under verifiers/ next to the database, and the cross-fitted verdicts.

`run_job` (core/jobs.py) loads the engine named by the manifest's "engine" and "policy" keys;
for these jobs "policy" is the model to load (the judge, or the probe's base model), and
"judge" / "base" say what it is.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from core.engines.base import SamplingParams
from core.errors import StepScopeError
from core.store import Store, now
from core.verdicts import (
    JUDGE_MODES,
    judge_targets,
    load_judge_template,
    targets_for,
    template_from_manifest,
    yes_no_spellings,
)

TARGETS_PER_CALL = 16


@dataclass
class JudgeProgress:
    planned: int
    done: int = 0
    tokens: int = 0
    seconds: float = 0.0
    cancelled: bool = False

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0


def _code_version() -> str:
    from core.jobs.runner import code_version

    return code_version()


def judge_name(model: str, mode: str = "logprob", name: str | None = None) -> str:
    if name:
        return name
    return model if mode == "logprob" else f"{model}:generative"


def create_judge_job(
    store: Store,
    *,
    judge: str,
    kind: str,
    trajectory_ids: Sequence[int],
    mode: str = "logprob",
    template: str | None = None,
    chat: bool | None = None,
    samples: int = 4,
    max_new_tokens: int = 256,
    temperature: float | None = None,
    seed: int = 0,
    engine: str = "transformers",
    engine_options: dict | None = None,
    name: str | None = None,
    targets_per_call: int = TARGETS_PER_CALL,
) -> int:
    """Queue a job in which model `judge` gives `kind` verdicts on the trajectories."""
    if not trajectory_ids:
        raise StepScopeError("no trajectories to judge")
    if mode not in JUDGE_MODES:
        raise StepScopeError(f"judge mode is one of {', '.join(JUDGE_MODES)}, not {mode!r}")
    judge_template = load_judge_template(kind, template, mode)
    generative = judge_template.generative
    # The critic answers once, greedily unless a temperature is asked for (ProcessBench's
    # setup); sampled verdicts need a temperature to differ.
    if temperature is None:
        temperature = 0.0 if kind == "critic" else 0.7
    sampling = SamplingParams(n=1 if kind == "critic" else samples, max_new_tokens=max_new_tokens,
                              temperature=temperature, seed=seed)  # fmt: skip
    manifest = {
        "judge": judge_name(judge, "generative" if generative and kind != "critic" else "logprob", name),
        "model": judge, "policy": judge, "engine": engine, "engine_options": engine_options or {},
        "kind": kind, "mode": "generative" if generative else "logprob", "chat": chat,
        "template": judge_template.as_manifest(), "trajectory_ids": list(trajectory_ids),
        "sampling": sampling.as_manifest() if generative else None,
        "targets_per_call": targets_per_call, "code_version": _code_version(),
    }  # fmt: skip
    return store.create_job("judge", manifest, planned=0)


def create_probe_judge_job(store: Store, *, verifier: str | Path, trajectory_ids: Sequence[int],
                           engine_options: dict | None = None) -> int:  # fmt: skip
    """Queue a job in which a trained probe verifier scores trajectories (or their steps)."""
    from core.probes import load_probe

    if not trajectory_ids:
        raise StepScopeError("no trajectories to judge")
    probe = load_probe(verifier)
    manifest = {
        "judge": probe.judge, "verifier": str(Path(verifier).resolve()), "verifier_sha256": probe.sha256,
        "policy": probe.manifest["base"], "engine": "transformers", "engine_options": engine_options or {},
        "kind": probe.manifest["kind"], "mode": "probe", "trajectory_ids": list(trajectory_ids),
        "code_version": _code_version(),
    }  # fmt: skip
    return store.create_job("judge", manifest, planned=0)


def _done_targets(store: Store, job_id: int, kind: str) -> set:
    rows = store.db.execute("SELECT trajectory_id, step_id FROM verdicts WHERE job_id = ?", [job_id]).fetchall()
    # A critic verdict points at the step it blames, so critic and outcome targets are trajectories.
    return {(t, s) if kind == "step" else (t, None) for t, s in rows}


def run_judge(
    store: Store,
    engine,
    manifest: dict,
    *,
    job_id: int | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    on_progress: Callable[[JudgeProgress], None] = lambda progress: None,
) -> JudgeProgress:
    """Judge every target of the manifest not yet judged by this job, batch by batch."""
    if manifest.get("mode") == "probe":
        return _run_probe_judge(store, engine, manifest, job_id, should_stop, on_progress)
    template = template_from_manifest(manifest["template"])
    targets = targets_for(store, manifest["trajectory_ids"], template, engine, manifest.get("chat"))
    if job_id is not None:
        done = _done_targets(store, job_id, template.kind)
        targets = [t for t in targets if (t.trajectory_id, t.step_id) not in done]
    spellings = None if template.generative else yes_no_spellings(engine)
    sampling = None
    if manifest.get("sampling"):
        sampling = SamplingParams(**{**manifest["sampling"], "stop": tuple(manifest["sampling"]["stop"])})
    progress = JudgeProgress(planned=len(targets))
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
        store.add_verdicts(rows)
        progress.done += len(rows)
        progress.tokens += tokens
        progress.seconds += time.perf_counter() - began
        on_progress(progress)
    return progress


def _reseeded(sampling: SamplingParams, call: int) -> SamplingParams:
    from dataclasses import replace

    return replace(sampling, seed=sampling.seed + call)


def _run_probe_judge(store, engine, manifest, job_id, should_stop, on_progress) -> JudgeProgress:
    from core.probes import load_probe, probe_examples_for

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
    progress = JudgeProgress(planned=len(examples))
    began = time.perf_counter()
    rows = _score_probe(store, engine, probe, examples, job_id, should_stop)
    if rows is None:
        progress.cancelled = True
        return progress
    store.add_verdicts(rows)
    progress.done, progress.seconds = len(rows), time.perf_counter() - began
    on_progress(progress)
    return progress


def _score_probe(store, engine, probe, examples, job_id, should_stop):
    from core.probes import score_with_probe

    if not len(examples):
        return []
    return score_with_probe(store, engine, probe, examples, job_id=job_id, should_stop=should_stop)


# --- probe training ---------------------------------------------------------------------------


def create_train_verifier_job(
    store: Store,
    *,
    base: str,
    labels: str,
    trajectory_ids: Sequence[int],
    layer: int = -1,
    context: str = "question",
    folds: int = 5,
    seed: int = 0,
    label_policy: str | None = None,
    annotator: str | None = None,
    engine_options: dict | None = None,
) -> int:
    """Queue a job that trains a probe verifier on `base`'s hidden states."""
    from core.policy import load_template
    from core.probes import check_labels

    check_labels(labels)
    if not trajectory_ids:
        raise StepScopeError("no trajectories to train on")
    template = load_template()
    manifest = {
        "base": base, "policy": base, "engine": "transformers", "engine_options": engine_options or {},
        "labels": labels, "layer": layer, "context": context, "folds": folds, "seed": seed, "label_policy": label_policy,
        "annotator": annotator, "trajectory_ids": list(trajectory_ids),
        "policy_template": {"name": template.name, "sha256": template.sha256},
        "code_version": _code_version(),
    }  # fmt: skip
    return store.create_job("train-verifier", manifest, planned=0)


def _judge_runner(store: Store, job: dict, engine, should_stop, on_progress) -> bool:
    """Returns whether the job was cancelled."""
    job_id = job["id"]
    done_before = len(_done_targets(store, job_id, job["manifest"]["kind"]))

    def report(progress: JudgeProgress) -> None:
        store.update_job(job_id, planned=done_before + progress.planned, done=done_before + progress.done,
                         tokens=progress.tokens, heartbeat_at=now())  # fmt: skip
        on_progress(progress)

    return run_judge(store, engine, job["manifest"], job_id=job_id, should_stop=should_stop,
                     on_progress=report).cancelled  # fmt: skip


def _train_runner(store: Store, job: dict, engine, should_stop, on_progress) -> bool:
    from core.policy import load_template
    from core.probes import train_probe

    manifest, job_id = job["manifest"], job["id"]
    progress = JudgeProgress(planned=0)
    began = time.perf_counter()

    def report(done: int, planned: int) -> None:
        progress.done, progress.planned, progress.seconds = done, planned, time.perf_counter() - began
        store.update_job(job_id, planned=planned, done=done, heartbeat_at=now())
        on_progress(progress)

    trained = train_probe(
        store, engine, manifest["base"], manifest["labels"], manifest["trajectory_ids"],
        layer=manifest["layer"], context=manifest.get("context", "question"), folds=manifest["folds"], seed=manifest["seed"],
        policy=manifest.get("label_policy"), annotator=manifest.get("annotator"),
        template=load_template(manifest["policy_template"]["name"]), job_id=job_id,
        should_stop=should_stop, on_progress=report,
    )  # fmt: skip
    if trained is None:
        return True
    store.update_job(job_id, manifest={**store.get_job(job_id)["manifest"], "artifact": str(trained.probe.folder),
                                       "metrics": trained.probe.manifest["metrics"]})  # fmt: skip
    return False


RUNNERS = {"judge": _judge_runner, "train-verifier": _train_runner}
