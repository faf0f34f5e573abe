"""Outcome reward models (ORMs) fine-tuned on a policy's labelled solutions, as the seed trains them.

Cobbe et al. (2021) train a verifier on the policy's own samples, labelled by whether the final
answer is right, and rerank the policy's samples with it. Here the verifier is the base model's
backbone with a fresh two-class sequence-classification head (AutoModelForSequenceClassification:
the class probability at the last token, as Cobbe's verifier reads its prediction at the final
token; without their auxiliary language-modelling loss), fine-tuned on every weight but the
input embeddings (full fine-tuning) or through LoRA adapters (peft). The input embeddings stay
frozen: the head reads the last hidden state, and on a CPU the optimiser update of a large
vocabulary's embeddings (Gemma's 262k tokens: 168M of its 270M weights) costs more than the
rest of a step.

What it reads is what a probe ORM reads (core.probes.probe_text): by default the problem and
the solution as "Question: ...\nAnswer: ...". Training examples come from the problems of the
train split, evaluation from those of the test split (core.splits), so no problem has
solutions on both sides. The job stores the ORM's outcome verdicts on the test split's
solutions (judge "orm:<base>"), which Best-of-N reranks with; `score_trajectories` scores any
others later (its scores on the train split are in-sample, marked so: the pages prefer a held-out
verdict to them, and it never stores one over a held-out verdict of the same ORM).

A "random-init" base (`random-init` or `random-init:MODEL`) is MODEL's architecture and
tokenizer with random weights: the floor that shows what pretraining adds.

The artifact is a folder `verifiers/orm/<name>/` next to the database (core.verifier_folders;
folders under the old `orms/` are still listed): the model and its tokenizer, and
`manifest.json` (base, data hash, split, training settings, test metrics). A rerun on the same
data resumes from the last checkpoint in it (core.verifier_training).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from core.errors import StepScopeError
from core.policy import PolicyTemplate, load_template
from core.probes import PROBE_CONTEXTS, evaluate, probe_text
from core.splits import DEFAULT_TEST_FRACTION, split_trajectories
from core.store import content_key, now
from core.verifier_folders import verifier_folder, verifier_folders
from core.verifier_folders import read_manifest as read_folder_manifest
from core.verifier_training import TokenMeter, collate_for, data_hash, finish_training, fine_tune, parameter_total

ORM_KINDS = ("orm-finetune", "orm-probe")
VERIFIER_KIND = "orm"  # core.verifier_folders' kind, and each verdict's verifier_kind
VERIFIER_TYPE = "orm-finetune"
RANDOM_INIT = "random-init"
# The architecture of a bare "random-init": the embedded default's.
RANDOM_INIT_ARCHITECTURE = "smollm2-135m"
SCORE_BATCH = 16


def check_kind(kind: str) -> None:
    if kind not in ORM_KINDS:
        raise StepScopeError(f"verifier kind is one of {', '.join(ORM_KINDS)}, not {kind!r}")


def orm_judge_name(base: str) -> str:
    return f"orm:{base}"


def random_init_architecture(base: str) -> str | None:
    """The model whose architecture a random-init base takes, or None for a pretrained base."""
    if base == RANDOM_INIT:
        return RANDOM_INIT_ARCHITECTURE
    if base.startswith(RANDOM_INIT + ":"):
        architecture = base.split(":", 1)[1].strip()
        if not architecture:
            raise StepScopeError("random-init:MODEL names the model whose architecture to take, e.g. random-init:smollm2-135m")
        return architecture
    return None


def canonical_base(base: str) -> str:
    """`random-init` spelled with its architecture, so that its judge name says which it is."""
    architecture = random_init_architecture(base)
    return f"{RANDOM_INIT}:{architecture}" if architecture else base


def model_to_load(base: str) -> str:
    """The model whose weights (pretrained base) or config and tokenizer (random-init) are read."""
    return random_init_architecture(base) or base


def default_output(store, base: str) -> Path:
    return verifier_folder(store, VERIFIER_KIND, f"orm-{Path(base).name if Path(base).is_dir() else base}")


# --- examples -----------------------------------------------------------------------------------


@dataclass
class OrmExample:
    trajectory_id: int
    problem_id: int
    token_ids: list[int]
    label: float  # 1 correct, 0 wrong, NaN ungraded


def build_examples(store, tokenizer, trajectory_ids: Sequence[int], *, context: str = "question",
                   template: PolicyTemplate | None = None, max_length: int = 2048) -> list[OrmExample]:  # fmt: skip
    """One example per trajectory: the text a probe ORM would read, tokenised, and its grade."""
    if context not in PROBE_CONTEXTS:
        raise StepScopeError(f"the ORM's context is one of {', '.join(PROBE_CONTEXTS)}, not {context!r}")
    examples = []
    for trajectory_id in trajectory_ids:
        trajectory = store.get_trajectory(int(trajectory_id))
        if trajectory is None:
            raise StepScopeError(f"trajectory {trajectory_id} does not exist")
        text, _ = probe_text(trajectory, context, template)
        token_ids = tokenizer(text)["input_ids"]
        if len(token_ids) > max_length:
            raise StepScopeError(
                f"trajectory {trajectory_id} is {len(token_ids)} tokens, more than the base reads ({max_length})"
            )
        correct = trajectory.get("correct")
        examples.append(OrmExample(int(trajectory_id), trajectory["problem_id"], token_ids,
                                   np.nan if correct is None else float(correct)))  # fmt: skip
    return examples


def orm_data_hash(train: Sequence[OrmExample], test: Sequence[OrmExample], base_fingerprint: str, context: str) -> str:
    return data_hash(f"orm|{base_fingerprint}|{context}", (
        [side, e.trajectory_id, e.token_ids, None if np.isnan(e.label) else e.label]
        for side, examples in (("train", train), ("test", test)) for e in examples
    ))  # fmt: skip


# --- the model ----------------------------------------------------------------------------------


def predict(model, examples: Sequence[OrmExample], *, batch_size: int = SCORE_BATCH,
            should_stop: Callable[[], bool] = lambda: False, meter: TokenMeter | None = None) -> np.ndarray | None:  # fmt: skip
    """P(correct) per example, in order; None if stopped. Batches of similar lengths (less padding);
    `meter` hears each batch's tokens (padding not counted)."""
    import torch

    meter = meter or TokenMeter()
    parameters = parameter_total(model)
    collate = collate_for(model.config.pad_token_id)
    order = sorted(range(len(examples)), key=lambda i: len(examples[i].token_ids))
    scores = np.full(len(examples), np.nan)
    device = next(model.parameters()).device
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            if should_stop():
                return None
            chunk = order[start : start + batch_size]
            started = time.perf_counter()
            batch = collate([{"input_ids": examples[i].token_ids} for i in chunk])
            logits = model(**{k: v.to(device) for k, v in batch.items()}).logits.float()
            scores[chunk] = torch.softmax(logits, dim=-1)[:, 1].cpu().numpy()
            meter.scored(int(batch["attention_mask"].sum()), parameters, time.perf_counter() - started)
    return scores


