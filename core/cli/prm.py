"""PRM commands of the `stepscope` CLI: `prm score` and `train-prm`.

Like `judge`, each creates the job the app's worker would run and runs it here in the
foreground; an interrupted job resumes with `stepscope jobs resume ID`.
"""

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from core.cli.judge import _interval
from core.cli.options import (
    DEFAULT_DEVICE, Annotator, Database, Device, EngineChoice, LabelPolicy, Lora, TrajectorySelection, command_group,
    open_store, with_option_groups,
)  # fmt: skip
from core.cli.output import console, errors
from core.models import DEFAULT_MODEL

prm_app = command_group("Score steps with process reward models (PRMs).")


@prm_app.command("score")
@with_option_groups
def score_command(
    prm: Annotated[str, typer.Option(help=(
        "the PRM: a preset (stepscope models list), a model folder, a hub id, or the name a server serves"))],
    family: Annotated[Optional[str], typer.Option(
        help="tag | token-classification | reward-head (default: the preset's, or the folder's config)")] = None,
    template: Annotated[Optional[str], typer.Option(
        help="plain | chat-turns (RLHFlow) | chat-assistant (Qwen PRM)")] = None,
    separator: Annotated[Optional[str], typer.Option(
        help="text after each step (' ки', '<extra_0>', '\\n'; chat-turns: the assistant's answer '+')")] = None,
    tag: Annotated[Optional[str], typer.Option(
        help="the token that must end each separator (default: the separator without spaces)")] = None,
    good: Annotated[Optional[str], typer.Option(help="tag family: the good token (default +)")] = None,
    bad: Annotated[Optional[str], typer.Option(help="tag family: the bad token (default -)")] = None,
    positive_class: Annotated[Optional[int], typer.Option(
        min=0, help="class families: the class that means a good step (default 1)")] = None,
    system: Annotated[Optional[str], typer.Option(help="chat templates: the system turn")] = None,
    tokenization: Annotated[Optional[str], typer.Option(
        help="text (render, then tokenise) | pieces (TRL's piecewise layout)")] = None,
    name: Annotated[Optional[str], typer.Option(help="judge name stored with the scores (default prm:<PRM>)")] = None,
    selection: TrajectorySelection = TrajectorySelection(),
    engine: Annotated[str, typer.Option(
        help="transformers | vllm (in-process pooling) | server (vllm serve's /pooling)")] = "transformers",
    base_url: Annotated[Optional[list[str]], typer.Option(
        help="engine server: the server's URL (repeatable: several servers take turns)")] = None,
    tokenizer: Annotated[Optional[str], typer.Option(
        help="engine server: where to load the PRM's tokenizer (default: --prm)")] = None,
    device: Device = DEFAULT_DEVICE,
    batch_size: Annotated[int, typer.Option(min=1, help="trajectories per forward pass")] = 8,
    db: Database = None,
) -> None:  # fmt: skip
    """Score every step of the trajectories with a PRM, one forward pass per trajectory."""
    from core.cli.jobs import run_in_foreground
    from core.jobs.prm_score import prm_score_spec
    from core.jobs.runner import queue

    options: dict = {}
    if engine == "transformers":
        options["device"] = device
    elif engine == "server":
        if not base_url:
            raise typer.BadParameter("engine server needs a `vllm serve` PRM, e.g. http://127.0.0.1:8000",
                                     param_hint="--base-url")  # fmt: skip
        options = {"base_urls": list(base_url), **({"tokenizer": tokenizer} if tokenizer else {})}
    store = open_store(db)  # after the checks above: a mistake creates no database file
    ids = selection.resolve(store)
    spec = prm_score_spec(
        prm, ids, family=family, engine=engine, engine_options=options, name=name, batch_size=batch_size,
        template=template, separator=separator, tag=tag, good=good, bad=bad, positive_class=positive_class,
        system=system, tokenization=tokenization,
    )  # fmt: skip
    job_id = queue(store, spec)
    run_in_foreground(store, job_id)
    print_prm_summary(store, spec.judge, ids)


def print_prm_summary(store, judge: str, trajectory_ids) -> None:
    """Steps scored, and each aggregation's AUROC against final-answer correctness."""
    from core.metrics import auroc
    from core.prm import AGGREGATIONS, solution_scores

    wanted = set(trajectory_ids)
    correct = {t: store.get_trajectory(t)["correct"] for t in wanted}
    console.print(f"{judge}: scored {len(wanted)} trajectories", highlight=False, markup=False)
    for how in AGGREGATIONS:
        scores = {t: s for t, s in solution_scores(store, judge, how).items() if t in wanted and correct[t] is not None}
        value = auroc([correct[t] for t in scores], list(scores.values())) if scores else None
        shown = "n/a (one class)" if value is None else f"{value:.3f}"
        console.print(f"  {how:<8} AUROC vs final-answer correctness {shown} ({len(scores)} solutions)", highlight=False)


