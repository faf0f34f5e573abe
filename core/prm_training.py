"""Training a token-classification PRM from the store's step labels (SORM: a stepwise ORM trained
on the policy's own Monte Carlo labels), and consensus labels.

Labels per step (core.probes.step_examples): "mc-hard" (some rollout from the step reached the
gold answer), "mc-soft" (the fraction that did), "human" (ratings, -1 -> 0, 0 and +1 -> 1), or
"consensus" (Qwen's recipe: the MC hard label, kept only where a chosen judge or PRM's step
verdict agrees with it at 0.5; the kept fraction is reported).

The model: the base causal LM's backbone with a fresh two-class token-classification head
(AutoModelForTokenClassification), inputs laid out as TRL's PRM trainer does (core.prm, family
"token-classification", "pieces" tokenization; the question then "\n", each step then "\n"),
trained with transformers' Trainer on a cross-entropy against the (possibly soft) label at each
step's separator. Problems are split into train and held-out by a seeded shuffle, so no
problem's solutions are on both sides. Checkpoints go under the output folder; a rerun with the
same data resumes from the last one. The folder holds the model, its tokenizer,
`stepscope_prm.json` (the format, so `stepscope prm score --prm FOLDER` needs no options) and
`manifest.json` (base, labels, data hash, split, held-out AUROC).
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from core.errors import StepScopeError
from core.metrics import auroc, bootstrap
from core.prm import FAMILY_DEFAULTS, PrmFormat, build_input, check_length, replace_format
from core.probes import step_examples

PRM_LABELS = ("mc-hard", "mc-soft", "human", "consensus")
PRMS_FOLDER = "prms"
FORMAT_FILE = "stepscope_prm.json"
# What a trained PRM reads: TRL's layout, with the question on its own line.
TRAINED_FORMAT: PrmFormat = replace_format(FAMILY_DEFAULTS["token-classification"], question_join="\n")


def prms_dir(store) -> Path:
    return store.path.parent / PRMS_FOLDER


def check_labels(labels: str) -> None:
    if labels not in PRM_LABELS:
        raise StepScopeError(f"PRM training labels are one of {', '.join(PRM_LABELS)}, not {labels!r}")


@dataclass
class StepLabels:
    """Per trajectory: its problem, and (step id, label in [0, 1]) for the labelled steps."""

    by_trajectory: dict[int, list[tuple[int, float]]]
    problems: dict[int, int]
    kept_fraction: float | None = None  # consensus: of the steps with both labels, those that agree
    compared: int = 0


def consensus_labels(store, trajectory_ids: Sequence[int], judge: str, policy: str | None = None) -> StepLabels:
    """MC hard labels kept where `judge`'s step verdict (P(Yes) or PRM score >= 0.5) agrees."""
    hard = step_examples(store, trajectory_ids, "mc-hard", policy=policy)
    verdicts: dict[int, float] = {}
    for trajectory_id in dict.fromkeys(hard.trajectory_ids.tolist()):
        for row in store.verdicts(int(trajectory_id), judge=judge, kind="step"):
            if row["p_yes"] is not None:
                verdicts[row["step_id"]] = row["p_yes"]  # oldest first: the latest wins
    if not verdicts:
        raise StepScopeError(f"judge {judge!r} has no step verdicts on these trajectories: run it first")
    labels = StepLabels({}, {})
    compared = kept = 0
    for t, s, g, y in zip(hard.trajectory_ids, hard.step_ids, hard.groups, hard.labels):
        if int(s) not in verdicts:
            continue
        compared += 1
        if (verdicts[int(s)] >= 0.5) == bool(y):
            kept += 1
            labels.by_trajectory.setdefault(int(t), []).append((int(s), float(y)))
            labels.problems[int(t)] = int(g)
    labels.compared, labels.kept_fraction = compared, (kept / compared if compared else None)
    return labels


def step_labels(store, trajectory_ids: Sequence[int], labels: str, *, policy: str | None = None,
                annotator: str | None = None, judge: str | None = None) -> StepLabels:  # fmt: skip
    check_labels(labels)
    if labels == "consensus":
        if not judge:
            raise StepScopeError("consensus labels need a judge or PRM to agree with (--judge NAME)")
        return consensus_labels(store, trajectory_ids, judge, policy)
    examples = step_examples(store, trajectory_ids, labels, policy=policy, annotator=annotator)
    result = StepLabels({}, {})
    for t, s, g, y in zip(examples.trajectory_ids, examples.step_ids, examples.groups, examples.labels):
        result.by_trajectory.setdefault(int(t), []).append((int(s), float(y)))
        result.problems[int(t)] = int(g)
    return result


