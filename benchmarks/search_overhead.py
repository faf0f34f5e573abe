"""Search orchestration overhead on a fast engine (issue 25: time outside engine and scorer calls
<= 10% of a search job).

A fast engine is what makes orchestration show: on SmolLM2-135M on the CPU an engine call takes
seconds and the overhead was 0.26% of a job (benchmarks/results/search.json), while on the tiny
random transformer (tests/tiny_model.py: 2 layers, hidden 128; tens of milliseconds a call, as a
GPU engine's calls are) it was a median 14% and max 23%. This runs a handful of search jobs per
strategy (bon, beam, dvts, mcts, reject) x scorer (random, mc:2) on the tiny model, each queued
and run as `stepscope search` runs one (core.jobs.runner: queue, claim, run_job on one loaded
engine), and reports per job, from its ComputeRecord:

- `overhead_fraction`: (total - engine - scorer seconds) / total, the searches' own time (what the
  issue's check reads; the final store of a finished search is outside it);
- `wall_overhead_fraction`: (run_job wall seconds - engine - scorer seconds) / wall, storing,
  journal commits and job bookkeeping included;

with their median and max per cell and over all jobs, the load average before and after each job
(the machine is shared: the figures move with it), and one torch thread (as the tests run the
tiny model). A run starts with a warm-up pass of every cell (seed 99), reported apart (`warmup`):
a process's first searches pay for the engine's first calls and math-verify's first parses.

Run it on the code as it stands (`--label after`) and on an earlier commit from a clean clone
(`--label before`: `git clone -q . /tmp/before && git -C /tmp/before checkout COMMIT`, copy this
file there and run it with that clone first on PYTHONPATH); `--combine A.json B.json` merges two
runs into one file with the before/after comparison (benchmarks/results/search_overhead.json).
Runs can be alternated (before, after, before, ...) and combined per label, so both see the same
load over time.

    python benchmarks/search_overhead.py --label after --out /tmp/after-1.json
    python benchmarks/search_overhead.py --combine /tmp/before-*.json /tmp/after-*.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # tests/tiny_model.py builds the tiny random transformer

RESULTS = Path(__file__).resolve().parent / "results"
STRATEGIES = ("bon", "beam", "dvts", "mcts", "reject")
SCORERS = ("random", "mc:2")
TARGET = 0.10


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--label", default="after", help="what code this run measures (before / after)")
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    parser.add_argument("--scorers", default=",".join(SCORERS))
    parser.add_argument("--repeats", type=int, default=3, help="search jobs per strategy x scorer (seeds 0..R-1)")
    parser.add_argument("--problems", type=int, default=4, help="problems per job (core.synth, 2-4 steps)")
    parser.add_argument("--model", type=Path, default=None, help="a model folder (default: the tiny random transformer)")
    parser.add_argument("--profile", type=int, default=0, help="print the top N functions of a cProfile of the run")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--combine", nargs="+", type=Path, default=None, help="merge run files into --out")
    parser.add_argument("--note", default="", help="what the runs show and do not show, kept in the combined JSON")
    return parser.parse_args(argv)


def search_config(strategy: str, seed: int):
    """Small searches whose engine calls take tens of milliseconds on the tiny model. The random
    model seldom writes a newline: "e" as the delimiter gives it steps of a few tokens."""
    from core.search.config import SearchConfig

    size = {"bon": {"n": 4}, "beam": {"n": 4, "beam_width": 2}, "dvts": {"n": 4, "beam_width": 2},
            "mcts": {"expansions": 6, "beam_width": 2}, "reject": {"n": 2, "max_resamples": 2, "threshold": 0.5}}[strategy]  # fmt: skip
    return SearchConfig(strategy=strategy, max_steps=3, max_step_tokens=6, max_solution_tokens=8, step_delimiter="e",
                        solution_stops=("Question:",), temperature=1.0, seed=seed, **size)  # fmt: skip


def fraction(part: float, whole: float) -> float | None:
    return part / whole if whole else None


def med_max(values: list[float]) -> dict | None:
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"median": statistics.median(values), "max": max(values), "min": min(values), "count": len(values)}


def code_version() -> dict:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()

    return {"root": str(ROOT), "commit": git("rev-parse", "HEAD"),
            "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}  # fmt: skip


def run(args) -> dict:
    import torch

    from core.engines import load_engine
    from core.jobs.runner import EngineCache, claim_job, queue, run_job
    from core.jobs.search import SearchSpec
    from core.store import Store
    from core.synth import write_synth

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    strategies = [s for s in args.strategies.split(",") if s]
    scorers = [s for s in args.scorers.split(",") if s]
    temporary = tempfile.TemporaryDirectory()
    folder = Path(temporary.name)
    if args.model is None:
        from tiny_model import build_tiny_model

        args.model = build_tiny_model(folder / "tiny")
    engine = load_engine("transformers", str(args.model), device="cpu")
    engines = EngineCache(loader=lambda *a, **k: engine)
    store = Store.open(folder / "overhead.db")
    write_synth(store, "overhead", (2, 4), max(16, 4 * args.problems), 0)
    problem_ids = tuple(p["id"] for p in store.list_problems(dataset="overhead"))[: args.problems]

    def one_job(strategy: str, scorer: str, seed: int) -> dict:
        spec = SearchSpec(policy=str(args.model), problem_ids=problem_ids, config=search_config(strategy, seed), scorer=scorer)
        job_id = queue(store, spec)
        job = claim_job(store, job_id, stale_after=0)
        load_before = os.getloadavg()
        started = time.perf_counter()
        status = run_job(store, job, engines)
        wall = time.perf_counter() - started
        if status != "done":
            raise RuntimeError(f"job {job_id} {status}: {store.get_job(job_id)['error']}")
        compute = store.get_job(job_id)["compute"]
        inside = compute["engine_seconds"] + compute["scorer_seconds"]
        searches = [s["compute"] for s in store.job_searches(job_id)]
        return {"strategy": strategy, "scorer": scorer, "seed": seed, "job_id": job_id,
                "total_seconds": compute["total_seconds"], "engine_seconds": compute["engine_seconds"],
                "scorer_seconds": compute["scorer_seconds"], "wall_seconds": wall,
                "engine_calls": compute["engine_calls"], "scorer_calls": compute["scorer_calls"],
                "overhead_fraction": fraction(compute["total_seconds"] - inside, compute["total_seconds"]),
                "wall_overhead_fraction": fraction(wall - inside, wall),
                "engine_seconds_per_call": fraction(compute["engine_seconds"], compute["engine_calls"]),
                "search_overhead_fractions": [fraction(c["total_seconds"] - c["engine_seconds"] - c["scorer_seconds"],
                                                       c["total_seconds"]) for c in searches],
                "load_average_1m_before_after": [load_before[0], os.getloadavg()[0]]}  # fmt: skip

    started, load_start = time.perf_counter(), os.getloadavg()
    # Warm-up: one pass of every cell (seed 99), kept apart. The first calls of a process are slow
    # (the engine's first forward passes; math-verify's parser builds its tables on the first
    # answers of each shape, up to 0.4 s an answer, then milliseconds).
    warmup = [one_job(strategy, scorer, 99) for scorer in scorers for strategy in strategies]
    profiler = None
    if args.profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    jobs = []
    for seed in range(args.repeats):  # repeats outermost: each cell sees the machine's load over the whole run
        for scorer in scorers:
            for strategy in strategies:
                jobs.append(job := one_job(strategy, scorer, seed))
                print(f"{args.label:>6} {strategy:>6} {scorer:<7} seed {seed}: overhead {job['overhead_fraction']:.3f}"
                      f" (wall {job['wall_overhead_fraction']:.3f}), {job['engine_seconds_per_call'] * 1000:.0f} ms"
                      f" per engine call, load {job['load_average_1m_before_after'][0]:.1f}", flush=True)  # fmt: skip
    if profiler is not None:
        import pstats

        profiler.disable()
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(args.profile)
    engine.close()
    store.close()
    temporary.cleanup()
    torch.set_num_threads(threads)
    return {"label": args.label, "code": code_version(), "jobs": jobs, "warmup_jobs": warmup, "strategies": strategies, "scorers": scorers,
            "repeats": args.repeats, "problems_per_job": len(problem_ids),
            "configs": {s: search_config(s, 0).as_manifest() for s in strategies},
            "seconds": round(time.perf_counter() - started, 1), "load_average_1_5_15_start": load_start,
            "load_average_1_5_15_end": os.getloadavg(), "torch_threads": 1,
            "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()}}  # fmt: skip


def summary(jobs: list[dict]) -> dict:
    cells: dict[str, list[dict]] = {}
    for job in jobs:
        cells.setdefault(f"{job['strategy']}/{job['scorer']}", []).append(job)
    return {
        "per_job": med_max([j["overhead_fraction"] for j in jobs]),
        "per_job_wall": med_max([j["wall_overhead_fraction"] for j in jobs]),
        "per_search": med_max([f for j in jobs for f in j["search_overhead_fractions"]]),
        "engine_ms_per_call": med_max([1000 * j["engine_seconds_per_call"] for j in jobs if j["engine_seconds_per_call"]]),
        "load_average_1m": med_max([x for j in jobs for x in j["load_average_1m_before_after"]]),
        "jobs_over_target": sum(j["overhead_fraction"] > TARGET for j in jobs),
        "by_cell": {cell: {"per_job": med_max([j["overhead_fraction"] for j in rows]),
                           "per_job_wall": med_max([j["wall_overhead_fraction"] for j in rows])}
                    for cell, rows in sorted(cells.items())},
    }  # fmt: skip


def combine(paths: list[Path], note: str = "") -> dict:
    runs = [json.loads(path.read_text()) for path in paths]
    by_label: dict[str, list[dict]] = {}
    for entry in runs:
        by_label.setdefault(entry["label"], []).append(entry)
    labels = {}
    for label, entries in by_label.items():
        jobs = [job for entry in entries for job in entry["jobs"]]
        labels[label] = {"code": [e["code"] for e in entries], "runs": len(entries), "jobs": len(jobs),
                         "seconds": [e["seconds"] for e in entries],
                         "load_average_1_5_15": [[e["load_average_1_5_15_start"], e["load_average_1_5_15_end"]] for e in entries],
                         **summary(jobs), "warmup": summary([j for e in entries for j in e["warmup_jobs"]]),
                         "all_jobs": jobs}  # fmt: skip
    first = runs[0]
    out = {"benchmark": "search_overhead", "issue": 25, "target": f"overhead_fraction <= {TARGET} per job",
           "note": note, "method": __doc__, "strategies": first["strategies"], "scorers": first["scorers"],
           "problems_per_job": first["problems_per_job"], "configs": first["configs"], "torch_threads": first["torch_threads"],
           "machine": first["machine"], "runs_in_order": [(e["label"], e["code"]["commit"][:8], e["seconds"]) for e in runs],
           "labels": labels}  # fmt: skip
    if {"before", "after"} <= set(labels):
        before, after = labels["before"], labels["after"]
        out["before_vs_after"] = {
            "per_job_median": [before["per_job"]["median"], after["per_job"]["median"]],
            "per_job_max": [before["per_job"]["max"], after["per_job"]["max"]],
            "per_job_wall_median": [before["per_job_wall"]["median"], after["per_job_wall"]["median"]],
            "per_job_wall_max": [before["per_job_wall"]["max"], after["per_job_wall"]["max"]],
            "jobs_over_target": [before["jobs_over_target"], after["jobs_over_target"]],
            "by_cell_median": {cell: [before["by_cell"][cell]["per_job"]["median"], after["by_cell"].get(cell, {}).get("per_job", {}).get("median")]
                               for cell in before["by_cell"]},
        }  # fmt: skip
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.combine:
        out = combine(args.combine, args.note)
        path = args.out or RESULTS / "search_overhead.json"
    else:
        out = run(args)
        path = args.out or RESULTS / f"search_overhead-{args.label}.json"
        print(json.dumps({"label": args.label, **summary(out["jobs"]), "by_cell": None}, indent=1))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2, default=str) + "\n", encoding="utf-8")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
