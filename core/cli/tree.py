"""Rollout-tree commands of the `stepscope` CLI: `tree search`, `tree expand`, `tree show`,
`tree pairs`.

`tree search` runs the same tree-search job the app queues, in the foreground; a kill leaves it
resumable with `stepscope jobs resume ID`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from core.cli.data import DB_HELP
from core.errors import StepScopeError

_console = Console()
tree_app = typer.Typer(no_args_is_help=True, help="Grow, read and export the rollout tree.")


def _store(db: Optional[Path]):
    from core.store import Store

    return Store.open(db)


@tree_app.command("search")
def search_command(
    trajectory: int = typer.Option(..., "--trajectory", help="grow the tree of this trajectory's problem (its prompt and splitter)"),
    budget: int = typer.Option(64, min=1, help="the most rollouts the job samples"),
    k: int = typer.Option(8, "--k", min=1, help="rollouts per probed or expanded node"),
    mode: str = typer.Option("omegaprm", help="omegaprm (select, binary-search, repeat) | expand (every rollout of --node, --depth levels)"),
    node: Optional[int] = typer.Option(None, help="expand: the node whose rollouts to expand (default: the question)"),
    depth: int = typer.Option(1, min=1, help="expand: how many levels deep"),
    alpha: float = typer.Option(0.5, help="OmegaPRM's alpha: weight of the value in Q"),
    beta: float = typer.Option(0.9, help="OmegaPRM's beta: the length penalty in Q"),
    length_scale: float = typer.Option(500, help="OmegaPRM's L: rollout length scale, in tokens"),
    c_puct: float = typer.Option(0.125, help="OmegaPRM's exploration weight"),
    policy: str = typer.Option("smollm2-135m", help="policy model: preset, directory or hub id"),
    engine: str = typer.Option("transformers", help="transformers | vllm | openai"),
    base_url: Optional[list[str]] = typer.Option(None, help="engine openai: server URL(s) …/v1"),
    device: str = typer.Option("auto", help="engine transformers: cpu, cuda or auto"),
    max_new_tokens: int = typer.Option(128, min=1, help="the most new tokens per rollout"),
    temperature: float = typer.Option(0.7, min=0.0, help="sampling temperature"),
    seed: int = typer.Option(0, help="search seed: the same seed grows the same tree"),
    db: Optional[Path] = typer.Option(None, "--db", help=DB_HELP),
) -> None:
    """Grow the rollout tree: OmegaPRM with a rollout budget, or expand a node N levels deep."""
    from core.cli.jobs import _engine_options, run_in_foreground
    from core.jobs.estimate import default_sampling
    from core.jobs.runner import queue
    from core.jobs.tree_search import TreeSearchSpec

    store = _store(db)
    job_id = queue(store, TreeSearchSpec(
        policy=policy, trajectory_id=trajectory, mode=mode, budget=budget, k=k, node_id=node, depth=depth,
        alpha=alpha, beta=beta, length_scale=length_scale, c_puct=c_puct, engine=engine,
        engine_options=_engine_options(engine, base_url, device),
        sampling=default_sampling(max_new_tokens, temperature, seed),
    ))  # fmt: skip
    run_in_foreground(store, job_id)
    _print_tree(store, trajectory, policy, limit=20)


@tree_app.command("expand")
def expand_command(
    rollout: int = typer.Argument(..., help="the rollout's id (tree show, or Explore's rollout table)"),
    db: Optional[Path] = typer.Option(None, "--db", help=DB_HELP),
) -> None:
    """Make a stored rollout a child branch of the node it was sampled from (a trajectory, source rollout)."""
    from core.jobs.tree_search import expand_rollout

    store = _store(db)
    trajectory = expand_rollout(store, rollout)
    steps = len(store.steps(trajectory))
    _console.print(f"rollout {rollout} is trajectory {trajectory} ({steps} steps)", highlight=False)


@tree_app.command("show")
def show_command(
    trajectory: int = typer.Option(..., "--trajectory", help="the tree of this trajectory's problem"),
    policy: Optional[str] = typer.Option(None, help="values from this policy's rollouts (default: all)"),
    limit: int = typer.Option(30, min=1, help="the most nodes listed (the trajectory's path, then by visits)"),
    db: Optional[Path] = typer.Option(None, "--db", help=DB_HELP),
) -> None:
    """The tree's nodes: depth, rollouts, value with its interval, and the step text."""
    _print_tree(_store(db), trajectory, policy, limit=limit)


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
    _console.print(table)
    total = sum(n for n, _ in counts.values())
    _console.print(f"{len(nodes)} nodes, {total} rollouts; {len(listed)} listed", highlight=False)


@tree_app.command("pairs")
def pairs_command(
    out: Path = typer.Argument(..., help="JSONL file to write (prompt, chosen, rejected: TRL's DPO format)"),
    margin: float = typer.Option(0.3, min=0.0, max=1.0, help="the least difference between the two steps' values"),
    policy: Optional[str] = typer.Option(None, help="values from this policy's rollouts (default: all)"),
    dataset: Optional[str] = typer.Option(None, help="only problems of this dataset"),
    db: Optional[Path] = typer.Option(None, "--db", help=DB_HELP),
) -> None:
    """Step-level preference pairs: sibling steps whose values differ by more than the margin."""
    from core.formats.tree import export_pairs

    written = export_pairs(_store(db), out, margin, model=policy, dataset=dataset)
    _console.print(f"wrote {written} pairs to {escape(str(out))}", highlight=False)


def register(app: typer.Typer) -> None:
    app.add_typer(tree_app, name="tree")