# --- training -----------------------------------------------------------------------------------


@dataclass
class TrainedOrm:
    folder: Path
    manifest: dict
    verdicts: list[dict]  # outcome verdicts on the test split (stored when given a store)
    test_scores: dict[int, float]  # trajectory id -> P(correct)


def train_orm(
    store, base: str, base_directory: str, base_fingerprint: str, tokenizer, trajectory_ids: Sequence[int],
    output: Path, *, context: str = "question", template: PolicyTemplate | None = None, epochs: float = 2.0,
    learning_rate: float = 2e-5, batch_size: int = 8, test_fraction: float = DEFAULT_TEST_FRACTION, seed: int = 0,
    lora: bool = False, device: str = "cpu", max_length: int = 2048, job_id: int | None = None,
    store_verdicts: bool = True, should_stop: Callable[[], bool] = lambda: False,
    on_progress: Callable[[int, int], None] = lambda done, planned: None, meter: TokenMeter | None = None,
) -> TrainedOrm | None:  # fmt: skip
    """Split by problem, fine-tune on the train split, score the test split, save the folder, store
    the test verdicts; None if stopped (a checkpoint is kept and a rerun resumes from it)."""
    base = canonical_base(base)
    architecture = random_init_architecture(base)
    template = template or load_template()
    split = split_trajectories(store, trajectory_ids, test_fraction)
    train_all = build_examples(store, tokenizer, split.train, context=context, template=template, max_length=max_length)
    test = build_examples(store, tokenizer, split.test, context=context, template=template, max_length=max_length)
    train = [e for e in train_all if not np.isnan(e.label)]
    positives = sum(e.label >= 0.5 for e in train)
    if positives == 0 or positives == len(train):
        raise StepScopeError(
            f"the train split has {len(train)} graded solutions, {positives} of them correct: an ORM needs "
            f"right and wrong solutions there ({len(split.problems['train'])} train problems of "
            f"{len(split.problems['train']) + len(split.problems['test'])})"
        )
    if not test:
        raise StepScopeError(
            f"no solutions in the test split ({len(split.problems['train'])} problems, all in train): an ORM is "
            "evaluated on problems it never saw; select more problems, or raise --test-fraction"
        )
    fingerprint = f"random-init(seed={seed}):{base_fingerprint}" if architecture else base_fingerprint
    digest = orm_data_hash(train, test, fingerprint, context)
    output = Path(output)
    # The input embeddings stay frozen: see the module's docstring.
    dataset = [{"input_ids": e.token_ids, "labels": e.label} for e in train]
    tuned = fine_tune("sequence", base_directory, tokenizer, dataset, output, digest=digest, what="an ORM",
                      random_init=architecture is not None, freeze_embeddings=True, lora=lora, epochs=epochs,
                      learning_rate=learning_rate, batch_size=batch_size, seed=seed, device=device,
                      should_stop=should_stop, on_progress=on_progress, meter=meter)  # fmt: skip
    if tuned is None:
        return None
    model, steps = tuned
    scores = predict(model, test, should_stop=should_stop, meter=meter)
    if scores is None:
        return None
    graded = np.array([not np.isnan(e.label) for e in test])
    labels = np.array([e.label for e in test])
    groups = np.array([e.problem_id for e in test])
    metrics = evaluate(scores[graded], labels[graded], groups[graded], seed=seed) if graded.sum() else None
    judge = orm_judge_name(base)
    manifest = {
        "status": "done", "verifier": VERIFIER_TYPE, "judge": judge, "kind": "outcome", "base": base,
        "base_fingerprint": fingerprint, "random_init": architecture is not None, "architecture": architecture,
        "context": context, "policy_template": {"name": template.name, "sha256": template.sha256},
        "data_hash": digest, "fingerprint": content_key("orm", digest, epochs, learning_rate, batch_size, seed, lora)[:16],
        "split": split.as_dict(),
        "data": {"train_examples": len(train), "train_positives": int(positives),
                 "train_ungraded_left_out": len(train_all) - len(train), "test_examples": len(test),
                 "test_graded": int(graded.sum()), "db": str(store.path)},
        "training": {"epochs": epochs, "learning_rate": learning_rate, "batch_size": batch_size, "lora": lora,
                     "frozen": ["input embeddings"], "steps": steps, "seed": seed, "device": device},
        "metrics": {"test": metrics}, "created_at": now(), "job_id": job_id,
    }  # fmt: skip
    finish_training(output, model, tokenizer, manifest)
    verdicts = [_verdict(output, manifest, e.trajectory_id, float(p), "test", False, job_id) for e, p in zip(test, scores)]
    if store_verdicts:
        store.add_verdicts(verdicts)
    return TrainedOrm(output, manifest, verdicts, {e.trajectory_id: float(p) for e, p in zip(test, scores)})


