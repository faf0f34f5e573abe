"""Monte Carlo estimation benchmarks: orchestration overhead, batching speed-up, rollout budget.

    .venv/bin/python benchmarks/mcpe_bench.py --engine transformers
    .venv/bin/python benchmarks/mcpe_bench.py --engine vllm

1. throughput_ratio: rollout tokens/s of a full estimation job (plan, batched engine calls,
   grading, one SQLite transaction per call) over tokens/s of raw batched generation of the
   same prompts with the same engine, batch shape and sampling parameters. Target >= 0.9.
2. naive_speedup: the job's tokens/s over a naive loop that calls the engine once per step
   per sample (what a paper's script often does), on the same trajectories.
3. budget_ratio: rollouts spent by adaptive and by first-error search over fixed N = 16, on
   at least 50 trajectories the embedded model wrote for the sample set, and how often their
   first-error decision equals fixed N's. The strategies are replayed over the very rollouts
   fixed N stored (in the order they were sampled), so a disagreement is the strategy's, not
   sampling noise between two runs.

Figures are printed and saved to benchmarks/results/mcpe_<engine>.json with the machine,
model, engine and parameters.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.engines import load_engine  # noqa: E402
from core.jobs.estimate import load_tasks, run_estimate  # noqa: E402
from core.jobs.generate import GENERATED_SOURCE, run_generate  # noqa: E402
from core.jobs.estimate import default_sampling  # noqa: E402
from core.mcpe import Adaptive, Counts, FirstErrorSearch, FixedN, first_error  # noqa: E402
from core.policy import load_template  # noqa: E402
from core.store import Store  # noqa: E402


def machine() -> dict:
    import torch

    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        # Other work on the box slows both sides of a ratio, but not always equally: say how busy it was.
        "load_average_1_5_15": os.getloadavg(),
    }


def policy_trajectories(store: Store, engine, policy: str, count: int, sampling) -> list[int]:
    """The policy's own solutions to the sample problems (one each, more if needed)."""
    problems = [p["id"] for p in store.list_problems(dataset="sample")]
    template = load_template()
    samples_each = 1
    while True:
        run_generate(store, engine, problems, samples_each, policy, sampling, template,
                     job_key=f"bench-{samples_each}", problems_per_call=16)  # fmt: skip
        rows = store.list_trajectories(dataset="sample", source=GENERATED_SOURCE, model=policy)
        usable = [r["id"] for r in rows if len(store.steps(r["id"])) >= 1]
        if len(usable) >= count or samples_each >= 4:
            return usable
        samples_each += 1


