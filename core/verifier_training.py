"""Fine-tuning a verifier: what a fine-tuned ORM (core.orm_training) and a trained PRM
(core.prm_training) share, written once.

- The model: the base's backbone with a fresh two-class head, a sequence-classification head
  for an ORM (one label per solution) or a token-classification head for a PRM (one label per
  step, at its separator), float32; optionally LoRA adapters (peft) instead of every weight.
- The loop: transformers' Trainer on the cross-entropy against a label in [0, 1] wherever the
  collated labels are >= 0 (-100 elsewhere), so hard labels give the usual classification
  loss and soft ones (mc-soft) the soft one.
- The output folder (core.verifier_folders' layout): a run first records the hash of its data
  there, checkpoints every epoch under `checkpoints/`, and at the end saves the model, its
  tokenizer and the manifest. A rerun on the same data resumes from the last checkpoint; a
  folder that holds another training's data is refused rather than overwritten.

Which problems train and which evaluate is core.splits' split, so no problem is on both sides.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from pathlib import Path
from typing import Callable, Iterable, Sequence

from core.errors import StepScopeError
from core.verifier_folders import MANIFEST, read_manifest, write_manifest

HEADS = ("sequence", "token")
CHECKPOINTS = "checkpoints"
IGNORED = -100  # a label the loss skips (padding, tokens that are no step's separator)


# Below these, an AUROC's bootstrap interval rests on too few problems or examples of a class to
# mean much: the CLI prints it with a warning that names the counts (issue 24).
MIN_EVALUATION_PROBLEMS = 10
MIN_EVALUATION_PER_CLASS = 10


class TokenMeter:
    """Where training and scoring say what a model computed on, for the job's compute record
    (core.search.compute.RecordMeter counts it): tokens trained on (forward and backward; each
    example's own tokens, not its padding, once per epoch), tokens scored (forward only), the
    model's total parameters and the seconds it took. This one, the default, forgets them."""

    def trained(self, tokens: int, parameters: int, seconds: float = 0.0) -> None:
        pass

    def scored(self, tokens: int, parameters: int, seconds: float = 0.0) -> None:
        pass


def parameter_total(model) -> int:
    return int(sum(p.numel() for p in model.parameters()))


class OneClassLabels(StepScopeError):
    """Every label to train on is of one class: the CLI's usage error (exit 2), not a failed job."""


def check_two_classes(targets: Sequence[float], what: str) -> None:
    """OneClassLabels unless `targets` (in [0, 1], read at 0.5) hold both classes: a verifier
    trained on one class learns nothing, and its AUROC is undefined."""
    positives = sum(t >= 0.5 for t in targets)
    if len(targets) and positives in (0, len(targets)):
        side = "right" if positives else "wrong"
        raise OneClassLabels(f"all {len(targets)} {what} are {side}: a verifier needs both classes to learn from "
                             "and to be evaluated on; label or estimate more trajectories (e.g. wrong and right ones)")


def small_evaluation_warning(problems: int, examples: int, positives: int, what: str = "held-out set") -> str | None:
    """Why an AUROC's interval over `examples` (of `problems`) should not be trusted, or None."""
    negatives = examples - positives
    if problems >= MIN_EVALUATION_PROBLEMS and min(positives, negatives) >= MIN_EVALUATION_PER_CLASS:
        return None
    return (f"the {what} is small ({problems} problems, {positives} positive and {negatives} negative examples; "
            f"want at least {MIN_EVALUATION_PROBLEMS} problems and {MIN_EVALUATION_PER_CLASS} of each class): "
            "its AUROC and interval say little")  # fmt: skip


def data_hash(header: str, rows: Iterable) -> str:
    """A short hash of what a model is trained and evaluated on: `header` (base, labels, format),
    then each example as JSON."""
    digest = hashlib.sha256(header.encode())
    for row in rows:
        digest.update(json.dumps(row).encode())
    return digest.hexdigest()[:16]


def start_training(output: Path, digest: str, what: str) -> None:
    """Claim `output` for training on the data hashed `digest`; a folder trained on other data is
    refused, one on the same data is resumed from its checkpoints."""
    output = Path(output)
    if (output / MANIFEST).is_file() and read_manifest(output).get("data_hash") != digest:
        raise StepScopeError(f"{output} holds {what} trained on other data: choose another --output")
    write_manifest(output, {"data_hash": digest, "status": "training"})


def finish_training(output: Path, model, tokenizer, manifest: dict) -> None:
    """Save the trained model, its tokenizer and its manifest into `output`: the manifest last, so
    a folder whose manifest says "done" holds the whole model."""
    model.save_pretrained(output)
    tokenizer.save_pretrained(output)
    write_manifest(output, manifest)


def two_class_model(head: str, base_directory: str, tokenizer, *, seed: int, random_init: bool = False,
                    freeze_embeddings: bool = False):  # fmt: skip
    """The base's backbone with a fresh two-class `head` ("sequence" or "token"), float32; with
    `random_init`, random weights throughout (the base's architecture only)."""
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoModelForTokenClassification

    if head not in HEADS:
        raise StepScopeError(f"a verifier's head is one of {', '.join(HEADS)}, not {head!r}")
    auto = AutoModelForSequenceClassification if head == "sequence" else AutoModelForTokenClassification
    torch.manual_seed(seed)
    try:
        if random_init:
            model = auto.from_config(AutoConfig.from_pretrained(base_directory, num_labels=2), dtype=torch.float32)
        else:
            model = auto.from_pretrained(base_directory, num_labels=2, dtype=torch.float32)
    except (ValueError, KeyError) as error:  # an architecture without this head's class
        raise StepScopeError(f"{base_directory} cannot take a {head}-classification head: {error}") from None
    if model.config.pad_token_id is None:  # a causal LM often has none; the batches are padded
        pad = tokenizer.pad_token_id
        model.config.pad_token_id = pad if pad is not None else tokenizer.eos_token_id
    if freeze_embeddings:
        model.get_input_embeddings().weight.requires_grad_(False)
    return model


def collate_for(pad: int) -> Callable[[list[dict]], dict]:
    """A batch of {"input_ids", optional "labels"} padded to its longest: one label per sequence
    (a number) or one per token (a list, padded with IGNORED)."""
    import torch

    def collate(batch: list[dict]) -> dict:
        width = max(len(e["input_ids"]) for e in batch)
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for i, e in enumerate(batch):
            ids[i, : len(e["input_ids"])], mask[i, : len(e["input_ids"])] = torch.tensor(e["input_ids"]), 1
        out = {"input_ids": ids, "attention_mask": mask}
        if "labels" in batch[0]:
            if isinstance(batch[0]["labels"], (list, tuple)):
                out["labels"] = torch.full((len(batch), width), float(IGNORED))
                for i, e in enumerate(batch):
                    out["labels"][i, : len(e["labels"])] = torch.tensor(e["labels"], dtype=torch.float)
            else:
                out["labels"] = torch.tensor([float(e["labels"]) for e in batch])
        return out

    return collate


def with_lora(model):
    """`model` with LoRA adapters (peft) on its attention and MLP, the new head trained in full."""
    try:
        from peft import LoraConfig, get_peft_model
    except ModuleNotFoundError:
        raise StepScopeError("LoRA needs peft: pip install peft") from None
    task_type = "TOKEN_CLS" if type(model).__name__.endswith("ForTokenClassification") else "SEQ_CLS"
    return get_peft_model(model, LoraConfig(task_type=task_type, r=8, lora_alpha=16, lora_dropout=0.0))


def fine_tune(
    head: str, base_directory: str, tokenizer, dataset: list[dict], output: Path, *, digest: str, what: str,
    random_init: bool = False, freeze_embeddings: bool = False, lora: bool, epochs: float, learning_rate: float,
    batch_size: int, seed: int, device: str, should_stop: Callable[[], bool] = lambda: False,
    on_progress: Callable[[int, int], None] = lambda done, planned: None, meter: TokenMeter | None = None,
):  # fmt: skip
    """Claim `output` for the data hashed `digest` (start_training), and train a two_class_model
    on `dataset` ({"input_ids", "labels"} rows); (the trained model in eval mode, LoRA merged in;
    optimiser steps), or None when stopped (a checkpoint is saved first, under
    `output`/checkpoints, where a rerun resumes from). `meter` hears each optimiser step's tokens
    (the batch's attention mask: padding not counted) and seconds."""
    import torch
    from transformers import Trainer, TrainerCallback, TrainingArguments

    meter = meter or TokenMeter()
    counted = {"tokens": 0, "started": time.perf_counter()}  # since the last optimiser step

    class SoftLabelTrainer(Trainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            counted["tokens"] += int(inputs["attention_mask"].sum())
            target = inputs.pop("labels")
            outputs = model(**inputs)
            log_probs = torch.log_softmax(outputs.logits.float(), dim=-1)
            keep = target >= 0
            y = target[keep]
            loss = -(y * log_probs[..., 1][keep] + (1 - y) * log_probs[..., 0][keep]).mean()
            return (loss, outputs) if return_outputs else loss

    class Report(TrainerCallback):
        stopped = False

        def on_step_begin(self, args, state, control, **kwargs):
            counted.update(tokens=0, started=time.perf_counter())

        def on_step_end(self, args, state, control, **kwargs):
            meter.trained(counted["tokens"], parameters, time.perf_counter() - counted["started"])
            counted["tokens"] = 0
            on_progress(state.global_step, state.max_steps)
            if should_stop():
                control.should_save = True
                control.should_training_stop = True
                self.stopped = True

    start_training(output, digest, what)
    model = two_class_model(head, base_directory, tokenizer, seed=seed, random_init=random_init,
                            freeze_embeddings=freeze_embeddings)  # fmt: skip
    pad = model.config.pad_token_id
    parameters = parameter_total(model)  # before LoRA's adapters, which are merged back in the end
    if lora:
        model = with_lora(model)
    checkpoints = Path(output) / CHECKPOINTS
    report = Report()
    steps_per_epoch = math.ceil(len(dataset) / batch_size)
    arguments = TrainingArguments(
        output_dir=str(checkpoints), num_train_epochs=epochs, learning_rate=learning_rate,
        per_device_train_batch_size=batch_size, save_strategy="steps", save_steps=max(1, steps_per_epoch),
        save_total_limit=2, logging_strategy="no", report_to=[], seed=seed, use_cpu=device == "cpu",
        remove_unused_columns=False, dataloader_num_workers=0, disable_tqdm=True,
    )  # fmt: skip
    trainer = SoftLabelTrainer(model=model, args=arguments, train_dataset=dataset, data_collator=collate_for(pad),
                               callbacks=[report])  # fmt: skip
    resume = checkpoints.is_dir() and any(checkpoints.glob("checkpoint-*"))
    trainer.train(resume_from_checkpoint=True if resume else None)
    if report.stopped:
        return None
    model = trainer.model.merge_and_unload() if lora else trainer.model
    model.eval()
    return model, trainer.state.global_step
