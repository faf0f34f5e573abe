"""Judge commands of the `stepscope` CLI: `judge`, `train-verifier` (probe or fine-tuned ORM) and `verifiers`.

Like `generate` and `estimate`, each creates the job the app's worker would run and runs it
here in the foreground; an interrupted job resumes with `stepscope jobs resume ID`.
"""

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from core.cli.options import (
    DEFAULT_DEVICE, Annotator, Database, Device, EngineChoice, LabelPolicy, Lora, Sampling, TrajectorySelection,
    open_store, with_option_groups,
)  # fmt: skip
from core.cli.output import console, errors
from core.errors import StepScopeError
from core.models import DEFAULT_MODEL



@with_option_groups
def judge_command(
    judge: Annotated[Optional[str], typer.Option(help="judge model: preset, directory or hub id")] = None,
    kind: Annotated[str, typer.Option(help="step | outcome | critic")] = "outcome",
    verifier: Annotated[Optional[Path], typer.Option(
        help="instead of --judge: a verifier folder from train-verifier (probe or fine-tuned ORM)")] = None,
    mode: Annotated[str, typer.Option(
        help="logprob (P(Yes) from next-token log-probs) | generative (reason, then answer; k samples)")] = "logprob",
    samples: Annotated[int, typer.Option(min=1, help="generative mode: sampled verdicts per target")] = 4,
    template: Annotated[Optional[str], typer.Option(
        help="prompt: a name under core/prompts or a path to a .txt file")] = None,
    chat: Annotated[Optional[bool], typer.Option(
        "--chat/--no-chat", help="use the judge's chat template (default: when it has one)")] = None,
    name: Annotated[Optional[str], typer.Option(
        help="judge name stored with the verdicts (default: the model)")] = None,
    selection: TrajectorySelection = TrajectorySelection(),
    engine: EngineChoice = EngineChoice(),
    max_new_tokens: Annotated[int, typer.Option(min=1, help="generative mode and critic")] = 256,
    temperature: Annotated[Optional[float], typer.Option(
        min=0.0, help="default 0.7 (generative), 0 (critic)")] = None,
    seed: Annotated[int, typer.Option(help="generative mode: the same seed draws the same verdicts")] = Sampling.seed,
    db: Database = None,
) -> None:  # fmt: skip
    """Verdicts from a judge model (P(Yes), sampled, or first-error critic) or a probe verifier."""
    from core.cli.jobs import run_in_foreground
    from core.jobs.judge import JudgeSpec, ProbeJudgeSpec
    from core.jobs.runner import queue

    store = open_store(db)
    ids = selection.resolve(store)
    if verifier is not None:
        from core.jobs.orm_score import OrmScoreSpec
        from core.orm_training import is_orm_folder

        options = EngineChoice(device=engine.device).options()  # a verifier runs on transformers
        if is_orm_folder(verifier):
            job_id = queue(store, OrmScoreSpec(verifier=str(verifier), trajectory_ids=ids, engine_options=options))
        else:
            job_id = queue(store, ProbeJudgeSpec(verifier=str(verifier), trajectory_ids=ids, engine_options=options))
    elif judge:
        job_id = queue(store, JudgeSpec(
            judge=judge, verdict=kind, trajectory_ids=ids, mode=mode, template=template, chat=chat,
            samples=samples, max_new_tokens=max_new_tokens, temperature=temperature, seed=seed, name=name,
            **engine.spec_fields(),
        ))  # fmt: skip
    else:
        raise StepScopeError("name a judge model (--judge MODEL) or a probe verifier (--verifier FOLDER)")
    run_in_foreground(store, job_id)
    print_judge_summary(store, job_id)


def print_judge_summary(store, job_id: int) -> None:
    """Verdict count, targets that kept a trained verifier's cross-fitted score, mean P(Yes) and
    mass, unparseable critic answers, AUROC vs correctness (a trained verifier's: on held-out and
    cross-fitted scores only, saying how many in-sample ones it left out)."""
    from core.jobs.judge import KEPT_HELD_OUT

    job = store.get_job(job_id)
    manifest = job["manifest"]
    rows = store.job_verdicts_with_outcome(job_id)
    kept = manifest.get(KEPT_HELD_OUT, 0)
    if not rows and not kept:
        console.print(f"job {job_id}: no verdicts", highlight=False)
        return
    kind = rows[0][0] if rows else manifest["kind"]
    scored = [(p, m, c) for _, p, m, _, c in rows if p is not None]
    console.print(f"{manifest['judge']}: {len(rows)} {kind} verdicts", highlight=False, markup=False)
    if kept:
        # Issue 24: a trained verifier does not store an in-sample score over a cross-fitted one.
        what = "held-out" if job["kind"] == "orm-score" else "cross-fitted"
        console.print(f"  {kept} targets kept their {what} score", highlight=False)
    if scored:
        console.print(f"  mean P(Yes) {sum(p for p, _, _ in scored) / len(scored):.3f}", highlight=False)
        masses = [m for _, m, _ in scored if m is not None]
        if masses:
            console.print(f"  mean mass on yes/no {sum(masses) / len(masses):.3f}", highlight=False)
    if len(scored) < len(rows):
        console.print(f"  undefined P(Yes): {len(rows) - len(scored)}", highlight=False)
    if kind == "critic":
        parses = [json.loads(raw or "{}").get("parse") for _, _, _, raw, _ in rows]
        bad = sum(p in ("unparseable", "out-of-range") for p in parses)
        console.print(f"  unparseable critic answers: {bad} of {len(rows)}", highlight=False)
    if kind in ("outcome", "critic"):
        _print_auroc(store, job, kind, [(p, c) for p, _, c in scored if c is not None])