def split_problems(problems: Sequence[int], heldout_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(train, held-out) problem ids: a seeded shuffle, at least one problem on each side."""
    unique = sorted(set(problems))
    if len(unique) < 2:
        raise StepScopeError(f"need labelled steps from at least 2 problems to hold some out, not {len(unique)}")
    random.Random(seed).shuffle(unique)
    n_heldout = min(len(unique) - 1, max(1, round(heldout_fraction * len(unique))))
    return sorted(unique[n_heldout:]), sorted(unique[:n_heldout])


@dataclass
class Example:
    trajectory_id: int
    problem_id: int
    token_ids: list[int]
    labels: list[float]  # -100 except at each labelled step's separator
    step_ids: list[int]
    positions: list[int]
    targets: list[float]


def build_examples(store, tokenizer, labels: StepLabels, max_length: int, fmt: PrmFormat = TRAINED_FORMAT) -> list[Example]:
    examples = []
    for trajectory_id, labelled in sorted(labels.by_trajectory.items()):
        trajectory = store.get_trajectory(trajectory_id)
        steps = store.steps(trajectory_id)
        prm_input = build_input(fmt, tokenizer, trajectory["question"], [s["text"] for s in steps])
        check_length(prm_input, max_length, f"trajectory {trajectory_id}")
        position_of = {s["id"]: p for s, p in zip(steps, prm_input.positions)}
        row = [-100.0] * len(prm_input.token_ids)
        step_ids, positions, targets = [], [], []
        for step_id, label in labelled:
            if step_id in position_of:  # a label on another segmentation's step is not this input's
                row[position_of[step_id]] = label
                step_ids.append(step_id)
                positions.append(position_of[step_id])
                targets.append(label)
        if step_ids:
            examples.append(Example(trajectory_id, labels.problems[trajectory_id], list(prm_input.token_ids), row,
                                    step_ids, positions, targets))  # fmt: skip
    return examples


def data_hash(examples: Sequence[Example], base_fingerprint: str, labels: str) -> str:
    digest = hashlib.sha256(f"{base_fingerprint}|{labels}|{TRAINED_FORMAT.sha256}".encode())
    for e in examples:
        digest.update(json.dumps([e.trajectory_id, e.token_ids, e.labels]).encode())
    return digest.hexdigest()[:16]


@dataclass
class TrainedPrm:
    folder: Path
    manifest: dict


def train_prm(
    store, base_directory: str, base_name: str, base_fingerprint: str, tokenizer, labels: StepLabels, label_kind: str,
    output: Path, *, epochs: float = 3.0, learning_rate: float = 5e-5, batch_size: int = 4, heldout_fraction: float = 0.2,
    seed: int = 0, lora: bool = False, device: str = "cpu", max_length: int = 2048,
    should_stop: Callable[[], bool] = lambda: False, on_progress: Callable[[int, int], None] = lambda done, planned: None,
) -> TrainedPrm | None:  # fmt: skip
    """Fine-tune, evaluate on the held-out problems, save; None if stopped (a checkpoint is kept)."""
    import torch
    from transformers import AutoModelForTokenClassification

    examples = build_examples(store, tokenizer, labels, max_length)
    if not examples:
        raise StepScopeError(f"no {label_kind} step labels on these trajectories: estimate MC values (or label) first")
    train_problems, heldout_problems = split_problems([e.problem_id for e in examples], heldout_fraction, seed)
    heldout_set = set(heldout_problems)
    train = [e for e in examples if e.problem_id not in heldout_set]
    heldout = [e for e in examples if e.problem_id in heldout_set]
    digest = data_hash(examples, base_fingerprint, label_kind)
    output = Path(output)
    checkpoints = output / "checkpoints"
    previous = output / "manifest.json"
    if previous.is_file() and json.loads(previous.read_text()).get("data_hash") != digest:
        raise StepScopeError(f"{output} holds a PRM trained on other data: choose another --output")
    output.mkdir(parents=True, exist_ok=True)
    (output / "manifest.json").write_text(json.dumps({"data_hash": digest, "status": "training"}))

    torch.manual_seed(seed)
    model = AutoModelForTokenClassification.from_pretrained(base_directory, num_labels=2, dtype=torch.float32)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if lora:
        model = with_lora(model, "TOKEN_CLS")
    pad = model.config.pad_token_id

    def collate(batch):
        width = max(len(e["input_ids"]) for e in batch)
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        target = torch.full((len(batch), width), -100.0)
        for i, e in enumerate(batch):
            n = len(e["input_ids"])
            ids[i, :n], mask[i, :n], target[i, :n] = torch.tensor(e["input_ids"]), 1, torch.tensor(e["labels"])
        return {"input_ids": ids, "attention_mask": mask, "labels": target}

    dataset = [{"input_ids": e.token_ids, "labels": e.labels} for e in train]
    tuned = fine_tune(model, dataset, collate, checkpoints, epochs=epochs, learning_rate=learning_rate,
                      batch_size=batch_size, seed=seed, device=device, should_stop=should_stop,
                      on_progress=on_progress)  # fmt: skip
    if tuned is None:
        return None
    model, steps = tuned
    if lora:
        model = model.merge_and_unload()
    model.eval()
    metrics = evaluate(model, heldout, pad)
    model.save_pretrained(output)
    tokenizer.save_pretrained(output)
    (output / FORMAT_FILE).write_text(json.dumps(TRAINED_FORMAT.as_dict(), indent=1))
    manifest = {
        "status": "done", "base": base_name, "base_fingerprint": base_fingerprint, "labels": label_kind,
        "data_hash": digest, "format": TRAINED_FORMAT.as_dict(), "kept_fraction": labels.kept_fraction,
        "compared_steps": labels.compared, "split": {"seed": seed, "heldout_fraction": heldout_fraction,
        "train_problems": train_problems, "heldout_problems": heldout_problems,
        "train_trajectories": [e.trajectory_id for e in train], "heldout_trajectories": [e.trajectory_id for e in heldout]},
        "training": {"epochs": epochs, "learning_rate": learning_rate, "batch_size": batch_size, "lora": lora,
                     "steps": steps},
        "metrics": metrics,
    }  # fmt: skip
    (output / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return TrainedPrm(output, manifest)


def with_lora(model, task_type: str):
    """`model` with LoRA adapters (peft) on its attention and MLP, the new head trained in full."""
    try:
        from peft import LoraConfig, get_peft_model
    except ModuleNotFoundError:
        raise StepScopeError("LoRA needs peft: pip install peft") from None
    return get_peft_model(model, LoraConfig(task_type=task_type, r=8, lora_alpha=16, lora_dropout=0.0))


def fine_tune(
    model, dataset: list[dict], collate: Callable, checkpoints: Path, *, epochs: float, learning_rate: float,
    batch_size: int, seed: int, device: str, should_stop: Callable[[], bool] = lambda: False,
    on_progress: Callable[[int, int], None] = lambda done, planned: None,
):  # fmt: skip
    """Train a two-class model in place with transformers' Trainer; (model, optimiser steps), or
    None when stopped (a checkpoint is saved first).

    The loss is the cross-entropy against a label in [0, 1] wherever the collated `labels` are
    >= 0 (-100 elsewhere): one label per token for a token-classification PRM, one per sequence
    for an ORM; hard labels give the usual classification loss, soft ones (mc-soft) the soft
    one. A checkpoint is written every epoch under `checkpoints`, and a rerun resumes from the
    last one there.
    """
    import torch
    from transformers import Trainer, TrainerCallback, TrainingArguments

    class SoftLabelTrainer(Trainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            target = inputs.pop("labels")
            outputs = model(**inputs)
            log_probs = torch.log_softmax(outputs.logits.float(), dim=-1)
            keep = target >= 0
            y = target[keep]
            loss = -(y * log_probs[..., 1][keep] + (1 - y) * log_probs[..., 0][keep]).mean()
            return (loss, outputs) if return_outputs else loss

    class Report(TrainerCallback):
        stopped = False

        def on_step_end(self, args, state, control, **kwargs):
            on_progress(state.global_step, state.max_steps)
            if should_stop():
                control.should_save = True
                control.should_training_stop = True
                self.stopped = True

    report = Report()
    steps_per_epoch = math.ceil(len(dataset) / batch_size)
    arguments = TrainingArguments(
        output_dir=str(checkpoints), num_train_epochs=epochs, learning_rate=learning_rate,
        per_device_train_batch_size=batch_size, save_strategy="steps", save_steps=max(1, steps_per_epoch),
        save_total_limit=2, logging_strategy="no", report_to=[], seed=seed, use_cpu=device == "cpu",
        remove_unused_columns=False, dataloader_num_workers=0, disable_tqdm=True,
    )  # fmt: skip
    trainer = SoftLabelTrainer(model=model, args=arguments, train_dataset=dataset, data_collator=collate,
                               callbacks=[report])  # fmt: skip
    resume = any(checkpoints.glob("checkpoint-*")) if checkpoints.is_dir() else False
    trainer.train(resume_from_checkpoint=True if resume else None)
    if report.stopped:
        return None
    return trainer.model, trainer.state.global_step


def evaluate(model, heldout: Sequence[Example], pad: int) -> dict:
    """Held-out step AUROC against the labels thresholded at 0.5, with a cluster bootstrap over
    problems; the scores too, so a reader can recompute."""
    import torch

    scores, targets, groups = [], [], []
    with torch.inference_mode():
        for e in heldout:
            logits = model(input_ids=torch.tensor([e.token_ids])).logits[0].float()
            probabilities = torch.softmax(logits[e.positions], dim=-1)[:, 1].tolist()
            scores += probabilities
            targets += [t >= 0.5 for t in e.targets]
            groups += [e.problem_id] * len(e.positions)
    interval = bootstrap(lambda idx: auroc([targets[i] for i in idx], [scores[i] for i in idx]),
                         len(scores), groups=groups)  # fmt: skip
    return {"heldout_steps": len(scores), "heldout_positives": int(sum(targets)), "heldout_auroc": interval.as_dict()}
