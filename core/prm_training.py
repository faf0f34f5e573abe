"""Training a token-classification PRM from the store's step labels (SORM: a stepwise ORM trained
on the policy's own Monte Carlo labels), and MC-agreement labels.

Labels per step: "mc-hard" (some rollout from the step reached the gold answer), "mc-soft" (the
fraction that did), "human" (ratings: -1 -> 0; 0 (neutral) and +1 -> 1, as exports read them;
several annotators: the share who say right, core.probes.step_examples), or "mc-agree" (Qwen's
recipe: the MC hard label, kept only where a chosen judge or PRM's step verdict, read as the
label source `judge:NAME` of core.formats.labels, agrees with it; the kept fraction is reported).
MC labels carry their provenance (core.formats.labels.mc_labels): besides the sampled steps, the
steps the first-error search or the graded outcome implies are taken unless `sampled_only`, and
the manifest counts each kind. A label set of one class is refused before anything is written (a
PRM trained on negatives only learns nothing and its AUROC is undefined), and a held-out set too
small for its bootstrap interval is reported in the manifest's `heldout_warning`.

The model: the base causal LM's backbone with a fresh two-class token-classification head
(core.verifier_training), inputs laid out as TRL's PRM trainer does (core.prm, family
"token-classification", "pieces" tokenization; the question then "\n", each step then "\n"),
trained on a cross-entropy against the (possibly soft) label at each step's separator.
Problems are split into train and held-out by core.splits (the test side is held out), so no
problem's solutions are on both sides. The folder (default `verifiers/prm/<name>/` next to the
database) holds the model, its tokenizer, `stepscope_prm.json` (the format, so
`stepscope prm score --prm FOLDER` needs no options) and `manifest.json` (base, labels, data
hash, split, held-out AUROC); a rerun with the same data resumes from its last checkpoint.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from core.errors import StepScopeError
from core.formats.labels import LabelSource, ProvenanceTally, mc_labels, page_labels, parse_label_source
from core.metrics import auroc, bootstrap
from core.prm import FAMILY_DEFAULTS, PrmFormat, build_input, check_length, replace_format
from core.probes import step_examples
from core.splits import DEFAULT_TEST_FRACTION, split_trajectories
# OneClassLabels and check_two_classes are also what train-prm's callers import from here.
from core.verifier_training import (
    IGNORED, OneClassLabels, TokenMeter, check_two_classes, data_hash, finish_training, fine_tune, parameter_total,
    small_evaluation_warning,
)  # fmt: skip

MC_AGREE = "mc-agree"
PRM_LABELS = ("mc-hard", "mc-soft", "human", MC_AGREE)
VERIFIER_KIND = "prm"  # core.verifier_folders' kind of a trained PRM's folder
FORMAT_FILE = "stepscope_prm.json"
# What a trained PRM reads: TRL's layout, with the question on its own line.
TRAINED_FORMAT: PrmFormat = replace_format(FAMILY_DEFAULTS["token-classification"], question_join="\n")


def check_labels(labels: str) -> None:
    if labels == "consensus":  # its meaning before "consensus" came to name annotators who agree
        raise StepScopeError("PRM training's 'consensus' labels are now called 'mc-agree' (MC hard labels kept "
                             "where --judge agrees); 'consensus' names annotators who agree")
    # `human:NAME` is the label grammar's spelling (core.formats.labels) of --labels human --annotator NAME.
    if labels not in PRM_LABELS and not (labels.startswith("human:") and labels[len("human:"):].strip()):
        raise StepScopeError(f"PRM training labels are one of {', '.join(PRM_LABELS)} or human:ANNOTATOR, "
                             f"not {labels!r}")  # fmt: skip


def check_agreeing_verifier(judge: str | None) -> None:
    if not judge:
        raise StepScopeError("mc-agree labels need a judge or PRM to agree with (--judge NAME)")


@dataclass
class StepLabels:
    """Per trajectory: its problem, and (step id, label in [0, 1]) for the labelled steps."""

    by_trajectory: dict[int, list[tuple[int, float]]]
    problems: dict[int, int]
    kept_fraction: float | None = None  # mc-agree: of the steps with both labels, those that agree
    compared: int = 0
    provenance: dict | None = None  # MC labels: ProvenanceTally.as_dict() of the labels kept

    def targets(self) -> list[float]:
        return [label for labelled in self.by_trajectory.values() for _, label in labelled]


def _current_steps(store, trajectory_ids: Sequence[int]) -> tuple[dict[int, int], list[dict]]:
    """(trajectory id -> problem id, the current steps of every trajectory in order), set-wise."""
    problems = store.trajectory_problem_ids(trajectory_ids)
    missing = [t for t in trajectory_ids if t not in problems]
    if missing:
        raise StepScopeError(f"trajectory {missing[0]} does not exist")
    steps = store.current_steps(list(dict.fromkeys(trajectory_ids)))
    return problems, [step for t in dict.fromkeys(trajectory_ids) for step in steps[t]]


def mc_step_labels(store, trajectory_ids: Sequence[int], labels: str, *, policy: str | None = None,
                   sampled_only: bool = False, keep=None) -> StepLabels:  # fmt: skip
    """MC labels (mc-hard: 1/0; mc-soft: the fraction) of the trajectories' current steps with
    their provenance; `keep(step_ids, hard_labels)` -> a boolean mask narrows them (mc-agree)."""
    problems, steps = _current_steps(store, trajectory_ids)
    source = LabelSource(labels, threshold=0.5 if labels == "mc-soft" else None, sampled_only=sampled_only)
    found = mc_labels(store, [s["id"] for s in steps], source, policy=policy)
    chosen = ~np.isnan(found.values)
    if keep is not None:
        chosen &= keep([s["id"] for s in steps], found.labels)
    tally = ProvenanceTally()
    tally.add(found.provenance[chosen], found.rule[chosen])
    result = StepLabels({}, {}, provenance=tally.as_dict())
    for step, value in zip((s for s, c in zip(steps, chosen.tolist()) if c), found.values[chosen].tolist()):
        result.by_trajectory.setdefault(step["trajectory_id"], []).append((step["id"], float(value)))
        result.problems[step["trajectory_id"]] = problems[step["trajectory_id"]]
    return result


def consensus_labels(store, trajectory_ids: Sequence[int], judge: str, policy: str | None = None,
                     sampled_only: bool = False) -> StepLabels:  # fmt: skip
    """MC hard labels kept where `judge`'s latest step verdict (P(Yes) or PRM score >= 0.5) agrees."""
    source = parse_label_source(f"judge:{judge}")
    counted = {"compared": 0, "kept": 0}

    def agreeing(step_ids: list[int], hard: np.ndarray) -> np.ndarray:
        verdicts = page_labels(store, [{"id": i} for i in step_ids], source)[0]
        judged = np.array([v is not None for v in verdicts]) & ~np.isnan(hard)
        if not judged.any():
            raise StepScopeError(f"judge {judge!r} has no step verdicts on these trajectories: run it first")
        said = np.array([bool(v) for v in verdicts])
        agree = judged & (said == (hard == 1.0))
        counted.update(compared=int(judged.sum()), kept=int(agree.sum()))
        return agree

    labels = mc_step_labels(store, trajectory_ids, "mc-hard", policy=policy, sampled_only=sampled_only, keep=agreeing)
    labels.compared = counted["compared"]
    labels.kept_fraction = counted["kept"] / counted["compared"] if counted["compared"] else None
    return labels


