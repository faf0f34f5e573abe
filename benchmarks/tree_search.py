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

Engine: every figure here is measured on the simulated reasoner, not on a language model (the
JSON says so under `engine`, at the top and in every figure set).

Definitions (the JSON repeats them):

- rollouts per probed decision (`rollouts_per_probed_decision`) = all rollouts a strategy
  sampled divided by the number of first-error decisions that needed at least one probe. A
  selected rollout with a single step left after its state is decided with no probe at all (its
  state reaches the answer, it does not, so that step is the error): the tree search makes many
  of those, and counting them as decisions at no cost made its old per-decision figure
  (`rollouts_per_label`) look cheaper than the search is. They are counted apart
  (`decisions_without_probe`); the figure with them in is kept only under
  `rollouts_per_decision_incl_unprobed`. Fixed N pays N * M; binary search k * log2(M) for M a
  power of two (the interval halves on every probe whatever the answers are); the tree search's
  rollouts start at every depth, so theirs vary. The tree's rollouts include the root's and
  those of a search the budget cut short, and a probe it finds already sampled (by an earlier
  search through the same prefix) still counts as needed.
- rollouts per labelled step (`rollouts_per_labelled_step_probed`) = all rollouts divided by
  the number of step labels the probed decisions yield: fixed N labels every step with its own
  Monte Carlo value (M labels, so exactly N per step); a first-error search labels the steps
  from where it started up to and including the error it found (the steps before are positive,
  the error negative; Lightman et al.: steps after the first error need no label).
- first_error_accuracy_probed: the fraction of probed decisions that found the true first error.

Each figure is the mean over `--repeats` independent repeats (different seeds), with the
standard deviation, minimum and maximum over repeats as the spread. Outputs:
benchmarks/results/tree_search.json, tree_search.html and tree_search.png (Altair; the PNG
needs vl-convert-python). Pure Python, about a minute on one core:

    python benchmarks/tree_search.py

A separate figure set on a real language model (`--engine transformers --model smollm2-135m`):
the whole OmegaPRM search, through the tree-search job's own sampler (core.jobs.tree_search.
PolicySampler: the policy prompt, grading against the gold answer, the line splitter), on
synthetic problems (core.synth; `--real-steps`, default 1-2 arithmetic steps: the 135M policy
rarely solves more (0 of 4 roots at 2-3 steps in a trial), and a root it never solves leaves
the search nothing to select, "pool empty"). The true first error is not known there, so only
the cost figures and the probed/unprobed split are reported, per problem and pooled, with their
spread over the problems that made a decision. Written to
benchmarks/results/tree_search_<engine>_<model>.json; the simulated file is left alone. About
6 minutes on 2 busy CPU cores:

    python benchmarks/tree_search.py --engine transformers --model smollm2-135m --real-problems 16 --tree-budget 24 --k 4 --max-new-tokens 48
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
REAL_MODEL_ARGS = ("engine", "model", "device", "real_problems", "real_steps", "max_new_tokens")  # not the simulated set's


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
    parser.add_argument("--engine", default=None, help="a real model's engine (transformers): the real-model figure set")
    parser.add_argument("--model", default="smollm2-135m", help="with --engine: the policy model")
    parser.add_argument("--device", default=None, help="with --engine transformers: cpu, cuda, auto")
    parser.add_argument("--real-problems", type=int, default=6, help="with --engine: problems, one tree search each")
    parser.add_argument("--real-steps", default="1-2", help="with --engine: synthetic problems' steps, lo-hi")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="with --engine: per rollout")
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


def tree_search(policy: SimulatedReasoner, k: int, budget: int, seed: int) -> tuple[int, dict, dict]:
    """(rollouts, probed, unprobed) for one whole OmegaPRM search: decisions, labelled steps and
    correct decisions of the decisions that needed a probe and of those that did not (a selected
    rollout with one step after its state: the binary search has nothing to probe)."""
    tree = RolloutTree()
    located: list[FirstErrorLocated] = []
    report = search(tree, policy, OmegaPRM(k=k), budget, seed=seed,
                    on_event=lambda e: located.append(e) if isinstance(e, FirstErrorLocated) else None)  # fmt: skip
    probed, unprobed = count_decisions(tree, located, SimulatedReasoner.first_error)
    return report.spent, probed, unprobed