def _print_auroc(store, job: dict, kind: str, labelled: list[tuple[float, int]]) -> None:
    """AUROC against final-answer correctness: a judge model's over the job's verdicts
    (`labelled`); a trained verifier's (probe, ORM) over its page-facing verdicts on the job's
    solutions that are held-out or cross-fitted, with the count of in-sample ones left out (a
    score on a solution it was trained on flatters it; the job kept cross-fitted ones it met)."""
    from core.metrics import auroc

    manifest = job["manifest"]
    trained = job["kind"] in ("probe-judge", "orm-score")
    in_sample = 0
    if trained:
        items = store.preferred_verdict_outcomes(manifest["judge"], kind, manifest["trajectory_ids"])
        labelled = [(p, c) for p, flagged, c in items if c is not None and not flagged]
        in_sample = sum(1 for _, flagged, c in items if c is not None and flagged)
    value = auroc([c for _, c in labelled], [p for p, _ in labelled]) if labelled else None
    if value is not None:
        over = f"over {len(labelled)} held-out or cross-fitted solutions" if trained else f"({len(labelled)} solutions)"
        console.print(f"  AUROC vs final-answer correctness {value:.3f} {over}", highlight=False)
    if in_sample:
        console.print(f"  {in_sample} in-sample scores (solutions it was trained on) left out of the AUROC",
                      highlight=False)


@with_option_groups
def train_verifier_command(
    kind: Annotated[str, typer.Option(help=(
        "orm-probe (logistic regression on hidden states, cross-fitted by problem) | orm-finetune "
        "(sequence-classification head on the base, fine-tuned)"))] = "orm-probe",
    base: Annotated[str, typer.Option(help=(
        "base model (a preset, folder or hub id); orm-finetune also takes random-init[:MODEL] (MODEL's "
        "architecture, random weights)"))] = DEFAULT_MODEL,
    labels: Annotated[str, typer.Option(help=(
        "outcome | mc-hard | mc-soft | human (-1 wrong; 0 = neutral and +1 right; several annotators: the share "
        "who say right) (orm-finetune: outcome)"))] = "outcome",
    label_policy: LabelPolicy = None,
    annotator: Annotator = None,
    layer: Annotated[int, typer.Option(help="orm-probe: hidden layer (negative counts from the last)")] = -1,
    context: Annotated[str, typer.Option(
        help="what the verifier reads before the solution: question | policy-prompt")] = "question",
    folds: Annotated[int, typer.Option(min=2, help="orm-probe: cross-validation folds, grouped by problem")] = 5,
    epochs: Annotated[float, typer.Option(help="orm-finetune: passes over the train split's solutions")] = 2.0,
    learning_rate: Annotated[float, typer.Option(help="orm-finetune: AdamW learning rate")] = 2e-5,
    batch_size: Annotated[int, typer.Option(min=1, help="orm-finetune: solutions per training step")] = 8,
    test_fraction: Annotated[float, typer.Option(
        help="orm-finetune: share of problems in the test split, for problems whose meta names no split")] = 0.5,
    lora: Lora = False,
    output: Annotated[Optional[Path], typer.Option(
        help="orm-finetune: model folder (default orms/orm-BASE next to the database)")] = None,
    seed: Annotated[int, typer.Option(help="seed of the folds and of the fine-tuning")] = 0,
    selection: TrajectorySelection = TrajectorySelection(),
    device: Device = DEFAULT_DEVICE,
    db: Database = None,
) -> None:  # fmt: skip
    """Train an outcome verifier on graded solutions: a probe on hidden states, or a fine-tuned ORM."""
    from core.cli.jobs import run_in_foreground
    from core.jobs.runner import queue
    from core.orm_training import check_kind

    check_kind(kind)
    store = open_store(db)
    ids = selection.resolve(store)
    if labels == "outcome":
        _check_outcomes(store, ids)
    if kind == "orm-finetune":
        _train_orm(store, ids, base, labels, context, epochs, learning_rate, batch_size, test_fraction, lora, output,
                   seed, device)  # fmt: skip
        return
    from core.jobs.train_verifier import TrainVerifierSpec

    job_id = queue(store, TrainVerifierSpec(
        base=base, labels=labels, trajectory_ids=ids, layer=layer, context=context, folds=folds, seed=seed,
        label_policy=label_policy, annotator=annotator, engine_options=EngineChoice(device=device).options(),
    ))  # fmt: skip
    run_in_foreground(store, job_id)
    manifest = store.get_job(job_id)["manifest"]
    metrics = manifest["metrics"]
    a, w = metrics["auroc"], metrics["within_problem_auroc"]
    console.print(f"artifact  {manifest['artifact']}", highlight=False, markup=False)
    console.print(f"examples  {metrics['n']} ({metrics['positives']} positive) from {metrics['problems']} problems", highlight=False)
    console.print(f"cross-validated AUROC {_interval(a)}; within problem {_interval(w)}", highlight=False)
    _warn_if_small(metrics, "cross-validated set")