def step_labels(store, trajectory_ids: Sequence[int], labels: str, *, policy: str | None = None,
                annotator: str | None = None, judge: str | None = None,
                sampled_only: bool = False) -> StepLabels:  # fmt: skip
    check_labels(labels)
    if labels == MC_AGREE:
        check_agreeing_verifier(judge)
        return consensus_labels(store, trajectory_ids, judge, policy, sampled_only)
    if labels in ("mc-hard", "mc-soft"):
        return mc_step_labels(store, trajectory_ids, labels, policy=policy, sampled_only=sampled_only)
    if labels.startswith("human:"):
        named = labels[len("human:"):].strip()
        if annotator is not None and annotator != named:
            raise StepScopeError(f"--labels {labels} and --annotator {annotator} name two annotators: give one")
        labels, annotator = "human", named
    examples = step_examples(store, trajectory_ids, labels, policy=policy, annotator=annotator)
    result = StepLabels({}, {})
    for t, s, g, y in zip(examples.trajectory_ids, examples.step_ids, examples.groups, examples.labels):
        result.by_trajectory.setdefault(int(t), []).append((int(s), float(y)))
        result.problems[int(t)] = int(g)
    return result


def heldout_warning(metrics: dict) -> str | None:
    """Why the held-out step AUROC's interval should not be trusted (too few problems, or too few
    steps of a class: core.verifier_training.small_evaluation_warning), or None."""
    return small_evaluation_warning(metrics.get("heldout_problems", 0), metrics.get("heldout_steps", 0),
                                    metrics.get("heldout_positives", 0), "held-out set")  # fmt: skip


@dataclass
class Example:
    trajectory_id: int
    problem_id: int
    token_ids: list[int]
    labels: list[float]  # IGNORED except at each labelled step's separator
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
        row = [float(IGNORED)] * len(prm_input.token_ids)
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


def prm_data_hash(train: Sequence[Example], heldout: Sequence[Example], base_fingerprint: str, labels: str) -> str:
    return data_hash(f"prm|{base_fingerprint}|{labels}|{TRAINED_FORMAT.sha256}", (
        [side, e.trajectory_id, e.token_ids, e.labels] for side, examples in (("train", train), ("test", heldout))
        for e in examples
    ))  # fmt: skip