def count_decisions(tree: RolloutTree, located: list[FirstErrorLocated], truth=None) -> tuple[dict, dict]:
    """Decisions, labelled steps and (given `truth`, a path's true first error) correct decisions,
    of the decisions that needed a probe and of those that did not."""
    kinds = {True: {"decisions": 0, "labelled_steps": 0, "correct": 0},
             False: {"decisions": 0, "labelled_steps": 0, "correct": 0}}  # fmt: skip
    for e in located:
        rollout = tree.rollout(e.key)
        kind = kinds[len(rollout.steps) > 1]  # _binary_search probes only while high - low > 1
        kind["decisions"] += 1
        kind["labelled_steps"] += e.first_error - len(e.key.prefix) + 1
        if truth is not None:
            kind["correct"] += e.first_error == truth(rollout.path)
    return kinds[True], kinds[False]


def pooled_where(problems: list[dict], keep) -> dict:
    kept = [p for p in problems if keep(p)]
    rollouts, probed = sum(p["rollouts"] for p in kept), sum(p["probed_decisions"] for p in kept)
    return {"searches": len(kept), "rollouts": rollouts, "probed_decisions": probed,
            "rollouts_per_probed_decision": ratio(rollouts, probed),
            "rollouts_per_labelled_step_probed": ratio(rollouts, sum(p["probed_labelled_steps"] for p in kept))}  # fmt: skip