def throughput(store, engine, policy, ids, n, rows_per_call, sampling) -> dict:
    """Raw batched generation of the job's exact prompts vs the job itself, same batch shapes.

    Run in the order raw, job, job, raw, so that a warm-up or a change in the machine's load
    during the run weighs on both sides alike; each job run stores its rollouts under its own
    key, so the second one samples afresh instead of finding the first one's rollouts.
    """
    tasks = load_tasks(store, ids, load_template())
    prompts = [s.prompt for t in tasks for s in t.steps]
    per_call = max(1, rows_per_call // n)
    engine.generate(prompts[:1], replace(sampling, n=1, max_new_tokens=4))  # warm-up

    def raw() -> tuple[int, float]:
        started, tokens = time.perf_counter(), 0
        for call, i in enumerate(range(0, len(prompts), per_call)):
            results = engine.generate(prompts[i : i + per_call], replace(sampling, n=n, seed=sampling.seed + call))
            tokens += sum(s.num_tokens for r in results for s in r)
        return tokens, time.perf_counter() - started

    def job(run: int) -> tuple[int, float, float, int]:
        started = time.perf_counter()
        progress = run_estimate(store, engine, tasks, FixedN(n), f"{policy}#throughput-{run}", sampling, rows_per_call=rows_per_call)
        return progress.tokens, time.perf_counter() - started, progress.engine_seconds, progress.done

    runs = [raw(), job(1), job(2), raw()]
    raw_tokens, raw_seconds = sum(r[0] for r in runs[::3]), sum(r[1] for r in runs[::3])
    job_tokens, job_seconds = runs[1][0] + runs[2][0], runs[1][1] + runs[2][1]
    raw_rate, job_rate = raw_tokens / raw_seconds, job_tokens / job_seconds
    return {
        "prompts": len(prompts), "n": n, "rows_per_call": rows_per_call, "order": "raw, job, job, raw",
        "raw_tokens": raw_tokens, "raw_seconds": round(raw_seconds, 2), "raw_tokens_per_s": round(raw_rate, 1),
        "job_rollouts": runs[1][3] + runs[2][3], "job_tokens": job_tokens, "job_seconds": round(job_seconds, 2),
        "job_engine_seconds": round(runs[1][2] + runs[2][2], 2), "job_tokens_per_s": round(job_rate, 1),
        "throughput_ratio": round(job_rate / raw_rate, 3),
    }  # fmt: skip


def naive(store, engine, policy, ids, n, rows_per_call, sampling) -> dict:
    """One engine call per step per sample, against the batched job on the same trajectories."""
    tasks = load_tasks(store, ids, load_template())
    started, tokens, calls = time.perf_counter(), 0, 0
    for task in tasks:
        for step in task.steps:
            for sample in range(n):
                result = engine.generate([step.prompt], replace(sampling, n=1, seed=sampling.seed + calls))
                tokens += result[0][0].num_tokens
                calls += 1
    naive_seconds = time.perf_counter() - started
    started = time.perf_counter()
    progress = run_estimate(store, engine, tasks, FixedN(n), f"{policy}#naive-vs-job", sampling, rows_per_call=rows_per_call)
    job_seconds = time.perf_counter() - started
    naive_rate, job_rate = tokens / naive_seconds, progress.tokens / job_seconds
    return {
        "trajectories": len(ids), "rollouts": calls, "naive_tokens": tokens, "naive_seconds": round(naive_seconds, 2),
        "naive_tokens_per_s": round(naive_rate, 1), "job_tokens": progress.tokens,
        "job_seconds": round(job_seconds, 2), "job_tokens_per_s": round(job_rate, 1),
        "naive_speedup": round(job_rate / naive_rate, 2),
        "wall_clock_speedup": round((naive_seconds / calls) / (job_seconds / progress.done), 2),
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


def budget(store, engine, policy, ids, sampling, rows_per_call, n=16) -> dict:
    tasks = load_tasks(store, ids, load_template())
    started = time.perf_counter()
    progress = run_estimate(store, engine, tasks, FixedN(n), policy, sampling, rows_per_call=rows_per_call)
    fixed_seconds = time.perf_counter() - started
    strategies = {
        "adaptive": Adaptive(round_size=4, max_per_step=n, width=0.3, threshold=0.0),
        "first-error": FirstErrorSearch(round_size=4, max_per_step=n),
        "first-error-blind": FirstErrorSearch(round_size=4, max_per_step=n),
    }
    # How the search's cost and its agreement with fixed N trade off as fewer failures are
    # taken to mean "unreachable" (replayed on the same rollouts, so it costs no sampling).
    for cap in (4, 8, 12):
        strategies[f"first-error-max-{cap}"] = FirstErrorSearch(round_size=4, max_per_step=cap)
    spent = {name: 0 for name in strategies}
    agree = {name: 0 for name in strategies}
    fixed_total, decisions = 0, []
    for task in tasks:
        streams = [[bool(r["correct"]) for r in store.rollouts(s.step_id) if r["model"] == policy][:n] for s in task.steps]
        fixed_counts = [Counts(len(s), sum(s)) for s in streams]
        fixed_total += sum(len(s) for s in streams)
        reference = first_error(fixed_counts)
        decisions.append(reference)
        for name, strategy in strategies.items():
            # The search is also run blind to the outcome, to show what the outcome saves.
            outcome = None if name == "first-error-blind" else task.outcome
            used, counts = replay(streams, strategy, outcome)
            decided = strategy.decision(counts, outcome) if name.startswith("first-error") else first_error(counts)
            spent[name] += used
            agree[name] += decided == reference
    result = {
        "trajectories": len(tasks), "steps": sum(len(t.steps) for t in tasks), "fixed_n": n,
        "fixed_rollouts": fixed_total, "fixed_seconds": round(fixed_seconds, 1),
        "fixed_tokens_per_s": round(progress.tokens / fixed_seconds, 1),
        "trajectories_with_an_error": sum(d >= 0 for d in decisions),
        "outcome_correct": sum(bool(t.outcome) for t in tasks),
    }  # fmt: skip
    for name in strategies:
        result[name] = {
            "rollouts": spent[name],
            "budget_ratio": round(spent[name] / fixed_total, 3),
            "agreement": round(agree[name] / len(tasks), 3),
        }
    result["budget_ratio"] = result["first-error"]["budget_ratio"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engine", default="transformers", choices=["transformers", "vllm"])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--parts", default="throughput,naive,budget")
    parser.add_argument("--trajectories", type=int, default=60, help="for the budget benchmark (>= 50)")
    parser.add_argument("--throughput-trajectories", type=int, default=24)
    parser.add_argument("--naive-trajectories", type=int, default=3)
    parser.add_argument("--n", type=int, default=8, help="rollouts per step for throughput and naive")
    parser.add_argument("--rows-per-call", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    sampling = default_sampling(max_new_tokens=args.max_new_tokens, temperature=0.7, seed=0)
    started = time.perf_counter()
    engine = load_engine(args.engine, args.model)
    load_seconds = time.perf_counter() - started
    report = {
        "benchmark": "mcpe", "engine": args.engine, "model": args.model, "machine": machine(),
        "engine_info": {k: v for k, v in vars(engine.info).items()}, "load_seconds": round(load_seconds, 1),
        "sampling": sampling.as_manifest(), "parameters": vars(args),
    }  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        store = Store.open(Path(tmp) / "bench.db")
        parts = args.parts.split(",")
        count = args.trajectories if "budget" in parts else max(args.throughput_trajectories, args.naive_trajectories)
        ids = policy_trajectories(store, engine, args.model, count, sampling)
        report["policy_trajectories"] = len(ids)
        print(f"{len(ids)} policy trajectories", flush=True)
        if "throughput" in parts:
            report["throughput"] = throughput(store, engine, args.model, ids[: args.throughput_trajectories], args.n, args.rows_per_call, sampling)
            report["throughput_ratio"] = report["throughput"]["throughput_ratio"]
            print("throughput", json.dumps(report["throughput"]), flush=True)
        if "naive" in parts:
            report["naive"] = naive(store, engine, args.model, ids[: args.naive_trajectories], args.n, args.rows_per_call, sampling)
            report["naive_speedup"] = report["naive"]["naive_speedup"]
            print("naive", json.dumps(report["naive"]), flush=True)
        if "budget" in parts:
            report["budget"] = budget(store, engine, args.model, ids[: args.trajectories], sampling, args.rows_per_call)
            report["budget_ratio"] = report["budget"]["budget_ratio"]
            print("budget", json.dumps(report["budget"]), flush=True)
    engine.close()
    report["seconds"] = round(time.perf_counter() - started, 1)
    report["load_average_at_end"] = os.getloadavg()
    out = Path(args.out) if args.out else ROOT / "benchmarks" / "results" / f"mcpe_{args.engine}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(json.dumps({k: report.get(k) for k in ("throughput_ratio", "naive_speedup", "budget_ratio")}))
    print(f"saved {out}")


if __name__ == "__main__":
    main()