def _check_outcomes(store, ids) -> None:
    """Refuse, before a job exists, solutions whose graded outcomes are all of one class: none
    graded (exit 1), or all right or all wrong (a usage error, exit 2: the choice of trajectories)."""
    from core.verifier_training import OneClassLabels, check_two_classes

    graded = [float(v) for v in store.trajectory_outcomes(ids).values() if v is not None]
    if not graded:
        raise StepScopeError("none of these solutions is graded (right or wrong): "
                             "an outcome verifier has nothing to learn")
    try:
        check_two_classes(graded, "graded outcomes of these solutions")
    except OneClassLabels as error:
        raise typer.BadParameter(str(error), param_hint="--labels") from None


def _warn_if_small(metrics: dict, what: str) -> None:
    """A warning line when the AUROC just printed rests on too few problems or examples of a class."""
    from core.verifier_training import small_evaluation_warning

    warning = small_evaluation_warning(metrics["problems"], metrics["n"], metrics["positives"], what)
    if warning:
        errors.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False, soft_wrap=True)


def _train_orm(store, ids, base, labels, context, epochs, learning_rate, batch_size, test_fraction, lora, output, seed,
               device) -> None:  # fmt: skip
    from core.cli.jobs import run_in_foreground
    from core.jobs.runner import queue
    from core.jobs.train_orm import TrainOrmSpec
    from core.orm_training import default_output

    if labels != "outcome":
        raise StepScopeError(f"a fine-tuned ORM learns outcome labels, not {labels!r}: for step labels use train-prm")
    job_id = queue(store, TrainOrmSpec(
        base=base, trajectory_ids=ids, output=str(output or default_output(store, base)), context=context,
        epochs=epochs, learning_rate=learning_rate, batch_size=batch_size, test_fraction=test_fraction, seed=seed,
        lora=lora, engine_options=EngineChoice(device=device).options(),
    ))  # fmt: skip
    run_in_foreground(store, job_id)
    manifest = store.get_job(job_id)["manifest"]
    split, test = manifest["split"], manifest["metrics"]["test"]
    console.print(f"artifact  {manifest['artifact']}", highlight=False, markup=False)
    console.print(f"split     {len(split['train_problems'])} train problems ({len(split['train_trajectories'])} "
                  f"solutions), {len(split['test_problems'])} test problems ({len(split['test_trajectories'])} solutions)",
                  highlight=False)  # fmt: skip
    if test is None:
        console.print("no graded solutions in the test split: no AUROC", highlight=False)
        return
    a, w = test["auroc"], test["within_problem_auroc"]
    console.print(f"test-split AUROC {_interval(a)}; within problem {_interval(w)}", highlight=False)
    _warn_if_small(test, "test split")


def _interval(entry: dict) -> str:
    from core.metrics import Interval  # numpy and scipy: loaded only by the commands that print one

    text = str(Interval.from_dict(entry))
    return text if entry["low"] is None else f"{text} (95%)"


def verifiers_command(db: Database = None) -> None:
    """The verifiers trained next to this database: probes (cross-validated AUROC) and fine-tuned
    ORMs (AUROC on the test split)."""
    from core.orm_training import list_orms
    from core.probes import list_probes

    store = open_store(db)
    table = Table("judge", "kind", "base", "labels", "examples", "AUROC", "folder")
    for entry in list_probes(store):
        table.add_row(escape(entry["judge"]), f"orm-probe (layer {entry['layer']})", escape(entry["base"]),
                      entry["labels"], str(entry["metrics"]["n"]), f"{_interval(entry['metrics']['auroc'])} cross-validated",
                      escape(entry["folder"]))  # fmt: skip
    for entry in list_orms(store):
        test = entry["metrics"]["test"]
        table.add_row(escape(entry["judge"]), "orm-finetune", escape(entry["base"]), "outcome",
                      str(entry["data"]["train_examples"]), f"{_interval(test['auroc'])} test split" if test else "n/a",
                      escape(entry["folder"]))  # fmt: skip
    console.print(table)


def register(app: typer.Typer) -> None:
    app.command("judge")(judge_command)
    app.command("train-verifier")(train_verifier_command)
    app.command("verifiers")(verifiers_command)