def real_model(args) -> dict:
    """OmegaPRM on a real policy: one search per synthetic problem, through the job's sampler."""
    import tempfile

    from core.engines import load_engine
    from core.jobs.estimate import default_sampling
    from core.jobs.tree_search import Anchor, PolicySampler
    from core.policy import DEFAULT_TEMPLATE
    from core.store import Store
    from core.synth import REFERENCE_SOURCE, parse_steps_range, write_synth

    load_start, started = os.getloadavg(), time.perf_counter()
    engine = load_engine(args.engine, args.model, **({"device": args.device} if args.device else {}))
    load_seconds = time.perf_counter() - started
    sampling = default_sampling(max_new_tokens=args.max_new_tokens, temperature=0.7, seed=args.seed)
    steps_range = parse_steps_range(args.real_steps)
    problems = []
    with tempfile.TemporaryDirectory() as tmp:
        store = Store.open(Path(tmp) / "bench.db")
        write_synth(store, "tree-real", steps_range, args.real_problems, seed=args.seed)
        ids = [r["id"] for r in store.list_trajectories(dataset="tree-real", source=REFERENCE_SOURCE)]
        for index, trajectory_id in enumerate(ids[: args.real_problems]):
            anchor = Anchor.load(store, trajectory_id)
            sampler = PolicySampler(engine, anchor, DEFAULT_TEMPLATE, sampling)
            tree, located = RolloutTree(), []
            begun = time.perf_counter()
            report = search(tree, sampler, OmegaPRM(k=args.k), args.tree_budget, seed=args.seed * 1_000 + index,
                            on_event=lambda e: located.append(e) if isinstance(e, FirstErrorLocated) else None)  # fmt: skip
            probed, unprobed = count_decisions(tree, located)
            root = tree.counts(())
            problems.append({
                "trajectory_id": trajectory_id, "steps": len(anchor.steps), "rollouts": report.spent,
                "stopped": report.stopped, "root_correct": f"{root.correct}/{root.n}",
                "probed_decisions": probed["decisions"], "unprobed_decisions": unprobed["decisions"],
                "probed_labelled_steps": probed["labelled_steps"], "unprobed_labelled_steps": unprobed["labelled_steps"],
                "rollouts_per_probed_decision": ratio(report.spent, probed["decisions"]),
                "rollouts_per_labelled_step_probed": ratio(report.spent, probed["labelled_steps"]),
                "rollouts_per_decision_incl_unprobed": ratio(report.spent, probed["decisions"] + unprobed["decisions"]),
                "seconds": round(time.perf_counter() - begun, 1), "engine_seconds": round(sampler.engine_seconds, 1),
            })  # fmt: skip
            print(json.dumps(problems[-1]), flush=True)
    engine.close()
    total = {k: sum(p[k] for p in problems) for k in ("rollouts", "probed_decisions", "unprobed_decisions",
                                                      "probed_labelled_steps", "unprobed_labelled_steps")}  # fmt: skip
    label = (f"{args.engine} {args.model} (real language model; device {args.device or 'the engine default'}; "
             f"{os.cpu_count()} CPU cores)")  # fmt: skip
    return {
        "benchmark": "tree_search", "engine": label,
        "what": "OmegaPRM's whole search (core.tree_search.search) on a real policy through the tree-search job's "
                "sampler, one search per synthetic problem; no true first error is known, so no accuracy",
        "definitions": {
            "rollouts_per_probed_decision": "all rollouts the search sampled (root's included) / first-error "
            "decisions that needed at least one probe; pooled: sums over problems; spread: over problems that made one",
            "rollouts_per_labelled_step_probed": "all rollouts / step labels the probed decisions yielded",
            "unprobed_decisions": "decisions of a selected rollout with one step after its state (no probe), apart",
        },
        "config": {"engine": args.engine, "model": args.model, "device": args.device, "problems": args.real_problems,
                   "steps": list(steps_range), "budget_per_search": args.tree_budget, "omegaprm": OmegaPRM(k=args.k).describe(),
                   "sampling": sampling.as_manifest(), "seed": args.seed, "template": DEFAULT_TEMPLATE},  # fmt: skip
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
                    "load_average_1_5_15_start": load_start, "load_average_1_5_15_end": os.getloadavg()},  # fmt: skip
        "load_seconds": round(load_seconds, 1), "seconds": round(time.perf_counter() - started, 1),
        "pooled": {**total,
                   "rollouts_per_probed_decision": ratio(total["rollouts"], total["probed_decisions"]),
                   "rollouts_per_labelled_step_probed": ratio(total["rollouts"], total["probed_labelled_steps"]),
                   "unprobed_share_of_decisions": ratio(total["unprobed_decisions"],
                                                        total["probed_decisions"] + total["unprobed_decisions"]),
                   "rollouts_per_decision_incl_unprobed": ratio(total["rollouts"], total["probed_decisions"]
                                                                + total["unprobed_decisions"])},  # fmt: skip
        # Searches whose root the policy never solved sample k rollouts and decide nothing ("pool
        # empty"); pooled above counts their rollouts, this leaves those searches out.
        "pooled_searches_with_a_probed_decision": pooled_where(problems, lambda p: p["probed_decisions"] > 0),
        "rollouts_per_probed_decision_spread": spread_of([p["rollouts_per_probed_decision"] for p in problems]),
        "rollouts_per_labelled_step_probed_spread": spread_of([p["rollouts_per_labelled_step_probed"] for p in problems]),
        "per_problem": problems,
    }  # fmt: skip


def one_repeat(length: int, repeat: int, args) -> dict:
    """Per strategy: rollouts, decisions, labelled steps and correct decisions, summed."""
    base = (args.seed * 1_000 + repeat) * 1_000 + length
    policy = SimulatedReasoner(length, args.p)
    totals = {s: {"rollouts": 0, "decisions": 0, "labelled_steps": 0, "correct": 0,
                  "unprobed_decisions": 0, "unprobed_labelled_steps": 0, "unprobed_correct": 0} for s in STRATEGIES}  # fmt: skip
    for index in range(args.solutions):
        steps, truth = policy.wrong_solution(base * 100_000 + index)
        for name, run in (("fixed-n", lambda: fixed_n(policy, steps, args.n, base + index)),
                          ("binary-search", lambda: binary_search(policy, steps, args.k, base + index))):  # fmt: skip
            rollouts, labelled, found = run()
            total = totals[name]
            total["rollouts"] += rollouts
            # Fixed N samples every step; the binary search probes at least once for M >= 2.
            probed = name == "fixed-n" or len(steps) > 1
            prefix = "" if probed else "unprobed_"
            total[prefix + "decisions"] += 1
            total[prefix + "labelled_steps"] += labelled
            total[prefix + "correct"] += found == truth
    for problem in range(args.tree_problems):
        rollouts, probed, unprobed = tree_search(policy, args.k, args.tree_budget, base * 1_000 + problem)
        total = totals["omegaprm-tree"]
        total["rollouts"] += rollouts
        for key in ("decisions", "labelled_steps", "correct"):
            total[key] += probed[key]
            total["unprobed_" + key] += unprobed[key]
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

    figure = alt.hconcat(panel("per_decision", "rollouts per probed first-error decision"),
                         panel("per_labelled_step", "rollouts per labelled step (probed)")).properties(title=title)  # fmt: skip
    figure.save(str(html))
    try:
        figure.save(str(png), scale_factor=2)
    except Exception as error:  # noqa: BLE001 - the HTML is the chart; the PNG needs vl-convert
        return f"{type(error).__name__}: {error}"
    return None


