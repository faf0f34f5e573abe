"""Rollout-tree commands of the `stepscope` CLI: `tree search`, `tree expand`, `tree show`,
`tree pairs`.

`tree search` runs the same tree-search job the app queues, in the foreground; a kill leaves it
resumable with `stepscope jobs resume ID`.
"""

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from core.cli.options import (
    Database, Dataset, EngineChoice, Policy, Sampling, TreePolicy, command_group, open_store, with_option_groups,
)  # fmt: skip
from core.cli.output import console
from core.errors import StepScopeError
from core.models import DEFAULT_MODEL
tree_app = command_group("Grow, read and export the rollout tree.")


@tree_app.command("search")
@with_option_groups
def search_command(
    trajectory: Annotated[int, typer.Option(
        "--trajectory", help="grow the tree of this trajectory's problem (its prompt and splitter)")],
    budget: Annotated[int, typer.Option(min=1, help="the most rollouts the job samples")] = 64,
    k: Annotated[int, typer.Option("--k", min=1, help="rollouts per probed or expanded node")] = 8,
    mode: Annotated[str, typer.Option(help=(
        "omegaprm (select, binary-search, repeat) | expand (every rollout of --node, --depth levels)"))] = "omegaprm",
    node: Annotated[Optional[int], typer.Option(
        help="expand: the node whose rollouts to expand (default: the question)")] = None,
    depth: Annotated[int, typer.Option(min=1, help="expand: how many levels deep")] = 1,
    alpha: Annotated[float, typer.Option(help="OmegaPRM's alpha: weight of the value in Q")] = 0.5,
    beta: Annotated[float, typer.Option(help="OmegaPRM's beta: the length penalty in Q")] = 0.9,
    length_scale: Annotated[float, typer.Option(help="OmegaPRM's L: rollout length scale, in tokens")] = 500,
    c_puct: Annotated[float, typer.Option(help="OmegaPRM's exploration weight")] = 0.125,
    policy: Policy = DEFAULT_MODEL,
    engine: EngineChoice = EngineChoice(),
    sampling: Sampling = Sampling(),  # its seed is the search's too: the same seed grows the same tree
    db: Database = None,
) -> None:  # fmt: skip
    """Grow the rollout tree: OmegaPRM with a rollout budget, or expand a node N levels deep."""
    from core.cli.jobs import run_in_foreground
    from core.jobs.runner import queue
    from core.jobs.tree_search import MODES, TreeSearchSpec

    if mode not in MODES:  # before the database is opened: a mistake creates no file
        raise typer.BadParameter(f"one of {', '.join(MODES)}, not {mode!r}", param_hint="--mode")
    store = open_store(db)
    job_id = queue(store, TreeSearchSpec(
        policy=policy, trajectory_id=trajectory, mode=mode, budget=budget, k=k, node_id=node, depth=depth,
        alpha=alpha, beta=beta, length_scale=length_scale, c_puct=c_puct, sampling=sampling.params(),
        **engine.spec_fields(),
    ))  # fmt: skip
    run_in_foreground(store, job_id)
    _print_tree(store, trajectory, policy, limit=20)
    if stopped := store.get_job(job_id)["manifest"].get("stopped"):
        console.print(f"the search stopped: {stopped}", highlight=False)


@tree_app.command("expand")
def expand_command(
    rollout: Annotated[int, typer.Argument(help="the rollout's id (tree show, or Explore's rollout table)")],
    db: Database = None,
) -> None:
    """Make a stored rollout a child branch of the node it was sampled from (a trajectory, source rollout)."""
    from core.jobs.tree_search import expand_rollout

    store = open_store(db)
    trajectory = expand_rollout(store, rollout)
    steps = len(store.steps(trajectory))
    console.print(f"rollout {rollout} is trajectory {trajectory} ({steps} steps)", highlight=False)


@tree_app.command("show")
def show_command(
    trajectory: Annotated[int, typer.Option("--trajectory", help="the tree of this trajectory's problem")],
    policy: TreePolicy = None,
    limit: Annotated[int, typer.Option(
        min=1, help="the most nodes listed (the trajectory's path, then by visits)")] = 30,
    db: Database = None,
) -> None:
    """The tree's nodes: depth, rollouts, value with its interval, and the step text."""
    _print_tree(open_store(db), trajectory, policy, limit=limit)


def _print_tree(store, trajectory: int, policy: Optional[str], *, limit: int) -> None:
    """The trajectory's path, then the other nodes by rollouts, at most `limit` rows."""
    from core.mcpe import Counts, step_value

    row = store.get_trajectory(trajectory)
    if row is None:
        raise StepScopeError(f"trajectory {trajectory} does not exist")
    problem = row["problem_id"]
    path = store.trajectory_nodes(trajectory)
    nodes = {n["id"]: n for n in store.problem_nodes(problem)}
    counts = store.node_counts(problem, policy)
    others = sorted((i for i in nodes if i not in set(path)), key=lambda i: (-counts.get(i, (0, 0))[0], i))
    listed = [*path, *others][:limit]
    visits = store.node_visits(listed)
    table = Table("node", "parent", "depth", "rollouts", "value", "95% interval", "selected", "on path", "step")
    for node_id in listed:
        node = nodes[node_id]
        value = step_value(Counts(*counts.get(node_id, (0, 0))))
        table.add_row(
            str(node_id), str(node["parent_id"] or ""), str(node["depth"]), str(value.n),
            "—" if value.soft is None else f"{value.soft:.2f}", f"[{value.low:.2f}, {value.high:.2f}]",
            str(visits[node_id]), "yes" if node_id in path else "", escape(node["text"][:60]),
        )  # fmt: skip
    console.print(table)
    total = sum(n for n, _ in counts.values())
    console.print(f"{len(nodes)} nodes, {total} rollouts; {len(listed)} listed", highlight=False)


@tree_app.command("pairs")
def pairs_command(
    out: Annotated[Path, typer.Argument(help="JSONL file to write (prompt, chosen, rejected: TRL's DPO format)")],
    margin: Annotated[float, typer.Option(
        min=0.0, max=1.0, help="the least difference between the two steps' values")] = 0.3,
    policy: TreePolicy = None,
    dataset: Dataset = None,
    db: Database = None,
) -> None:
    """Step-level preference pairs: sibling steps whose values differ by more than the margin."""
    from core.formats.tree import export_pairs

    written = export_pairs(open_store(db), out, margin, model=policy, dataset=dataset)
    console.print(f"wrote {written} pairs to {escape(str(out))}", highlight=False)


def register(app: typer.Typer) -> None:
    app.add_typer(tree_app, name="tree")
