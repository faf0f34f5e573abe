"""`stepscope resegment`: cut trajectories another way, and optionally carry their labels over.

A new segmentation is added beside the old ones (core.store: labels, values and verdicts stay on
the steps they were made on) and becomes current. With `--move-labels`, the human labels of the
segmentation that was current are copied onto the new steps by character span
(core.store.segmentations: resegment_many, move_labels); those that find no step are counted and
reported, since a label silently lost is a label a person has to make again without knowing it.
All the trajectories are resegmented in one transaction: a failure or Ctrl-C leaves none changed.

`stepscope split` has a model choose the steps instead (core.jobs.split): a job, run here in the
foreground like `judge`, whose segmentations have the rule `model:FINGERPRINT`; `resegment --rule
model:FINGERPRINT` makes such a segmentation current again, it cannot cut one.
"""

from typing import Annotated, Optional

import typer
from rich.markup import escape

from core.cli.options import Database, EngineChoice, as_usage_error, open_store, spec_default, with_option_groups
from core.cli.output import console, user_errors
from core.errors import StepScopeError
from core.jobs.split import MAX_UNITS_PER_CHUNK, SplitSpec

RULE_HELP = ("the splitter: line, paragraph, blank-line, step-marker, sentence, sentence-merged[:MIN-MAX], "
             "reflection[:MARKER|MARKER...]; or model:FINGERPRINT, a split job's segmentation, made current again")  # fmt: skip


def checked_rule(rule: str) -> str:
    """The rule as stored (parameters that are the defaults dropped), or StepScopeError."""
    from core.steps import check_cutting_rule, is_model_rule

    return rule if is_model_rule(rule) else check_cutting_rule(rule)


def _selected(store, trajectory: Optional[int], dataset: Optional[str]) -> list[int]:
    if trajectory is not None:
        return [trajectory]
    ids = [row["id"] for row in store.list_trajectories(dataset=dataset)]
    if not ids:
        raise StepScopeError(f"dataset {dataset!r} has no trajectories (`stepscope db info` lists the datasets)")
    return ids


def _one_of(trajectory: Optional[int], dataset: Optional[str]) -> None:
    if (trajectory is None) == (dataset is None):
        raise typer.BadParameter("name one trajectory or one dataset", param_hint="--trajectory or --dataset")


def resegment_command(
    rule: Annotated[str, typer.Option("--rule", metavar="RULE", help=RULE_HELP)],
    trajectory: Annotated[Optional[int], typer.Option(min=1, help="this trajectory (by id)")] = None,
    dataset: Annotated[Optional[str], typer.Option(help="every trajectory of this dataset")] = None,
    move_labels: Annotated[bool, typer.Option(
        "--move-labels", help="copy the human labels onto the new steps by character span; says how many did not map"
    )] = False,  # fmt: skip
    db: Database = None,
) -> None:
    """Cut trajectories by another splitter: a new segmentation, made current (the old ones and what is on them stay)."""
    stored_rule = as_usage_error(lambda: checked_rule(rule), "--rule")
    _one_of(trajectory, dataset)
    with user_errors():
        store = open_store(db)
        ids = _selected(store, trajectory, dataset)
        tally = store.resegment_many(ids, stored_rule, move_labels=move_labels)
    what = f"trajectory {trajectory}" if trajectory is not None else f"{tally.trajectories} trajectories"
    console.print(
        f"{escape(what)} cut by {escape(repr(stored_rule))}: {tally.steps_after} steps (were {tally.steps_before}); "
        f"{tally.new_segmentations} new segmentations, now current",
        highlight=False, soft_wrap=True,
    )  # fmt: skip
    if move_labels:
        console.print(f"labels moved: {tally.labels_moved}; did not map: {tally.labels_unmapped}", highlight=False)


@with_option_groups
def split_command(
    model: Annotated[str, typer.Option(help="the model that chooses the steps: preset, directory or hub id")],
    trajectory: Annotated[Optional[int], typer.Option(min=1, help="this trajectory (by id)")] = None,
    dataset: Annotated[Optional[str], typer.Option(help="every trajectory of this dataset")] = None,
    chunk_chars: Annotated[int, typer.Option(min=1, help=(
        f"characters of text per prompt (whole sentences and lines, at most {MAX_UNITS_PER_CHUNK} of them)"))] = (
        spec_default(SplitSpec, "chunk_chars")),
    template: Annotated[str, typer.Option(help="prompt: a name under core/prompts or a path to a .txt file")] = (
        spec_default(SplitSpec, "template")),
    chat: Annotated[Optional[bool], typer.Option(
        "--chat/--no-chat", help="use the model's chat template (default: when it has one)")] = None,
    max_new_tokens: Annotated[int, typer.Option(min=1, help="the most tokens of each answer")] = (
        spec_default(SplitSpec, "max_new_tokens")),
    move_labels: Annotated[bool, typer.Option(
        "--move-labels", help="copy the human labels onto the new steps by character span; says how many did not map"
    )] = False,
    engine: EngineChoice = EngineChoice(),
    db: Database = None,
) -> None:  # fmt: skip
    """A model chooses the step boundaries (among sentence and line ends): a model:FINGERPRINT segmentation, made current."""
    from core.cli.jobs import run_in_foreground
    from core.jobs.runner import queue
    from core.jobs.split import split_counts

    _one_of(trajectory, dataset)
    with user_errors():
        store = open_store(db)
        ids = tuple(_selected(store, trajectory, dataset))
        spec = SplitSpec(model=model, trajectory_ids=ids, chunk_chars=chunk_chars, template=template, chat=chat,
                         max_new_tokens=max_new_tokens, move_labels=move_labels, **engine.spec_fields())  # fmt: skip
        job_id = queue(store, spec)
        run_in_foreground(store, job_id)
        manifest = store.get_job(job_id)["manifest"]
        counts = split_counts(manifest)
        steps = sum(_steps_by(store, t, manifest["rule"]) for t in ids)
    console.print(
        f"{len(ids)} trajectories cut by {escape(repr(manifest['rule']))} ({escape(model)}): {steps} steps, now current; "
        f"{counts['chunks']} chunks asked, {counts['fallback_chunks']} fell back to the sentence rule (the answer did "
        f"not read); {counts['reused']} already split so",
        highlight=False, soft_wrap=True,
    )  # fmt: skip


def _steps_by(store, trajectory_id: int, rule: str) -> int:
    return next((row["n_steps"] for row in store.segmentations(trajectory_id) if row["rule"] == rule), 0)


def register(app: typer.Typer) -> None:
    app.command("resegment")(resegment_command)
    app.command("split")(split_command)