def ratio(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator else None


def spread_of(values: list[float | None]) -> dict:
    """spread() over the repeats that have the figure (a repeat with no such decision has none)."""
    present = [v for v in values if v is not None]
    return {**spread(present), "repeats_without": len(values) - len(present)} if present else {"repeats_without": len(values)}


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.engine:
        result = real_model(args)
        out = args.out / f"tree_search_{args.engine}_{args.model}.json"
        args.out.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        print(json.dumps(result["pooled"]))
        print(f"{result['seconds']} s; load average {result['machine']['load_average_1_5_15_start']} -> "
              f"{result['machine']['load_average_1_5_15_end']}; wrote {out}")  # fmt: skip
        return 0
    lengths = [int(m) for m in args.lengths.split(",")]
    started, load_start = time.perf_counter(), os.getloadavg()
    engine = (f"simulated reasoner (no language model): tests/simulated_tree.py SimulatedReasoner, success "
              f"p={args.p} from a prefix before the first error, 0 after")  # fmt: skip
    per_decision: dict[str, dict] = {}
    per_step: dict[str, dict] = {}
    accuracy: dict[str, dict] = {}
    unprobed: dict[str, dict] = {}
    per_decision_incl: dict[str, dict] = {}
    for length in lengths:
        repeats = [one_repeat(length, r, args) for r in range(args.repeats)]
        m = str(length)
        per_decision[m], per_step[m], accuracy[m], unprobed[m], per_decision_incl[m] = {}, {}, {}, {}, {}
        for name in STRATEGIES:
            totals = [r[name] for r in repeats]
            per_decision[m][name] = spread_of([ratio(t["rollouts"], t["decisions"]) for t in totals])
            per_step[m][name] = spread_of([ratio(t["rollouts"], t["labelled_steps"]) for t in totals])
            accuracy[m][name] = spread_of([ratio(t["correct"], t["decisions"]) for t in totals])
            accuracy[m][name]["decisions"] = sum(t["decisions"] for t in totals)
            free = sum(t["unprobed_decisions"] for t in totals)
            everything = free + sum(t["decisions"] for t in totals)
            unprobed[m][name] = {
                "decisions": free, "share_of_all_decisions": ratio(free, everything),
                "labelled_steps": sum(t["unprobed_labelled_steps"] for t in totals),
                "accuracy": ratio(sum(t["unprobed_correct"] for t in totals), free),
            }  # fmt: skip
            per_decision_incl[m][name] = spread_of(
                [ratio(t["rollouts"], t["decisions"] + t["unprobed_decisions"]) for t in totals])
    seconds = time.perf_counter() - started

    def means(table):
        return {m: {s: v.get("mean") for s, v in by.items()} for m, by in table.items()}

    def figure_set(counts: str, table: dict) -> dict:
        return {"engine": engine, "counts": counts, "values": table}

    fits = {
        figure: {s: fit(lengths, [table[str(m)][s]["mean"] for m in lengths]) for s in STRATEGIES
                 if all("mean" in table[str(m)][s] for m in lengths)}
        for figure, table in (("per_probed_decision", per_decision), ("per_labelled_step_probed", per_step))
    }  # fmt: skip
    summary = {
        "benchmark": "tree_search",
        "engine": engine,
        "definitions": {
            "rollouts_per_probed_decision": "all rollouts sampled / first-error decisions that needed at least one "
            "probe (a selected rollout with a single step after its state is decided without one and is counted "
            "under decisions_without_probe instead)",
            "rollouts_per_labelled_step_probed": "all rollouts / step labels the probed decisions yielded (fixed N: "
            "every step; a first-error search: the steps from its start up to and including the error it found)",
            "first_error_accuracy_probed": "fraction of probed decisions equal to the true first error",
            "decisions_without_probe": "decisions made with no probe (one step left after the state), with their "
            "share of all decisions, the labels they yielded and their accuracy; summed over repeats",
            "rollouts_per_decision_incl_unprobed": "the old rollouts_per_label: all rollouts / all decisions, "
            "unprobed ones counted as free; kept only for comparison, not a cost of the search",
            "spread": "mean, sd, min, max over repeats (each repeat: ratio of sums over its solutions)",
        },
        "config": {**{k: v for k, v in vars(args).items() if k not in REAL_MODEL_ARGS}, "out": str(args.out), "lengths": lengths,
                   "omegaprm": OmegaPRM(k=args.k).describe(), "fixed_n": FixedN(args.n).describe()},  # fmt: skip
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
                    "load_average_1_5_15_start": load_start, "load_average_1_5_15_end": os.getloadavg()},  # fmt: skip
        "seconds": seconds,
        "rollouts_per_probed_decision": figure_set("mean over repeats, by M then strategy", means(per_decision)),
        "rollouts_per_probed_decision_spread": figure_set("by M then strategy", per_decision),
        "rollouts_per_labelled_step_probed": figure_set("mean over repeats, by M then strategy", means(per_step)),
        "rollouts_per_labelled_step_probed_spread": figure_set("by M then strategy", per_step),
        "first_error_accuracy_probed": figure_set("by M then strategy; decisions summed over repeats", accuracy),
        "decisions_without_probe": figure_set("by M then strategy; summed over repeats", unprobed),
        "rollouts_per_decision_incl_unprobed": figure_set("by M then strategy; for comparison only", per_decision_incl),
        "fits": figure_set("least squares of the probed figures' means on log2 M and on M", fits),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "tree_search.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    rows = [
        {"figure": figure, "M": int(m), "strategy": s, **{k: v for k, v in cell.items() if k != "repeats"}}
        for figure, table in (("per_decision", per_decision), ("per_labelled_step", per_step))
        for m, by in table.items() for s, cell in by.items() if "mean" in cell
    ]  # fmt: skip
    title = (f"Simulated reasoner (no language model), p={args.p} before the first error; fixed N={args.n}, "
             f"OmegaPRM k={args.k}; probed decisions only; {args.repeats} repeats (bars: min-max)")  # fmt: skip
    problem = chart(rows, title, args.out / "tree_search.html", args.out / "tree_search.png")

    print(f"engine: {engine}")
    print(f"{'M':>3}  {'strategy':<14} {'per probed decision':>20} {'per labelled step':>18} {'accuracy':>9}"
          f" {'unprobed':>9}")  # fmt: skip
    for m in lengths:
        for s in STRATEGIES:
            d, st, a, u = per_decision[str(m)][s], per_step[str(m)][s], accuracy[str(m)][s], unprobed[str(m)][s]
            print(f"{m:>3}  {s:<14} {d.get('mean', float('nan')):>14.2f} ±{d.get('sd', 0):<5.2f}"
                  f" {st.get('mean', float('nan')):>11.2f} ±{st.get('sd', 0):<5.2f} {a.get('mean', float('nan')):>9.3f}"
                  f" {u['decisions']:>9}")  # fmt: skip
    for figure, by in fits.items():
        for s, f in by.items():
            print(f"fit {figure:<24} {s:<14} vs log2 M: slope {f['log2_M']['slope']:7.2f} R2 {f['log2_M']['r2']:.3f}"
                  f"   vs M: slope {f['M']['slope']:6.2f} R2 {f['M']['r2']:.3f}")  # fmt: skip
    print(f"{seconds:.1f} s; load average {load_start} -> {os.getloadavg()}")
    print(f"wrote {args.out / 'tree_search.json'}" + (f"; PNG not written ({problem})" if problem else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