def _verdict(folder: Path, manifest: dict, trajectory_id: int, p: float, split: str, in_sample: bool,
             job_id: int | None) -> dict:  # fmt: skip
    return {
        "judge": manifest["judge"], "verifier_kind": VERIFIER_KIND, "kind": "outcome", "trajectory_id": trajectory_id,
        "step_id": None, "p_yes": p, "mass": None,
        "raw": json.dumps({"artifact": folder.name, "split": split, "in_sample": in_sample}),
        "template": folder.name, "template_hash": manifest["fingerprint"], "job_id": job_id, "in_sample": in_sample,
    }  # fmt: skip


# --- a trained ORM, later ------------------------------------------------------------------------


def read_manifest(folder: str | Path) -> dict:
    """The manifest of a finished fine-tuned ORM folder, or a StepScopeError saying why not."""
    manifest = read_folder_manifest(folder)
    if manifest.get("verifier") != VERIFIER_TYPE:
        raise StepScopeError(f"{folder} is not a fine-tuned ORM (its manifest says {manifest.get('verifier') or manifest.get('status')!r})")
    return manifest


def is_orm_folder(folder: str | Path) -> bool:
    try:
        read_manifest(folder)
    except StepScopeError:
        return False
    return True


def list_orms(store) -> list[dict]:
    """The finished fine-tuned ORMs next to this database, with their folder."""
    return [{"folder": str(folder), **read_manifest(folder)}
            for folder in verifier_folders(store, VERIFIER_KIND) if is_orm_folder(folder)]  # fmt: skip


