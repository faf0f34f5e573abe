"""Monte Carlo estimation benchmarks, through the full job path a user runs.

    .venv/bin/python benchmarks/mcpe_bench.py --engine transformers
    .venv/bin/python benchmarks/mcpe_bench.py --engine vllm
    .venv/bin/python benchmarks/mcpe_bench.py --engine transformers --model qwen2.5-0.5b-random --device cuda  (GPU)

Every job below is queued as an EstimateSpec, claimed and run by `run_job` with its heartbeat,
cancel polling and progress writes, exactly as the app's worker and the CLI run it. The engine
is loaded once beforehand and handed to the job through the engine cache (loading is not part
of a job's work: the app keeps one model loaded across jobs).

1. orchestration_overhead = (job wall time - time inside engine calls) / job wall time, over
   the full job. Target <= 0.05.
   throughput_ratio = job tokens/s over raw batched generation of the same prompts (same batch
   shape, n and sampling), from >= 3 interleaved repeats (raw, job, job, raw, raw, job, ...),
   with the spread of the per-pair ratios.
2. naive_speedup = rollouts per second of the job over a loop that calls the engine once per
   step per sample (what a paper's script often does), at N = 16 over >= 20 trajectories.
   Target >= 10.
3. budget_ratio_searched = rollouts the first-error search spends over fixed N = 16 on the
   trajectories it has to search (see "What the budget figures count" below). The sets: the
   policy's own solutions to 3-6-step synthetic problems and the reference solutions of 4-6-step
   ones (GSM8K-style worked solutions; `--gsm8k FILE` adds
   GSM8K's own). Fixed N gets the same outcome shortcut as the search (a graded final answer
   settles the last step without sampling). Both are replayed over the very rollouts fixed N
   stored, so a disagreement is the strategy's, not sampling noise; budget_agreement_searched (target
   >= 0.95) is reported separately: the search's decision against fixed N's under the same
   definition (the first step after which no step reaches the answer), and, beside it, against
   Math-Shepherd's first step with no success. Target budget_ratio_searched <= 0.3. Beside it, the same replay on a
   simulated policy with a known first error for M = 2..32 steps.
   What the budget figures count: a trajectory whose graded outcome is correct costs the search
   0 rollouts by construction (the outcome settles the last step reachable, and by the search's
   monotonicity every step before it), while fixed N still samples every other step. Averaging
   those in measures the mix, not the search. So the headline `budget_ratio_searched`,
   `budget_agreement_searched` and `budget_mean_steps_searched` count only the trajectories whose
   outcome does not settle the search (graded incorrect, or ungraded): in practice the policy's
   own wrong solutions. The correct-outcome ones (every reference solution, and any correct
   policy solution) are reported apart under `budget_free_by_construction`, and every source
   set (policy, reference, gsm8k) is reported apart in `budget`, with its count of correct
   outcomes. `budget_counts` says the same in the JSON. The simulated sweep is split the same way.

Figures are printed and saved to benchmarks/results/mcpe_<engine>.json (or --out) with the
machine, its load average, model, engine and parameters.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.engines import load_engine  # noqa: E402
from core.formats import import_file  # noqa: E402
from core.jobs.estimate import ROWS_PER_CALL, EstimateSpec, default_sampling, load_tasks  # noqa: E402
from core.jobs.generate import GENERATED_SOURCE, GenerateSpec  # noqa: E402
from core.jobs.runner import EngineCache, claim_job, queue, run_job  # noqa: E402
from core.mcpe import Counts, FirstErrorSearch, first_error, make_strategy  # noqa: E402
from core.policy import load_template  # noqa: E402
from core.store import Store  # noqa: E402
from core.synth import REFERENCE_SOURCE, write_synth  # noqa: E402


def machine() -> dict:
    import torch

    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "load_average_1_5_15": os.getloadavg(),
    }


class TimedEngine:
    """The engine with the time spent inside its calls added up (what the job does not control)."""

    def __init__(self, engine) -> None:
        self.engine, self.seconds, self.calls = engine, 0.0, 0

    def generate(self, prompts, params):
        started = time.perf_counter()
        try:
            return self.engine.generate(prompts, params)
        finally:
            self.seconds += time.perf_counter() - started
            self.calls += 1

    def __getattr__(self, name):
        return getattr(self.engine, name)

    def close(self) -> None:  # the benchmark closes the real engine itself, once
        pass


def run_estimate_job(store, timed: TimedEngine, engine_name: str, label: str, ids, n: int, sampling,
                     rows_per_call: int, strategy: str = "fixed") -> dict:  # fmt: skip
    """Queue, claim and run one estimate job; wall time, engine time, rollouts and tokens."""
    cache = EngineCache(loader=lambda *args, **options: timed)
    engine_before, calls_before = timed.seconds, timed.calls
    started = time.perf_counter()
    job_id = queue(store, EstimateSpec(policy=label, trajectory_ids=tuple(ids), strategy=make_strategy(strategy, n),
                                       sampling=sampling, rows_per_call=rows_per_call, engine=engine_name))  # fmt: skip
    status = run_job(store, claim_job(store, job_id), cache)
    wall = time.perf_counter() - started
    job = store.get_job(job_id)
    if status != "done":
        raise SystemExit(f"job {job_id} {status}: {job['error']}")
    engine_seconds = timed.seconds - engine_before
    return {"wall_seconds": wall, "engine_seconds": engine_seconds, "rollouts": job["done"], "tokens": job["tokens"],
            "engine_calls": timed.calls - calls_before}  # fmt: skip


def spread(values: list[float]) -> dict:
    return {"median": round(statistics.median(values), 4), "min": round(min(values), 4), "max": round(max(values), 4),
            "stdev": round(statistics.stdev(values), 4) if len(values) > 1 else 0.0,
            "values": [round(v, 4) for v in values]}  # fmt: skip


def overhead(store, timed, engine_name, model, ids, n, rows_per_call, sampling, repeats) -> dict:
    """Raw generation and full jobs, interleaved so that drift in the machine's load weighs on both."""
    tasks = load_tasks(store, ids, load_template())
    prompts = [s.prompt for t in tasks for s in t.steps]
    per_call = max(1, rows_per_call // n)

    def raw() -> tuple[int, float]:
        started, tokens = time.perf_counter(), 0
        for call, i in enumerate(range(0, len(prompts), per_call)):
            results = timed.engine.generate(prompts[i : i + per_call], replace(sampling, n=n, seed=sampling.seed + call))
            tokens += sum(s.num_tokens for r in results for s in r)
        return tokens, time.perf_counter() - started

    timed.engine.generate(prompts[:1], replace(sampling, n=1, max_new_tokens=4))  # warm-up
    ratios, overheads, pairs = [], [], []
    for repeat in range(repeats):
        # Each job stores its rollouts under its own label, so it samples afresh.
        job = lambda: run_estimate_job(store, timed, engine_name, f"{model}#overhead-{repeat}", ids, n, sampling, rows_per_call)  # noqa: E731
        if repeat % 2 == 0:
            raw_run, job_run = raw(), job()
        else:
            job_run, raw_run = job(), raw()
        raw_rate = raw_run[0] / raw_run[1]
        job_rate = job_run["tokens"] / job_run["wall_seconds"]
        ratios.append(job_rate / raw_rate)
        overheads.append((job_run["wall_seconds"] - job_run["engine_seconds"]) / job_run["wall_seconds"])
        pairs.append({"raw_tokens": raw_run[0], "raw_seconds": round(raw_run[1], 2), "raw_tokens_per_s": round(raw_rate, 1),
                      "job_tokens": job_run["tokens"], "job_rollouts": job_run["rollouts"],
                      "job_seconds": round(job_run["wall_seconds"], 2), "job_engine_seconds": round(job_run["engine_seconds"], 3),
                      "job_tokens_per_s": round(job_rate, 1)})  # fmt: skip
        print(f"  repeat {repeat}: raw {raw_rate:.1f} tok/s, job {job_rate:.1f} tok/s, overhead {overheads[-1]:.4f}", flush=True)
    return {"prompts": len(prompts), "trajectories": len(ids), "n": n, "rows_per_call": rows_per_call,
            "repeats": repeats, "order": "raw/job alternating first", "pairs": pairs,
            "throughput_ratio": spread(ratios), "orchestration_overhead": spread(overheads)}  # fmt: skip


def naive(store, timed, engine_name, model, ids, n, rows_per_call, sampling) -> dict:
    """One engine call per step per sample, against the full job on the same trajectories."""
    tasks = load_tasks(store, ids, load_template())
    started, tokens, calls = time.perf_counter(), 0, 0
    for task in tasks:
        for step in task.steps:
            for _ in range(n):
                result = timed.engine.generate([step.prompt], replace(sampling, n=1, seed=sampling.seed + calls))
                tokens += result[0][0].num_tokens
                calls += 1
    naive_seconds = time.perf_counter() - started
    job = run_estimate_job(store, timed, engine_name, f"{model}#naive-vs-job", ids, n, sampling, rows_per_call)
    naive_rate, job_rate = calls / naive_seconds, job["rollouts"] / job["wall_seconds"]
    return {
        "trajectories": len(ids), "steps": sum(len(t.steps) for t in tasks), "n": n, "naive_rollouts": calls,
        "naive_tokens": tokens, "naive_seconds": round(naive_seconds, 2), "naive_rollouts_per_s": round(naive_rate, 2),
        "naive_tokens_per_s": round(tokens / naive_seconds, 1), "job_rollouts": job["rollouts"], "job_tokens": job["tokens"],
        "job_seconds": round(job["wall_seconds"], 2), "job_rollouts_per_s": round(job_rate, 2),
        "job_tokens_per_s": round(job["tokens"] / job["wall_seconds"], 1),
        "naive_speedup": round(job_rate / naive_rate, 2),
    }  # fmt: skip


def replay(streams: list[list[bool]], strategy, outcome: bool | None) -> tuple[int, list[Counts]]:
    """Feed a strategy the stored rollouts of each step in the order they were sampled."""
    counts = [Counts() for _ in streams]
    spent = 0
    while True:
        need = strategy.request(counts, outcome)
        need = [min(k, len(stream) - c.n) for k, stream, c in zip(need, streams, counts)]
        if not any(need):
            return spent, counts
        for i, k in enumerate(need):
            taken = streams[i][counts[i].n : counts[i].n + k]
            counts[i] = Counts(counts[i].n + k, counts[i].correct + sum(taken))
            spent += k


def last_reachable_plus_one(counts: list[Counts]) -> int:
    """The first step after which no step reaches the answer (-1: the last one does): the
    first-error decision under the search's own assumption that reachability only goes from
    yes to no, read off all of fixed N's counts."""
    reached = [i for i, c in enumerate(counts) if c.correct > 0]
    last = reached[-1] if reached else -1
    return -1 if last == len(counts) - 1 else last + 1


def fixed_with_shortcut(streams: list[list[bool]], outcome: bool | None) -> tuple[int, int, int]:
    """Fixed N's cost when the graded outcome settles the last step, its first-error decision
    (as the search defines it), and Math-Shepherd's reading (the first step with no success)."""
    counts = [Counts(len(s), sum(s)) for s in streams]
    spent = sum(c.n for c in counts)
    if outcome is not None and counts:
        spent -= counts[-1].n
        counts[-1] = Counts(1, int(outcome))
    return spent, last_reachable_plus_one(counts), first_error(counts)


def settled_by_outcome(outcome: bool | None) -> bool:
    """Whether the graded outcome alone settles the first-error search: a correct outcome makes
    the last step reachable, so (reachability only going from yes to no) every step is, and the
    search stops before sampling anything (core.mcpe.FirstErrorSearch._search). An incorrect or
    ungraded outcome leaves the search work to do."""
    return outcome is True


def split_by_outcome(items: list) -> tuple[list, list]:
    """(searched: the outcome leaves the search work, free: the outcome settles it)."""
    return [i for i in items if not settled_by_outcome(i[1])], [i for i in items if settled_by_outcome(i[1])]


def compare_budgets(groups: dict[str, list[tuple[list[list[bool]], bool | None]]], n: int) -> dict:
    search = FirstErrorSearch(round_size=4, max_per_step=n)
    result = {}
    for name, items in groups.items():
        if not items:
            result[name] = {"trajectories": 0}
            continue
        fixed_spent = search_spent = agree = agree_first_zero = 0
        for streams, outcome in items:
            spent, reference, first_zero = fixed_with_shortcut(streams, outcome)
            used, counts = replay(streams, search, outcome)
            decided = search.decision(counts, outcome)
            fixed_spent += spent
            search_spent += used
            agree += decided == reference
            agree_first_zero += decided == first_zero
        result[name] = {
            "trajectories": len(items), "correct_outcomes": sum(settled_by_outcome(o) for _, o in items),
            "mean_steps": round(statistics.mean(len(s) for s, _ in items), 2),
            "fixed_rollouts": fixed_spent, "search_rollouts": search_spent,
            "budget_ratio": round(search_spent / fixed_spent, 3) if fixed_spent else None,
            "agreement": round(agree / len(items), 3),
            # Against Math-Shepherd's reading, which a step with no success before a later
            # success (reachability not monotone, or a false zero at N) makes differ.
            "agreement_first_zero": round(agree_first_zero / len(items), 3),
        }  # fmt: skip
    return result


def budget_sets(store, timed, engine_name, model, sampling, rows_per_call, args) -> dict:
    """Trajectories of >= 4 steps on average, their rollouts from one fixed-N job per set."""
    write_synth(store, "synth-policy", (3, 6), args.budget_problems, seed=1)
    write_synth(store, "synth-reference", (4, 6), args.budget_references, seed=2)
    problems = [p["id"] for p in store.list_problems(dataset="synth-policy")]
    job_id = queue(store, GenerateSpec(policy=model, problem_ids=tuple(problems), k=2, sampling=replace(sampling, max_new_tokens=160),
                                       engine=engine_name))  # fmt: skip
    run_job(store, claim_job(store, job_id), EngineCache(loader=lambda *a, **o: timed))
    sets = {
        "policy": [r["id"] for r in store.list_trajectories(dataset="synth-policy", source=GENERATED_SOURCE, model=model)
                   if len(store.steps(r["id"])) >= 3],
        "reference": [r["id"] for r in store.list_trajectories(dataset="synth-reference", source=REFERENCE_SOURCE)],
    }  # fmt: skip
    if args.gsm8k:
        import_file(store, Path(args.gsm8k), "gsm8k", dataset="gsm8k-bench")
        sets["gsm8k"] = [r["id"] for r in store.list_trajectories(dataset="gsm8k-bench", limit=args.budget_references)]
    groups = {}
    for name, ids in sets.items():
        ids = ids[: args.budget_trajectories]
        if not ids:
            print(f"  budget set {name}: no trajectories, left out", flush=True)
            continue
        label = f"{model}#budget-{name}"
        run_estimate_job(store, timed, engine_name, label, ids, args.budget_n, sampling, rows_per_call)
        tasks = load_tasks(store, ids, load_template())
        groups[name] = [
            ([[bool(r["correct"]) for r in store.rollouts(s.step_id) if r["model"] == label][: args.budget_n] for s in t.steps],
             t.outcome)
            for t in tasks
        ]  # fmt: skip
        print(f"  budget set {name}: {len(ids)} trajectories", flush=True)
    everything = [item for items in groups.values() for item in items]
    groups["searched"], groups["free_by_construction"] = split_by_outcome(everything)
    groups["all_mixed"] = everything  # both kinds averaged together: not a figure of the search
    return compare_budgets(groups, args.budget_n)


def budget_headline(budget: dict) -> dict:
    """The headline budget keys: the searched subset only, the free-by-construction one apart."""
    searched, free = budget["searched"], budget["free_by_construction"]
    sources = {name: (g["trajectories"], g.get("correct_outcomes", 0)) for name, g in budget.items()
               if name not in ("searched", "free_by_construction", "all_mixed")}  # fmt: skip
    made_of = ", ".join(f"{total - correct} of {name}'s {total}" for name, (total, correct) in sources.items())
    return {
        "budget_ratio_searched": searched.get("budget_ratio"),
        "budget_agreement_searched": searched.get("agreement"),
        "budget_mean_steps_searched": searched.get("mean_steps"),
        "budget_counts": f"the {searched['trajectories']} trajectories whose graded outcome is not correct ({made_of}): "
                         "the first-error search must sample to decide them. Those with a correct outcome cost the "
                         "search 0 rollouts by construction and are under budget_free_by_construction; every source "
                         "set apart under budget.",
        "budget_free_by_construction": {
            **free, "note": "correct graded outcome: the search stops before sampling (0 rollouts by construction); "
                            "fixed N still samples every step but the last. Not a figure of the search's efficiency.",
        },
    }  # fmt: skip


def simulated_budgets(n: int, lengths=(2, 4, 8, 16, 32), trajectories: int = 400, p: float = 0.5, seed: int = 0) -> dict:
    """The same replay on a policy whose per-prefix success probability is known: p before the
    first error (drawn uniformly, or none for a correct solution), 0 after."""
    rng = random.Random(seed)
    result = {}
    for m in lengths:
        items = []
        for _ in range(trajectories):
            error = rng.randrange(m + 1)  # m: no error, a correct solution
            streams = [[rng.random() < p for _ in range(n)] if i < error else [False] * n for i in range(m)]
            items.append((streams, error == m))
        searched, free = split_by_outcome(items)
        # The headline of each M counts the wrong solutions (the search has work to do); the
        # correct ones (1 in M + 1 here) cost it 0 by construction and are reported apart.
        by_subset = compare_budgets({"searched": searched, "free_by_construction": free, "all_mixed": items}, n)
        result[str(m)] = {**by_subset["searched"], "counts": "wrong solutions only (outcome incorrect: the search samples)",
                          "free_by_construction": by_subset["free_by_construction"], "all_mixed": by_subset["all_mixed"]}  # fmt: skip
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engine", default="transformers", choices=["transformers", "vllm"])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--device", default=None, help="transformers engine: cpu, cuda, auto")
    parser.add_argument("--parts", default="overhead,naive,budget,simulated")
    parser.add_argument("--trajectories", type=int, default=24, help="overhead: trajectories per job")
    parser.add_argument("--repeats", type=int, default=3, help="overhead: interleaved raw/job pairs")
    parser.add_argument("--n", type=int, default=8, help="overhead: rollouts per step")
    parser.add_argument("--naive-trajectories", type=int, default=20)
    parser.add_argument("--naive-n", type=int, default=16)
    parser.add_argument("--budget-problems", type=int, default=40, help="synthetic 3-6-step problems for the policy")
    parser.add_argument("--budget-references", type=int, default=30, help="synthetic 4-6-step reference solutions")
    parser.add_argument("--budget-trajectories", type=int, default=40, help="most trajectories per budget set")
    parser.add_argument("--budget-n", type=int, default=16)
    parser.add_argument("--gsm8k", default=None, help="a GSM8K jsonl file: its reference solutions join the budget sets")
    parser.add_argument("--rows-per-call", type=int, default=ROWS_PER_CALL, help="the job default")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    sampling = default_sampling(max_new_tokens=args.max_new_tokens, temperature=0.7, seed=0)
    options = {"device": args.device} if args.device else {}
    started = time.perf_counter()
    engine = load_engine(args.engine, args.model, **options)
    load_seconds = time.perf_counter() - started
    timed = TimedEngine(engine)
    report = {
        "benchmark": "mcpe", "engine": args.engine, "model": args.model, "machine": machine(),
        "engine_info": {k: v for k, v in vars(engine.info).items()}, "load_seconds": round(load_seconds, 1),
        "sampling": sampling.as_manifest(), "parameters": vars(args), "path": "queue -> claim_job -> run_job (full job)",
    }  # fmt: skip
    parts = args.parts.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        store = Store.open(Path(tmp) / "bench.db")
        if "overhead" in parts or "naive" in parts:
            count = max(args.trajectories, args.naive_trajectories)
            job_id = queue(store, GenerateSpec(policy=args.model, problem_ids=tuple(p["id"] for p in store.list_problems(dataset="sample")),
                                               k=2, sampling=sampling, engine=args.engine))  # fmt: skip
            run_job(store, claim_job(store, job_id), EngineCache(loader=lambda *a, **o: timed))
            ids = [r["id"] for r in store.list_trajectories(dataset="sample", source=GENERATED_SOURCE, model=args.model)][:count]
            report["policy_trajectories"] = len(ids)
        if "overhead" in parts:
            print("overhead", flush=True)
            report["overhead"] = overhead(store, timed, args.engine, args.model, ids[: args.trajectories], args.n,
                                          args.rows_per_call, sampling, args.repeats)  # fmt: skip
            report["orchestration_overhead"] = report["overhead"]["orchestration_overhead"]["median"]
            report["throughput_ratio"] = report["overhead"]["throughput_ratio"]["median"]
        if "naive" in parts:
            print("naive", flush=True)
            report["naive"] = naive(store, timed, args.engine, args.model, ids[: args.naive_trajectories], args.naive_n,
                                    args.rows_per_call, sampling)  # fmt: skip
            report["naive_speedup"] = report["naive"]["naive_speedup"]
            print("  ", json.dumps(report["naive"]), flush=True)
        if "budget" in parts:
            print("budget", flush=True)
            report["budget"] = budget_sets(store, timed, args.engine, args.model, sampling, args.rows_per_call, args)
            report.update(budget_headline(report["budget"]))
            print("  ", json.dumps(report["budget"]), flush=True)
    if "simulated" in parts:
        report["budget_simulated"] = simulated_budgets(args.budget_n)
        print("simulated", json.dumps(report["budget_simulated"]), flush=True)
    engine.close()
    report["seconds"] = round(time.perf_counter() - started, 1)
    report["load_average_at_end"] = os.getloadavg()
    out = Path(args.out) if args.out else ROOT / "benchmarks" / "results" / f"mcpe_{args.engine}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    keys = ("orchestration_overhead", "throughput_ratio", "naive_speedup", "budget_ratio_searched", "budget_agreement_searched",
            "budget_mean_steps_searched")  # fmt: skip
    print(json.dumps({k: report.get(k) for k in keys}))
    print(f"saved {out}")


if __name__ == "__main__":
    main()
