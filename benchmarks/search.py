"""Step-level search with a verifier in the loop (issue 25): accuracy against generated tokens.

Held-out synthetic problems (core.synth, the test split; 2-4 arithmetic steps by default) are
searched by every strategy (bon, beam, dvts, mcts, reject) with every scorer (random, mc:K,
self-judge, a PRM trained here) at every budget, each cell one `search` job queued and run the
way `stepscope search` runs it (core.jobs.runner: queue, claim, run_job on one loaded engine),
so every figure comes from the real job's stored searches and ComputeRecord.

Budget B sets each strategy's own size parameter (the JSON's `grid.params_by_strategy` says
exactly): bon n = B samples; beam n = B beams, width M; dvts n = B (B / M subtrees); mcts
expansions = B, width M; reject n = max(1, B / 2) chains, up to R resamples a step. What a cell
really generated is measured, not assumed: `policy_tokens` (the policy's sampled tokens per
problem, from the job's ComputeRecord) and `generated_tokens` (those plus what the scorer
generated: MC rollouts), each a mean over problems with a bootstrap interval.

Figures (all intervals 95%, over problems):

- `accuracy_vs_tokens[strategy][scorer]`: one row per budget: accuracy (the search's answer
  graded against the gold; Wilson interval), policy and generated tokens per problem.
- `guided_over_bon_at_equal_tokens`: for every step-level cell (beam, dvts, mcts, reject), its
  accuracy minus weighted best-of-N's with the same scorer at the bon budget whose policy tokens
  per problem are nearest (the token ratio is reported), paired over problems (bootstrap of the
  per-problem difference). The headline per scorer is the step-level cell of highest accuracy
  (chosen after seeing the results: the interval does not account for that choice).
- `random_scorer_over_sampling`: a random-scored search's accuracy over plain sampling's
  (pass@1 = the share of correct solutions among bon's samples at the same budget), paired
  ratio-of-means bootstrap; it should be about 1.
- `references`: bon's samples as pass@1, pass@B (any sample correct) and unweighted majority
  vote, per budget.
- `orchestration_overhead_fraction`: (total - engine - scorer seconds) / total, from each
  search job's ComputeRecord (median and max over jobs, and over single searches); and
  `job_wall_overhead_fraction`: the same with the wall time of run_job (storing included).

The `mc:K` scorer grades K rollouts against the gold answer: it is a labelling-time reference
(an oracle-like upper line), not a deployable verifier; on a finished solution it is the grade
itself, so bon + mc is close to pass@n.

The defaults are the issue's full grid (>= 100 problems, 5 strategies x 4 scorers x 3 budgets,
SmolLM2-135M on transformers, CPU): days of CPU on a busy 2-core machine. Flags shrink it; the
JSON always records the grid it ran (`grid`, `problems`) and `complete` (whether that met the
issue's grid), and it is rewritten after every cell, so a run cut short by `timeout` leaves the
cells it finished (`finished: false`). A small real run:

    timeout 1800 python benchmarks/search.py --problems 12 --strategies bon,beam --scorers random,mc:4 --budgets 4

The PRM: with `prm` among the scorers and no `--prm FOLDER`, one is trained here first, on the
train split: the policy's own solutions to train-split problems (generate), their MC labels
(estimate, first-error search), then train-prm (mc-hard) on them, evaluated on test-split
problems that are not among the benchmark's (so the searched problems stay unseen). It is used
as the search job's `prm:FOLDER` scorer.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.grading import answers_equal  # noqa: E402
from core.jobs.runner import EngineCache, claim_job, queue, run_job  # noqa: E402
from core.mcpe import Counts, wilson_interval  # noqa: E402
from core.metrics import bootstrap  # noqa: E402
from core.search.compute import ComputeRecord  # noqa: E402
from core.search.config import STRATEGY_NAMES, SearchConfig  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
STEP_LEVEL = ("beam", "dvts", "mcts", "reject")
# What issue 25 asks of the benchmark; `complete` says whether a run met all of it.
FULL_GRID = {"problems": 100, "steps": (2, 4), "strategies": STRATEGY_NAMES,
             "scorers": ("mc", "self-judge", "prm", "random"), "min_mc_rollouts": 4, "budgets": 3,
             "model": "smollm2-135m"}  # fmt: skip
DEFAULT_SCORERS = "mc:4,self-judge,prm,random"
RESAMPLES = 1000


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=FULL_GRID["problems"], help="held-out (test split) problems")
    parser.add_argument("--steps", default="2-4", help="synthetic problems' steps, lo-hi")
    parser.add_argument("--strategies", default=",".join(STRATEGY_NAMES))
    parser.add_argument("--scorers", default=DEFAULT_SCORERS, help="random[:SEED], mc[:K], self-judge, prm")
    parser.add_argument("--budgets", default="4,8,16", help="budget levels B (see the module's text)")
    parser.add_argument("--width", type=int, default=4, help="M: beam width (beam, dvts, mcts)")
    parser.add_argument("--max-resamples", type=int, default=3, help="reject: R")
    parser.add_argument("--threshold", type=float, default=0.5, help="reject: resample a step scored under it")
    parser.add_argument("--max-steps", type=int, default=8)
    parser.add_argument("--max-step-tokens", type=int, default=64)
    parser.add_argument("--max-solution-tokens", type=int, default=256)
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--step-delimiter", default="\n", help="what ends a step ('\\n'; a tiny random model needs another)")
    parser.add_argument("--engine", default="transformers")
    parser.add_argument("--model", default=FULL_GRID["model"], help="policy: a preset or a model folder")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--prm", default=None, help="a PRM folder to use as the prm scorer (else one is trained here)")
    parser.add_argument("--prm-train-problems", type=int, default=100, help="train-split problems the PRM learns from")
    parser.add_argument("--prm-eval-problems", type=int, default=20, help="test-split problems (not searched) it is evaluated on")
    parser.add_argument("--prm-k", type=int, default=4, help="policy solutions per PRM problem")
    parser.add_argument("--prm-rollouts", type=int, default=4, help="MC labels: rollouts per probed step (first-error)")
    parser.add_argument("--prm-epochs", type=float, default=2.0)
    parser.add_argument("--prm-with-reference", action=argparse.BooleanOptionalAction, default=True,
                        help="the PRM also learns from core.synth's (correct) reference solutions of its problems")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--db", type=Path, default=None, help="keep the store here (default: a temporary file)")
    parser.add_argument("--out", type=Path, default=RESULTS / "search.json")
    parser.add_argument("--note", default="", help="what this run does and does not show, kept in the JSON")
    args = parser.parse_args(argv)
    args.step_delimiter = args.step_delimiter.encode().decode("unicode_escape")
    return args


# -- the grid ---------------------------------------------------------------------------------


def scorer_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def strategy_config(strategy: str, budget: int, args) -> SearchConfig:
    """The search at budget level B (the module's text); width M is cut to a divisor of B."""
    width = math.gcd(budget, args.width) if strategy in ("beam", "dvts") else min(args.width, budget)
    size = {"bon": {"n": budget}, "beam": {"n": budget, "beam_width": width},
            "dvts": {"n": budget, "beam_width": width}, "mcts": {"expansions": budget, "beam_width": width},
            "reject": {"n": max(1, budget // 2), "max_resamples": args.max_resamples, "threshold": args.threshold}}[strategy]  # fmt: skip
    return SearchConfig(strategy=strategy, max_steps=args.max_steps, temperature=args.temperature, seed=args.seed,
                        step_delimiter=args.step_delimiter, max_step_tokens=args.max_step_tokens,
                        max_solution_tokens=args.max_solution_tokens, **size)  # fmt: skip


def params_by_strategy(budgets: list[int], strategies: list[str], args) -> dict:
    keys = ("n", "beam_width", "expansions", "max_resamples", "threshold")
    return {s: {str(b): {k: getattr(strategy_config(s, b, args), k) for k in keys} for b in budgets} for s in strategies}


def completeness(args, strategies: list[str], scorers: list[str], budgets: list[int], steps: tuple[int, int]) -> tuple[bool, list[str]]:
    """Whether the run met the issue's grid, and what it lacks."""
    lacks = []
    if args.problems < FULL_GRID["problems"]:
        lacks.append(f"{args.problems} problems, not >= {FULL_GRID['problems']}")
    if steps != FULL_GRID["steps"]:
        lacks.append(f"steps {steps[0]}-{steps[1]}, not 2-4")
    for strategy in FULL_GRID["strategies"]:
        if strategy not in strategies:
            lacks.append(f"strategy {strategy}")
    names = {s.partition(":")[0] for s in scorers}
    for scorer in FULL_GRID["scorers"]:
        if scorer not in names:
            lacks.append(f"scorer {scorer}")
    for scorer in scorers:
        name, _, k = scorer.partition(":")
        if name == "mc" and int(k or 4) < FULL_GRID["min_mc_rollouts"]:
            lacks.append(f"scorer {scorer}: k < {FULL_GRID['min_mc_rollouts']}")
    if len(budgets) < FULL_GRID["budgets"]:
        lacks.append(f"{len(budgets)} budgets, not >= {FULL_GRID['budgets']}")
    if args.model != FULL_GRID["model"]:
        lacks.append(f"policy {args.model}, not the embedded {FULL_GRID['model']}")
    return not lacks, lacks


# -- statistics -------------------------------------------------------------------------------


def wilson(correct: list[bool]) -> dict:
    hits, n = int(sum(correct)), len(correct)
    low, high = wilson_interval(Counts(n, hits))
    share = hits / n if n else None
    if share is not None:  # at 0 of n (or n of n) the formula's end is the share up to rounding (5e-17)
        low, high = min(low, share), max(high, share)
    return {"correct": hits, "problems": n, "accuracy": share, "low": low, "high": high,
            "interval": "Wilson 95% over problems"}  # fmt: skip


def mean_with_interval(values: list[float], seed: int) -> dict:
    array = np.asarray(values, dtype=float)
    interval = bootstrap(lambda idx: float(array[idx].mean()) if len(idx) else None, len(array),
                         n_resamples=RESAMPLES, seed=seed)  # fmt: skip
    return {"mean": interval.value, "low": interval.low, "high": interval.high}


def paired_difference(a: list[float], b: list[float], seed: int) -> dict:
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    interval = bootstrap(lambda idx: float((x[idx] - y[idx]).mean()) if len(idx) else None, len(x),
                         n_resamples=RESAMPLES, seed=seed)  # fmt: skip
    return {"difference": interval.value, "low": interval.low, "high": interval.high,
            "interval": "paired bootstrap over problems, 95%"}  # fmt: skip


def paired_ratio(a: list[float], b: list[float], seed: int) -> dict:
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)

    def ratio(idx):
        denominator = y[idx].mean() if len(idx) else 0.0
        return float(x[idx].mean() / denominator) if denominator > 0 else None

    interval = bootstrap(ratio, len(x), n_resamples=RESAMPLES, seed=seed)
    return {"ratio": interval.value, "low": interval.low, "high": interval.high,
            "numerator": float(x.mean()) if len(x) else None, "denominator": float(y.mean()) if len(y) else None,
            "interval": "paired bootstrap of the ratio of means over problems, 95% (resamples with a zero denominator skipped)"}  # fmt: skip


def majority(answers: list[str | None]) -> str | None:
    groups: list[list] = []  # [answer, votes], first seen first
    for answer in answers:
        if answer is None:
            continue
        for group in groups:
            if answers_equal(answer, group[0]):
                group[1] += 1
                break
        else:
            groups.append([answer, 1])
    return max(groups, key=lambda g: g[1])[0] if groups else None  # ties: the first seen


def fraction(part: float, whole: float) -> float | None:
    return part / whole if whole else None


# -- running jobs -----------------------------------------------------------------------------


def run_spec(store, engines: EngineCache, spec) -> tuple[int, float]:
    """Queue the spec and run it as `stepscope search` runs a job; returns (job id, wall seconds)."""
    job_id = queue(store, spec)
    job = claim_job(store, job_id, stale_after=0)
    started = time.perf_counter()
    status = run_job(store, job, engines)
    wall = time.perf_counter() - started
    if status != "done":
        raise RuntimeError(f"job {job_id} ({spec.kind}) {status}: {store.get_job(job_id)['error']}")
    return job_id, wall


def engine_fields(args) -> dict:
    return {"engine": args.engine, "engine_options": {"device": args.device} if args.device else {}}


def train_prm_here(store, engines: EngineCache, args, train_ids: list[int], eval_ids: list[int], folder: Path) -> dict:
    """The policy's solutions to the PRM problems, their MC labels, a PRM trained on them."""
    from core.jobs.estimate import EstimateSpec, default_sampling
    from core.jobs.generate import GENERATED_SOURCE, GenerateSpec
    from core.jobs.train_prm import TrainPrmSpec
    from core.mcpe import FirstErrorSearch
    from core.synth import REFERENCE_SOURCE

    started = time.perf_counter()
    sampling = default_sampling(max_new_tokens=args.max_solution_tokens, temperature=args.temperature, seed=args.seed)
    problem_ids = tuple(train_ids + eval_ids)
    generate_job, _ = run_spec(store, engines, GenerateSpec(policy=args.model, problem_ids=problem_ids, k=args.prm_k,
                                                            sampling=sampling, **engine_fields(args)))  # fmt: skip
    wanted = set(problem_ids)
    policy_solutions = tuple(t["id"] for t in store.list_trajectories(dataset="search-bench", source=GENERATED_SOURCE)
                             if t["problem_id"] in wanted)  # fmt: skip
    # core.synth's reference solutions of the same problems: correct, so their MC labels are implied
    # by the outcome (every step reachable) with no rollout; the 135M policy rarely solves 2-4 steps,
    # and without them its own solutions may give one class only.
    references = tuple(t["id"] for t in store.list_trajectories(dataset="search-bench", source=REFERENCE_SOURCE)
                       if t["problem_id"] in wanted) if args.prm_with_reference else ()  # fmt: skip
    trajectories = policy_solutions + references
    estimate_job, _ = run_spec(store, engines, EstimateSpec(
        policy=args.model, trajectory_ids=trajectories, strategy=FirstErrorSearch(max_per_step=args.prm_rollouts),
        sampling=default_sampling(max_new_tokens=args.max_solution_tokens, temperature=args.temperature,
                                  seed=args.seed), **engine_fields(args)))  # fmt: skip
    engines.drop()  # training loads the base for itself, with gradients
    train_job, _ = run_spec(store, engines, TrainPrmSpec(base=args.model, labels="mc-hard", trajectory_ids=trajectories,
                                                         output=str(folder), epochs=args.prm_epochs, seed=args.seed,
                                                         **engine_fields(args)))  # fmt: skip
    engines.drop()
    manifest = store.get_job(train_job)["manifest"]
    correct = sum(1 for t in store.list_trajectories(dataset="search-bench", source=GENERATED_SOURCE)
                  if t["id"] in set(policy_solutions) and t["correct"])  # fmt: skip
    return {"folder": str(folder), "labels": "mc-hard (first-error search, implied labels included)",
            "train_problems": len(train_ids), "eval_problems_not_searched": len(eval_ids),
            "policy_solutions": len(policy_solutions), "policy_solutions_correct": correct,
            "reference_solutions": len(references), "jobs": [generate_job, estimate_job, train_job],
            "split": {f"{side}_{unit}": len(split.get(f"{side}_{unit}", [])) for side in ("train", "test") for unit in ("problems", "trajectories")}
            if (split := manifest.get("split")) else None,
            "training": {k: manifest.get(k) for k in ("label_provenance", "heldout_warning", "kept_fraction")},
            "heldout_metrics": (json.loads((folder / "manifest.json").read_text()).get("metrics") if (folder / "manifest.json").is_file() else None),
            "seconds": round(time.perf_counter() - started, 1)}  # fmt: skip


def cell_figures(store, job_id: int, wall: float, problem_ids: list[int], seed: int) -> dict:
    """One search job's figures, per problem in the order of `problem_ids`."""
    searches = {s["problem_id"]: s for s in store.job_searches(job_id)}
    rows = []
    for problem_id in problem_ids:
        search = searches[problem_id]
        compute = ComputeRecord.from_manifest(search["compute"])
        beams = store.search_beams(search["id"])
        rows.append({"problem_id": problem_id, "correct": bool(search["correct"]), "answer": search["answer"],
                     "stopped": search["stopped"], "policy_tokens": compute.policy_tokens,
                     "generated_tokens": compute.policy_tokens + compute.verifier_generated_tokens,
                     "verifier_tokens": compute.verifier_tokens, "engine_seconds": compute.engine_seconds,
                     "scorer_seconds": compute.scorer_seconds, "total_seconds": compute.total_seconds,
                     "beams": [{"answer": b["final_answer"], "correct": bool(b["correct"])} for b in beams]})  # fmt: skip
    job = ComputeRecord.from_manifest(store.get_job(job_id)["compute"])
    overhead = fraction(job.total_seconds - job.engine_seconds - job.scorer_seconds, job.total_seconds)
    per_search = [fraction(r["total_seconds"] - r["engine_seconds"] - r["scorer_seconds"], r["total_seconds"]) for r in rows]
    return {
        "job_id": job_id, **wilson([r["correct"] for r in rows]),
        "policy_tokens": mean_with_interval([r["policy_tokens"] for r in rows], seed),
        "generated_tokens": mean_with_interval([r["generated_tokens"] for r in rows], seed),
        "verifier_tokens_read": statistics.fmean(r["verifier_tokens"] for r in rows),
        "job_compute": job.as_manifest(), "job_wall_seconds": wall,
        "seconds_per_problem": wall / len(rows),
        "orchestration_overhead_fraction": overhead,
        "search_overhead_fractions": [f for f in per_search if f is not None],
        "job_wall_overhead_fraction": fraction(wall - job.engine_seconds - job.scorer_seconds, wall),
        "stopped": {reason: sum(r["stopped"] == reason for r in rows) for reason in {r["stopped"] for r in rows}},
        "per_problem": rows,
    }  # fmt: skip


# -- figures from the cells -------------------------------------------------------------------


def correct_vector(cell: dict) -> list[float]:
    return [float(r["correct"]) for r in cell["per_problem"]]


def sampling_vectors(cells: dict, budget: str) -> dict | None:
    """Plain sampling from bon's samples at `budget` (any scorer's bon: its samples are the
    same, the scorer only weighs them): per problem pass@1, pass@B and majority vote."""
    bons = [cells[("bon", scorer, budget)] for (s, scorer, b) in cells if s == "bon" and b == budget]
    if not bons:
        return None
    pass1, pass_any, vote = [], [], []
    for row in bons[0]["per_problem"]:
        beams = row["beams"]
        pass1.append(fraction(sum(b["correct"] for b in beams), len(beams)) or 0.0)
        pass_any.append(float(any(b["correct"] for b in beams)))
        answer = majority([b["answer"] for b in beams])
        vote.append(float(any(b["correct"] and b["answer"] is not None and answers_equal(b["answer"], answer)
                              for b in beams) if answer is not None else False))  # fmt: skip
    return {"pass@1": pass1, "pass@B": pass_any, "majority_vote": vote, "from_job": bons[0]["job_id"]}


def summarise(cells: dict, strategies, scorers, budgets, seed: int) -> dict:
    accuracy: dict = {}
    for (strategy, scorer, budget), cell in cells.items():
        accuracy.setdefault(strategy, {}).setdefault(scorer, []).append({
            "budget": int(budget), **{k: cell[k] for k in ("job_id", "correct", "problems", "accuracy", "low", "high",
                                                           "policy_tokens", "generated_tokens", "verifier_tokens_read",
                                                           "seconds_per_problem", "stopped")}})  # fmt: skip

    references = {}
    for budget in budgets:
        vectors = sampling_vectors(cells, str(budget))
        if vectors is not None:
            references[str(budget)] = {name: mean_with_interval(vectors[name], seed) for name in ("pass@1", "pass@B", "majority_vote")}
            references[str(budget)]["from_job"] = vectors["from_job"]

    # Guided (step-level) vs weighted best-of-N with the same scorer at the nearest policy tokens.
    pairs = []
    for (strategy, scorer, budget), cell in cells.items():
        if strategy not in STEP_LEVEL:
            continue
        bons = [(b, c) for (s, sc, b), c in cells.items() if s == "bon" and sc == scorer]
        if not bons:
            continue
        tokens = cell["policy_tokens"]["mean"] or 0.0
        bon_budget, bon = min(bons, key=lambda item: abs(math.log((item[1]["policy_tokens"]["mean"] or 1e-9) / (tokens or 1e-9))))
        pairs.append({"strategy": strategy, "scorer": scorer, "budget": int(budget), "accuracy": cell["accuracy"],
                      "bon_budget": int(bon_budget), "bon_accuracy": bon["accuracy"],
                      "policy_tokens": tokens, "bon_policy_tokens": bon["policy_tokens"]["mean"],
                      "token_ratio": fraction(tokens, bon["policy_tokens"]["mean"]),
                      **paired_difference(correct_vector(cell), correct_vector(bon), seed)})  # fmt: skip
    headline = {}
    for scorer in scorers:
        mine = [p for p in pairs if p["scorer"] == scorer]
        if mine:
            headline[scorer] = max(mine, key=lambda p: (p["accuracy"], -p["policy_tokens"]))
    guided = {
        "definition": "accuracy(step-level search) - accuracy(weighted best-of-N, same scorer, the bon budget whose "
                      "policy tokens per problem are nearest); headline per scorer: the step-level cell of highest "
                      "accuracy, chosen after seeing the results (its interval does not account for the choice)",
        "headline_by_scorer": headline, "all_pairs": pairs,
    }  # fmt: skip
    if not pairs:
        guided["missing"] = "needs bon and a step-level strategy with the same scorer"

    # Random scorer vs plain sampling, per strategy and budget, and pooled.
    ratios, pooled_num, pooled_den = {}, [], []
    random_scorers = [s for s in scorers if s.partition(":")[0] == "random"]
    for (strategy, scorer, budget), cell in cells.items():
        if scorer not in random_scorers:
            continue
        vectors = sampling_vectors(cells, budget)
        if vectors is None:
            continue
        ratios.setdefault(strategy, {})[budget] = paired_ratio(correct_vector(cell), vectors["pass@1"], seed)
        pooled_num.append(correct_vector(cell))
        pooled_den.append(vectors["pass@1"])
    random_over = {"definition": "accuracy with the random scorer / plain sampling's pass@1 (bon's samples at the "
                                 "same budget), paired over problems; should be about 1", "by_strategy": ratios}  # fmt: skip
    if pooled_num:
        # Every random cell's per-problem outcome summed, over the matching pass@1 summed: one pair per problem.
        random_over["pooled"] = paired_ratio(list(np.sum(pooled_num, axis=0)), list(np.sum(pooled_den, axis=0)), seed)
        random_over["pooled"]["cells"] = len(pooled_num)
    else:
        random_over["missing"] = "needs the random scorer and bon (for plain sampling's pass@1)"

    job_fractions = [c["orchestration_overhead_fraction"] for c in cells.values() if c["orchestration_overhead_fraction"] is not None]
    search_fractions = [f for c in cells.values() for f in c["search_overhead_fractions"]]
    wall_fractions = [c["job_wall_overhead_fraction"] for c in cells.values() if c["job_wall_overhead_fraction"] is not None]

    def med_max(values):
        return {"median": statistics.median(values), "max": max(values), "count": len(values)} if values else None

    overhead = {
        "definition": "(total - engine - scorer seconds) / total, from each search job's ComputeRecord (total: the "
                      "searches' own time; storing a finished search is outside it)",
        "per_job": med_max(job_fractions), "per_search": med_max(search_fractions),
        "target": "<= 0.10 (issue 25)",
        "job_wall_overhead_fraction": {
            "definition": "(run_job wall seconds - engine - scorer seconds) / wall seconds: storing, journaling, "
                          "grading and job bookkeeping included (the engine was loaded before the first timed job)",
            **(med_max(wall_fractions) or {})},
    }  # fmt: skip
    return {"accuracy_vs_tokens": accuracy, "references": references,
            "guided_over_bon_at_equal_tokens": guided, "random_scorer_over_sampling": random_over,
            "orchestration_overhead_fraction": overhead}  # fmt: skip


# -- main -------------------------------------------------------------------------------------


def machine() -> dict:
    import torch

    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}  # fmt: skip


def code_version() -> dict:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()

    return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}


def pick_problems(store, args, steps) -> tuple[list[int], list[int], list[int]]:
    """(searched test-split ids, PRM train ids, PRM evaluation test-split ids not searched)."""
    from core.synth import generate, write_synth

    need_test, need_train = args.problems + args.prm_eval_problems, args.prm_train_problems
    count = max(16, 2 * (need_test + need_train))
    while True:  # the generator's output for count C is a prefix of its output for any larger C
        drawn = generate(steps, count, args.seed)
        if sum(p.split == "test" for p in drawn) >= need_test and sum(p.split == "train" for p in drawn) >= need_train:
            break
        count *= 2
    write_synth(store, "search-bench", steps, count, args.seed)
    by_split: dict[str, list[int]] = {"train": [], "test": []}
    for problem in store.list_problems(dataset="search-bench"):
        by_split[problem["meta"]["split"]].append(problem["id"])
    test = sorted(by_split["test"])
    return test[: args.problems], sorted(by_split["train"])[:need_train], test[args.problems: need_test]


def steps_breakdown(store, problem_ids: list[int]) -> dict[str, int]:
    """How many of the problems have each number of steps."""
    counts: dict[str, int] = {}
    for problem_id in problem_ids:
        steps = str(store.get_problem(problem_id)["meta"]["steps"])
        counts[steps] = counts.get(steps, 0) + 1
    return dict(sorted(counts.items()))


def main(argv=None) -> int:
    from core.jobs.search import SearchSpec
    from core.store import Store
    from core.synth import parse_steps_range

    args = parse_args(argv)
    strategies = scorer_list(args.strategies)
    scorers = scorer_list(args.scorers)
    budgets = [int(b) for b in args.budgets.split(",") if b.strip()]
    steps = parse_steps_range(args.steps)
    for strategy in strategies:
        if strategy not in STRATEGY_NAMES:
            raise SystemExit(f"unknown strategy {strategy!r}")
    complete, lacks = completeness(args, strategies, scorers, budgets, steps)
    started, load_start = time.perf_counter(), os.getloadavg()
    temporary = None
    if args.db is None:
        temporary = tempfile.TemporaryDirectory()
        args.db = Path(temporary.name) / "search-bench.db"
    store = Store.open(args.db)
    needs_prm = any(s.partition(":")[0] == "prm" for s in scorers)
    if not (needs_prm and args.prm is None):
        args.prm_train_problems = args.prm_eval_problems = 0
    searched, prm_train, prm_eval = pick_problems(store, args, steps)
    engines = EngineCache()
    missing: list[str] = []
    report = {
        "benchmark": "search", "issue": 25, "finished": False, "complete": complete, "lacks_for_full_grid": lacks,
        "engine": f"{args.engine} {args.model} (real language model; device {args.device}; {os.cpu_count()} CPU cores)",
        "problems": {"count": len(searched), "dataset": "search-bench (core.synth)", "split": "test (held out)",
                     "steps": list(steps), "seed": args.seed, "ids": searched,
                     "by_steps": steps_breakdown(store, searched)},
        "grid": {"strategies": strategies, "scorers": scorers, "budgets": budgets, "width": args.width,
                 "params_by_strategy": params_by_strategy(budgets, strategies, args),
                 "search": {k: v for k, v in strategy_config("bon", budgets[0], args).as_manifest().items()
                            if k not in ("strategy", "n", "beam_width", "expansions", "max_resamples", "threshold")}},
        "method": __doc__, "note": args.note, "missing": missing,
        "machine": machine(), "code": code_version(), "load_average_1_5_15_start": load_start,
    }  # fmt: skip

    def write(cells: dict) -> None:
        summary = summarise(cells, strategies, scorers, budgets, args.seed)
        report.update(summary)
        report["cells_done"] = [f"{s}/{sc}/{b}" for (s, sc, b) in cells]
        report["cells"] = {f"{s}/{sc}/{b}": cell for (s, sc, b), cell in cells.items()}
        report["seconds"] = round(time.perf_counter() - started, 1)
        report["load_average_1_5_15_end"] = os.getloadavg()
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")

    scorer_specs = {}
    for scorer in scorers:
        if scorer.partition(":")[0] != "prm":
            scorer_specs[scorer] = scorer
            continue
        folder = Path(args.prm) if args.prm else Path(args.db).parent / "prm-search-bench"
        if args.prm is None:
            try:
                report["prm"] = train_prm_here(store, engines, args, prm_train, prm_eval, folder)
            except Exception as error:  # noqa: BLE001 - the grid runs on without it, and says so
                missing.append(f"prm scorer: training it here failed ({type(error).__name__}: {error})")
                continue
        scorer_specs[scorer] = f"prm:{folder}"
    for scorer in FULL_GRID["scorers"]:
        if scorer not in {s.partition(":")[0] for s in scorers}:
            missing.append(f"scorer {scorer}: not in this run's grid (--scorers)")
    for strategy in FULL_GRID["strategies"]:
        if strategy not in strategies:
            missing.append(f"strategy {strategy}: not in this run's grid (--strategies)")

    engines.get(args.engine, args.model, engine_fields(args)["engine_options"])  # loaded once, before any timed job
    cells: dict = {}
    for budget in budgets:
        for scorer, described in scorer_specs.items():
            for strategy in strategies:
                spec = SearchSpec(policy=args.model, problem_ids=tuple(searched), config=strategy_config(strategy, budget, args),
                                  scorer=described, **engine_fields(args))  # fmt: skip
                job_id, wall = run_spec(store, engines, spec)
                cells[(strategy, scorer, str(budget))] = cell = cell_figures(store, job_id, wall, searched, args.seed)
                print(f"{strategy:>6} {scorer:<10} B={budget:<3} accuracy {cell['accuracy']:.3f} "
                      f"[{cell['low']:.3f}, {cell['high']:.3f}]  policy tokens/problem {cell['policy_tokens']['mean']:.0f}"
                      f"  overhead {cell['orchestration_overhead_fraction'] or 0:.3f}  {wall:.0f} s", flush=True)  # fmt: skip
                write(cells)
    report["finished"] = True
    write(cells)
    engines.drop()
    store.close() if hasattr(store, "close") else None
    if temporary is not None:
        temporary.cleanup()
    print(f"{report['seconds']} s; load average {load_start} -> {report['load_average_1_5_15_end']}; wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