def score_trajectories(
    store, folder: str | Path, trajectory_ids: Sequence[int], *, device: str = "cpu", job_id: int | None = None,
    should_stop: Callable[[], bool] = lambda: False, on_progress: Callable[[int, int], None] = lambda done, planned: None,
    meter: TokenMeter | None = None,
) -> tuple[int, int] | None:  # fmt: skip
    """Store the ORM's outcome verdicts on the trajectories: those it trained on are in-sample
    (marked `in_sample`), and one that already has a held-out verdict of this ORM keeps it (none
    stored over it); with a job id, those this job already scored are skipped, so a killed job
    resumes. (verdicts stored, trajectories that kept their held-out verdict), None if stopped."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    folder = Path(folder)
    manifest = read_manifest(folder)
    template = load_template(manifest["policy_template"]["name"])
    done = {t for t, _ in store.verdict_targets_of_job(job_id)} if job_id is not None else set()
    todo = [t for t in dict.fromkeys(int(t) for t in trajectory_ids) if t not in done]
    trained = set(manifest["split"]["train_trajectories"])
    kept = store.held_out_targets(manifest["judge"], "outcome", manifest["fingerprint"],
                                  [(t, None) for t in todo if t in trained])  # fmt: skip
    todo = [t for t in todo if (t, None) not in kept]
    if not todo:
        return 0, len(kept)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForSequenceClassification.from_pretrained(folder, dtype=torch.float32).to(device).eval()
    split_of = {t: "train" for t in trained} | {t: "test" for t in manifest["split"]["test_trajectories"]}
    stored = 0
    max_length = getattr(model.config, "max_position_embeddings", 2048)
    for start in range(0, len(todo), SCORE_BATCH * 4):
        chunk = todo[start : start + SCORE_BATCH * 4]
        examples = build_examples(store, tokenizer, chunk, context=manifest["context"], template=template,
                                  max_length=max_length)  # fmt: skip
        scores = predict(model, examples, should_stop=should_stop, meter=meter)
        if scores is None:
            return None
        stored += store.add_verdicts([
            _verdict(folder, manifest, e.trajectory_id, float(p), split_of.get(e.trajectory_id, "other"),
                     e.trajectory_id in trained, job_id)
            for e, p in zip(examples, scores)
        ])  # fmt: skip
        on_progress(min(start + len(chunk), len(todo)), len(todo))
    return stored, len(kept)