@dataclass
class TrainedPrm:
    folder: Path
    manifest: dict


def train_prm(
    store, base_directory: str, base_name: str, base_fingerprint: str, tokenizer, labels: StepLabels, label_kind: str,
    output: Path, *, epochs: float = 3.0, learning_rate: float = 5e-5, batch_size: int = 4,
    test_fraction: float = DEFAULT_TEST_FRACTION, seed: int = 0, lora: bool = False, device: str = "cpu",
    max_length: int = 2048, sampled_only: bool = False, should_stop: Callable[[], bool] = lambda: False,
    on_progress: Callable[[int, int], None] = lambda done, planned: None, meter: TokenMeter | None = None,
) -> TrainedPrm | None:  # fmt: skip
    """Fine-tune on the train split's problems, evaluate on the test split's (held out), save;
    None if stopped (a checkpoint is kept). `meter` hears the tokens trained on and scored."""
    examples = build_examples(store, tokenizer, labels, max_length)
    if not examples:
        raise StepScopeError(f"no {label_kind} step labels on these trajectories: estimate MC values (or label) first")
    # Before start_training claims the folder: a refused label set leaves no model behind.
    check_two_classes([t for e in examples for t in e.targets], f"{label_kind} step labels")
    split = split_trajectories(store, [e.trajectory_id for e in examples], test_fraction)
    if not split.problems["train"] or not split.problems["test"]:
        raise StepScopeError(
            f"the labelled steps come from {len(split.problems['train'])} train and {len(split.problems['test'])} "
            "test problems (core.splits): a PRM needs problems on both sides to be evaluated on ones it never saw; "
            "select more problems, or change the held-out fraction"
        )
    heldout_set = set(split.test)
    train = [e for e in examples if e.trajectory_id not in heldout_set]
    heldout = [e for e in examples if e.trajectory_id in heldout_set]
    check_two_classes([t for e in train for t in e.targets], f"{label_kind} step labels of the training split")
    digest = prm_data_hash(train, heldout, base_fingerprint, label_kind)
    output = Path(output)
    dataset = [{"input_ids": e.token_ids, "labels": e.labels} for e in train]
    tuned = fine_tune("token", base_directory, tokenizer, dataset, output, digest=digest, what="a PRM", lora=lora,
                      epochs=epochs, learning_rate=learning_rate, batch_size=batch_size, seed=seed, device=device,
                      should_stop=should_stop, on_progress=on_progress, meter=meter)  # fmt: skip
    if tuned is None:
        return None
    model, steps = tuned
    metrics = evaluate(model, heldout, meter=meter)
    manifest = {
        "status": "done", "base": base_name, "base_fingerprint": base_fingerprint, "labels": label_kind,
        "sampled_only": sampled_only, "label_provenance": labels.provenance, "data_hash": digest,
        "format": TRAINED_FORMAT.as_dict(), "kept_fraction": labels.kept_fraction,
        "compared_steps": labels.compared, "split": split.as_dict(), "heldout_warning": heldout_warning(metrics),
        "training": {"epochs": epochs, "learning_rate": learning_rate, "batch_size": batch_size, "lora": lora,
                     "steps": steps, "seed": seed},
        "metrics": metrics,
    }  # fmt: skip
    (output / FORMAT_FILE).write_text(json.dumps(TRAINED_FORMAT.as_dict(), indent=1))
    finish_training(output, model, tokenizer, manifest)
    return TrainedPrm(output, manifest)


def evaluate(model, heldout: Sequence[Example], meter: TokenMeter | None = None) -> dict:
    """Held-out step AUROC against the labels thresholded at 0.5, with a cluster bootstrap over
    problems; the scores too, so a reader can recompute."""
    import torch

    started = time.perf_counter()
    scores, targets, groups = [], [], []
    device = next(model.parameters()).device  # where training left it
    with torch.inference_mode():
        for e in heldout:
            logits = model(input_ids=torch.tensor([e.token_ids], device=device)).logits[0].float().cpu()
            probabilities = torch.softmax(logits[e.positions], dim=-1)[:, 1].tolist()
            scores += probabilities
            targets += [t >= 0.5 for t in e.targets]
            groups += [e.problem_id] * len(e.positions)
    (meter or TokenMeter()).scored(sum(len(e.token_ids) for e in heldout), parameter_total(model),
                                   time.perf_counter() - started)  # fmt: skip
    interval = bootstrap(lambda idx: auroc([targets[i] for i in idx], [scores[i] for i in idx]),
                         len(scores), groups=groups)  # fmt: skip
    return {"heldout_steps": len(scores), "heldout_positives": int(sum(targets)), "heldout_problems": len(set(groups)),
            "heldout_auroc": interval.as_dict()}  # fmt: skip
