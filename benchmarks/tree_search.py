"""Rollouts spent per label, by solution length M: OmegaPRM's binary search vs per-step fixed N.

On the simulated multi-step policy (tests/simulated_tree.py: a prefix before the first error
reaches the answer with probability p, after it never), for M = 2, 4, ..., 32:

- fixed-n (Math-Shepherd, core.mcpe.FixedN): N rollouts at every step prefix of a wrong-answer
  solution; the first error is the first step none of whose rollouts succeeds;
- binary-search (OmegaPRM's divide step, core.tree_search.locate_first_error): the same
  solutions, k rollouts per probed prefix, the question known solvable and the whole solution
  known wrong (so neither is sampled);
- omegaprm-tree (core.tree_search.search): the whole algorithm on fresh problems with a rollout
  budget: root rollouts, Q + U selection, binary searches of rollouts from every depth. Its
  rollouts include the root's and those of a search the budget cut short.

Definitions (the JSON repeats them):

- rollouts per label (`rollouts_per_label`) = rollouts per first-error decision: all rollouts
  a strategy sampled divided by the number of solutions whose first error it decided. Fixed N
  pays N * M; binary search k * log2(M) for M a power of two (the interval halves on every probe
  whatever the answers are); the tree search's rollouts start at every depth, so theirs vary.
- rollouts per labelled step (`rollouts_per_labelled_step`) = all rollouts divided by the
  number of step labels the decisions yield: fixed N labels every step with its own Monte Carlo
  value (M labels, so exactly N per step); a first-error search labels the steps from where it
  started up to and including the error it found (the steps before are positive, the error
  negative; Lightman et al.: steps after the first error need no label).
- first_error_accuracy: the fraction of decisions that found the true first error.

Each figure is the mean over `--repeats` independent repeats (different seeds), with the
standard deviation, minimum and maximum over repeats as the spread. Outputs:
benchmarks/results/tree_search.json, tree_search.html and tree_search.png (Altair; the PNG
needs vl-convert-python). Pure Python, about a minute on one core:

    python benchmarks/tree_search.py
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from core.mcpe import Counts, FixedN, first_error  # noqa: E402
from core.tree_search import (  # noqa: E402
    FirstErrorLocated,
    OmegaPRM,
    Rollout,
    RolloutKey,
    RolloutsSampled,
    RolloutTree,
    locate_first_error,
    search,
)
from simulated_tree import SimulatedReasoner  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
STRATEGIES = ("fixed-n", "binary-search", "omegaprm-tree")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", default="2,4,8,16,32", help="solution lengths M")
    parser.add_argument("--p", type=float, default=0.5, help="success probability before the first error")
    parser.add_argument("--n", type=int, default=8, help="fixed N: rollouts per step")
    parser.add_argument("--k", type=int, default=8, help="OmegaPRM: rollouts per probed prefix")
    parser.add_argument("--solutions", type=int, default=200, help="wrong solutions per M per repeat")
    parser.add_argument("--tree-problems", type=int, default=50, help="tree searches per M per repeat")
    parser.add_argument("--tree-budget", type=int, default=400, help="rollout budget per tree search")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    return parser.parse_args(argv)


def fixed_n(policy: SimulatedReasoner, steps, n: int, seed: int) -> tuple[int, int, int]:
    """(rollouts, labelled steps, first error found) for Math-Shepherd on one solution."""
    need = FixedN(n).request([Counts()] * len(steps))
    counts = []
    for index, count in enumerate(need):
        rollouts = policy(tuple(steps[: index + 1]), count, seed * 1000 + index)
        counts.append(Counts(count, sum(r.correct for r in rollouts)))
    return sum(need), len(steps), first_error(counts)


def binary_search(policy: SimulatedReasoner, steps, k: int, seed: int) -> tuple[int, int, int]:
    key = RolloutKey((), 0)
    tree = RolloutTree()
    tree.apply(RolloutsSampled((), (Rollout(key, tuple(steps), False, 0),), seed=0))
    found, report = locate_first_error(tree, policy, key, k, budget=10**9, seed=seed)
    return report.spent, found + 1, found


def tree_search(policy: SimulatedReasoner, k: int, budget: int, seed: int) -> tuple[int, int, int, int]:
    """(rollouts, decisions, labelled steps, correct decisions) for one whole OmegaPRM search."""
    tree = RolloutTree()
    located: list[FirstErrorLocated] = []
    report = search(tree, policy, OmegaPRM(k=k), budget, seed=seed,
                    on_event=lambda e: located.append(e) if isinstance(e, FirstErrorLocated) else None)  # fmt: skip
    labelled = sum(e.first_error - len(e.key.prefix) + 1 for e in located)
    correct = sum(e.first_error == SimulatedReasoner.first_error(tree.rollout(e.key).path) for e in located)
    return report.spent, len(located), labelled, correct


def one_repeat(length: int, repeat: int, args) -> dict:
    """Per strategy: rollouts, decisions, labelled steps and correct decisions, summed."""
    base = (args.seed * 1_000 + repeat) * 1_000 + length
    policy = SimulatedReasoner(length, args.p)
    totals = {s: {"rollouts": 0, "decisions": 0, "labelled_steps": 0, "correct": 0} for s in STRATEGIES}
    for index in range(args.solutions):
        steps, truth = policy.wrong_solution(base * 100_000 + index)
        for name, run in (("fixed-n", lambda: fixed_n(policy, steps, args.n, base + index)),
                          ("binary-search", lambda: binary_search(policy, steps, args.k, base + index))):  # fmt: skip
            rollouts, labelled, found = run()
            total = totals[name]
            total["rollouts"] += rollouts
            total["decisions"] += 1
            total["labelled_steps"] += labelled
            total["correct"] += found == truth
    for problem in range(args.tree_problems):
        rollouts, decisions, labelled, correct = tree_search(policy, args.k, args.tree_budget, base * 1_000 + problem)
        total = totals["omegaprm-tree"]
        total["rollouts"] += rollouts
        total["decisions"] += decisions
        total["labelled_steps"] += labelled
        total["correct"] += correct
    return totals


def spread(values: list[float]) -> dict:
    return {
        "mean": statistics.fmean(values), "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
        "min": min(values), "max": max(values), "repeats": values,
    }  # fmt: skip


def fit(lengths: list[int], values: list[float]) -> dict:
    """Least squares of the figure on log2 M and on M, with R^2 of each."""
    result = {}
    y = np.asarray(values, dtype=float)
    for name, x in (("log2_M", np.log2(lengths)), ("M", np.asarray(lengths, dtype=float))):
        slope, intercept = np.polyfit(x, y, 1)
        residual = y - (slope * x + intercept)
        total = ((y - y.mean()) ** 2).sum()
        result[name] = {"slope": float(slope), "intercept": float(intercept),
                        "r2": float(1 - (residual**2).sum() / total) if total > 0 else 1.0}  # fmt: skip
    return result


def chart(rows: list[dict], title: str, html: Path, png: Path) -> str | None:
    """Two panels (per decision, per labelled step), log2 M on x, linear y, min-max over repeats
    as bars."""
    import altair as alt

    def panel(figure: str, y_title: str):
        data = [r for r in rows if r["figure"] == figure]
        base = alt.Chart(alt.Data(values=data)).encode(
            x=alt.X("M:Q", scale=alt.Scale(type="log", base=2), title="solution length M (steps)",
                    axis=alt.Axis(values=sorted({r["M"] for r in rows}))),
            color=alt.Color("strategy:N", sort=list(STRATEGIES), legend=alt.Legend(orient="bottom", title=None)),
        )  # fmt: skip
        lines = base.mark_line(point=True).encode(
            y=alt.Y("mean:Q", title=y_title),  # linear: k log2 M is then a straight line on the log2 axis
            tooltip=["strategy:N", "M:Q", alt.Tooltip("mean:Q", format=".2f"), alt.Tooltip("sd:Q", format=".2f")],
        )  # fmt: skip
        bars = base.mark_rule().encode(y="min:Q", y2="max:Q")
        return (bars + lines).properties(width=340, height=300, title=y_title)

    figure = alt.hconcat(panel("per_decision", "rollouts per first-error decision"),
                         panel("per_labelled_step", "rollouts per labelled step")).properties(title=title)  # fmt: skip
    figure.save(str(html))
    try:
        figure.save(str(png), scale_factor=2)
    except Exception as error:  # noqa: BLE001 - the HTML is the chart; the PNG needs vl-convert
        return f"{type(error).__name__}: {error}"
    return None


def main(argv=None) -> int:
    args = parse_args(argv)
    lengths = [int(m) for m in args.lengths.split(",")]
    started, load_start = time.perf_counter(), os.getloadavg()
    per_decision: dict[str, dict] = {}
    per_step: dict[str, dict] = {}
    accuracy: dict[str, dict] = {}
    for length in lengths:
        repeats = [one_repeat(length, r, args) for r in range(args.repeats)]
        per_decision[str(length)], per_step[str(length)], accuracy[str(length)] = {}, {}, {}
        for name in STRATEGIES:
            totals = [r[name] for r in repeats]
            per_decision[str(length)][name] = spread([t["rollouts"] / t["decisions"] for t in totals])
            per_step[str(length)][name] = spread([t["rollouts"] / t["labelled_steps"] for t in totals])
            accuracy[str(length)][name] = spread([t["correct"] / t["decisions"] for t in totals])
            accuracy[str(length)][name]["decisions"] = sum(t["decisions"] for t in totals)
    seconds = time.perf_counter() - started

    def means(table):
        return {m: {s: v["mean"] for s, v in by.items()} for m, by in table.items()}

    fits = {
        figure: {s: fit(lengths, [table[str(m)][s]["mean"] for m in lengths]) for s in STRATEGIES}
        for figure, table in (("per_decision", per_decision), ("per_labelled_step", per_step))
    }
    summary = {
        "benchmark": "tree_search",
        "definitions": {
            "rollouts_per_label": "rollouts per first-error decision: all rollouts sampled / solutions whose "
            "first error was decided",
            "rollouts_per_labelled_step": "all rollouts / step labels yielded (fixed N: every step; a first-error "
            "search: the steps from its start up to and including the error it found)",
            "first_error_accuracy": "fraction of decisions equal to the true first error",
            "spread": "mean, sd, min, max over repeats (each repeat: ratio of sums over its solutions)",
        },
        "config": {**vars(args), "out": str(args.out), "lengths": lengths,
                   "omegaprm": OmegaPRM(k=args.k).describe(), "fixed_n": FixedN(args.n).describe()},  # fmt: skip
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
                    "load_average_1_5_15_start": load_start, "load_average_1_5_15_end": os.getloadavg()},  # fmt: skip
        "seconds": seconds,
        "rollouts_per_label": means(per_decision),
        "rollouts_per_label_spread": per_decision,
        "rollouts_per_labelled_step": means(per_step),
        "rollouts_per_labelled_step_spread": per_step,
        "first_error_accuracy": accuracy,
        "fits": fits,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "tree_search.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    rows = [
        {"figure": figure, "M": int(m), "strategy": s, **{k: v for k, v in cell.items() if k != "repeats"}}
        for figure, table in (("per_decision", per_decision), ("per_labelled_step", per_step))
        for m, by in table.items() for s, cell in by.items()
    ]  # fmt: skip
    title = (f"Simulated policy, p={args.p} before the first error; fixed N={args.n}, OmegaPRM k={args.k}; "
             f"{args.repeats} repeats (bars: min-max)")  # fmt: skip
    problem = chart(rows, title, args.out / "tree_search.html", args.out / "tree_search.png")

    print(f"{'M':>3}  {'strategy':<14} {'per decision':>14} {'per labelled step':>18} {'accuracy':>9}")
    for m in lengths:
        for s in STRATEGIES:
            d, st, a = per_decision[str(m)][s], per_step[str(m)][s], accuracy[str(m)][s]
            print(f"{m:>3}  {s:<14} {d['mean']:>8.2f} ±{d['sd']:<5.2f} {st['mean']:>11.2f} ±{st['sd']:<5.2f}"
                  f" {a['mean']:>9.3f}")  # fmt: skip
    for figure, by in fits.items():
        for s, f in by.items():
            print(f"fit {figure:<18} {s:<14} vs log2 M: slope {f['log2_M']['slope']:7.2f} R2 {f['log2_M']['r2']:.3f}"
                  f"   vs M: slope {f['M']['slope']:6.2f} R2 {f['M']['r2']:.3f}")  # fmt: skip
    print(f"{seconds:.1f} s; load average {load_start} -> {os.getloadavg()}")
    print(f"wrote {args.out / 'tree_search.json'}" + (f"; PNG not written ({problem})" if problem else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