@with_option_groups
def train_prm_command(
    base: Annotated[str, typer.Option(
        help="base model: its backbone gets a two-class token-classification head")] = DEFAULT_MODEL,
    labels: Annotated[str, typer.Option(help=(
        "mc-hard | mc-soft | human[:ANNOTATOR] (-1 wrong; 0 = neutral and +1 right; several annotators: the share "
        "who say right) | mc-agree"))] = "mc-hard",
    sampled_only: Annotated[bool, typer.Option("--sampled-only", help=(
        "MC labels: only steps with their own rollouts; by default a step the first-error search or the graded "
        "outcome implies is labelled too (the manifest counts each kind)"))] = False,
    judge: Annotated[Optional[str], typer.Option(
        help="mc-agree: the judge or PRM (verifier name) whose step verdicts must agree with MC")] = None,
    label_policy: LabelPolicy = None,
    annotator: Annotator = None,
    output: Annotated[Optional[Path], typer.Option(
        help="model folder (default prms/sorm-LABELS-BASE next to the database)")] = None,
    epochs: Annotated[float, typer.Option(min=0.01, help="passes over the training steps")] = 3.0,
    learning_rate: Annotated[float, typer.Option(min=0.0, help="AdamW learning rate")] = 5e-5,
    batch_size: Annotated[int, typer.Option(min=1, help="trajectories per training step")] = 4,
    heldout_fraction: Annotated[float, typer.Option(
        min=0.01, max=0.9, help="share of problems held out for evaluation")] = 0.2,
    seed: Annotated[int, typer.Option(help="split and initialisation seed")] = 0,
    lora: Lora = False,
    selection: TrajectorySelection = TrajectorySelection(),
    device: Device = DEFAULT_DEVICE,
    db: Database = None,
) -> None:  # fmt: skip
    """Fine-tune a token-classification PRM on the store's step labels (SORM), held out by problem."""
    from core.cli.jobs import run_in_foreground
    from core.jobs.runner import queue
    from core.jobs.train_prm import TrainPrmSpec, default_output

    if sampled_only and labels not in ("mc-hard", "mc-soft", "mc-agree"):
        raise typer.BadParameter(f"only MC labels (mc-hard, mc-soft, mc-agree) are sampled or implied, not {labels}",
                                 param_hint="--sampled-only")  # fmt: skip
    store = open_store(db)
    ids = selection.resolve(store)
    _check_label_set(store, ids, labels, label_policy, annotator, judge, sampled_only)
    job_id = queue(store, TrainPrmSpec(
        base=base, labels=labels, trajectory_ids=ids,
        output=str(output or default_output(store, base, labels, sampled_only)), judge=judge,
        label_policy=label_policy, annotator=annotator, sampled_only=sampled_only, epochs=epochs,
        learning_rate=learning_rate, batch_size=batch_size, heldout_fraction=heldout_fraction, seed=seed, lora=lora,
        engine_options=EngineChoice(device=device).options(),
    ))  # fmt: skip
    run_in_foreground(store, job_id)
    manifest = store.get_job(job_id)["manifest"]
    metrics = manifest["metrics"]
    console.print(f"model     {manifest['artifact']}", highlight=False, markup=False)
    console.print(f"data      {manifest['data_hash']}; held out {len(manifest['split']['heldout_problems'])} problems "
                  f"({metrics['heldout_steps']} steps, {metrics['heldout_positives']} positive)", highlight=False)  # fmt: skip
    if manifest.get("label_provenance") is not None:
        from core.formats.labels import provenance_summary

        console.print(provenance_summary(manifest["label_provenance"]), highlight=False, markup=False,
                      soft_wrap=True)  # fmt: skip
    if manifest.get("kept_fraction") is not None:
        console.print(f"mc-agree kept {manifest['kept_fraction']:.1%} of the steps with both labels", highlight=False)
    console.print(f"held-out step AUROC {_interval(metrics['heldout_auroc'])}", highlight=False)
    if manifest.get("heldout_warning"):
        errors.print(f"[yellow]warning:[/] {escape(manifest['heldout_warning'])}", highlight=False, soft_wrap=True)
    console.print(f"score with: stepscope prm score --prm {manifest['artifact']}", highlight=False, markup=False)


def _check_label_set(store, ids, labels, label_policy, annotator, judge, sampled_only) -> None:
    """Refuse, before a job or a folder exists, a label set a PRM cannot learn from: none at all
    (exit 1), or one class only (a usage error, exit 2: the choice of labels or trajectories)."""
    from core.errors import StepScopeError
    from core.prm_training import OneClassLabels, check_two_classes, step_labels

    found = step_labels(store, ids, labels, policy=label_policy, annotator=annotator, judge=judge,
                        sampled_only=sampled_only).targets()  # fmt: skip
    if not found:
        raise StepScopeError(f"no {labels} step labels on these trajectories: estimate MC values (or label) first")
    try:
        check_two_classes(found, f"{labels} step labels")
    except OneClassLabels as error:
        raise typer.BadParameter(str(error), param_hint="--labels") from None


def register(app: typer.Typer) -> None:
    app.add_typer(prm_app, name="prm")
    app.command("train-prm")(train_prm_command)
